"""Physics and determinism of the synthetic degradations."""

from __future__ import annotations

import math

import pytest
import torch

from baryir.data.degradations import (
    TASKS,
    RainSettings,
    add_gaussian_noise,
    add_haze,
    add_low_light,
    degrade,
    depth_proxy,
    gaussian_kernel,
    line_kernel,
    motion_kernel,
    rain_layer,
    transmission,
)


@pytest.fixture()
def image():
    g = torch.Generator().manual_seed(0)
    base = torch.rand(3, 1, 1, generator=g) * 0.4 + 0.3
    ramp = torch.linspace(0, 0.2, 96)[None, None, :]
    return (base + ramp).expand(3, 80, 96).contiguous()


@pytest.mark.parametrize("task", sorted(TASKS))
def test_every_task_is_deterministic_in_range_and_changes_the_image(task, image):
    a, b, c = degrade(image, task, 7), degrade(image, task, 7), degrade(image, task, 8)
    assert torch.equal(a, b)
    assert a.shape == image.shape and a.min() >= 0 and a.max() <= 1
    assert not torch.equal(a, image)
    assert not torch.equal(a, c)


@pytest.mark.parametrize("sigma", [15, 25, 50])
def test_gaussian_noise_has_the_requested_std(sigma):
    mid = torch.full((3, 256, 256), 0.5)  # far from the clip limits
    noisy = add_gaussian_noise(mid, sigma, torch.Generator().manual_seed(sigma))
    assert (noisy - mid).std().item() * 255 == pytest.approx(sigma, rel=0.03)


def test_blur_and_rain_kernels_sum_to_one():
    for seed in range(5):
        k = motion_kernel(torch.Generator().manual_seed(seed))
        assert k.sum().item() == pytest.approx(1.0, abs=1e-5) and (k >= 0).all()
        assert (k > 0).sum() > 3  # a trajectory, not a single tap
    line = line_kernel(30, 10, 1.5)
    assert line.sum().item() == pytest.approx(1.0, abs=1e-5)
    assert line.shape[0] % 2 == 1


def test_rain_is_sparse_streaks():
    layer = rain_layer(128, 128, torch.Generator().manual_seed(0))
    covered = (layer > 0.05).float().mean().item()
    assert 0.01 < covered < 0.6
    assert layer.max() <= 1 and layer.min() >= 0


def test_soft_rain_spreads_the_same_streaks():
    assert gaussian_kernel(1.0).sum().item() == pytest.approx(1.0, abs=1e-6)
    assert gaussian_kernel(0.0).shape == (1, 1)
    crisp = rain_layer(128, 128, torch.Generator().manual_seed(4), RainSettings(softness=(0.0, 0.0)))
    soft = rain_layer(128, 128, torch.Generator().manual_seed(4), RainSettings(softness=(1.2, 1.2)))
    # blur spreads each streak: more pixels touched, less high-frequency energy
    assert (soft > 0.02).sum() > (crisp > 0.02).sum()
    assert soft.diff(dim=-1).abs().mean() < crisp.diff(dim=-1).abs().mean()


def test_haze_follows_the_scattering_model(image):
    gen = torch.Generator().manual_seed(3)
    d = depth_proxy(image, gen)
    assert d.min() == 0 and d.max() == pytest.approx(1.0)
    t = transmission(d, 1.2)
    assert t.max() <= 1 and t.min() >= math.exp(-1.2) - 1e-6
    hazy = add_haze(image, torch.Generator().manual_seed(3))
    # haze lowers contrast: pixels move toward the (bright) airlight
    assert hazy.std() < image.std() and hazy.mean() > image.mean()


def test_low_light_darkens_and_adds_noise(image):
    dark = add_low_light(image, torch.Generator().manual_seed(1))
    assert dark.mean() < 0.5 * image.mean()
    assert dark.std() > 0


def test_the_torch_free_task_names_are_the_degradations():
    from baryir.data.degradations import TASKS
    from baryir.data.tasks import FIVE_TASK, TASK_NAMES, THREE_TASK

    assert tuple(TASKS) == TASK_NAMES and set(THREE_TASK) | set(FIVE_TASK) <= set(TASKS)
