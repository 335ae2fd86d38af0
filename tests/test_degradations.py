"""Physics and determinism of the synthetic degradations."""

from __future__ import annotations

import math

import pytest
import torch

from baryir.data.degradations import (
    STREAKS_LIGHT,
    TASKS,
    RainSettings,
    add_content_condition,
    add_gaussian_noise,
    add_haze,
    add_haze_varied,
    add_low_light,
    add_rain_photoshop,
    add_rain_varied,
    degrade,
    depth_proxy,
    gaussian_kernel,
    line_kernel,
    motion_kernel,
    photoshop_rain_layer,
    rain_layer,
    transmission,
)


@pytest.fixture()
def image():
    g = torch.Generator().manual_seed(0)
    base = torch.rand(3, 1, 1, generator=g) * 0.4 + 0.3
    ramp = torch.linspace(0, 0.2, 96)[None, None, :]
    return (base + ramp).expand(3, 80, 96).contiguous()


@pytest.mark.parametrize("task", sorted(set(TASKS) - {"identity"}))
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


def _photo() -> torch.Tensor:
    """A textured 96x128 picture: smooth colour gradients plus a bright sky band."""
    ys, xs = torch.meshgrid(torch.linspace(0, 1, 96), torch.linspace(0, 1, 128), indexing="ij")
    img = torch.stack([0.3 + 0.4 * xs, 0.2 + 0.5 * ys, 0.5 + 0.2 * torch.sin(8 * xs)])
    img[:, :20] = 0.9
    return img


def test_varied_rain_spans_light_to_heavy_generators():
    img = _photo()
    change = torch.tensor(
        [(add_rain_varied(img, torch.Generator().manual_seed(s)) - img).abs().mean() for s in range(24)]
    )
    assert change.min() > 0
    assert change.max() / change.min() > 3  # sparse single layers and dense multi-layer rain both occur


def test_varied_haze_uses_different_depth_proxies_and_scatters_towards_airlight():
    img = _photo()
    deltas = []
    for s in range(12):
        out = add_haze_varied(img, torch.Generator().manual_seed(s))
        # I = J t + A (1 - t) with airlight A >= 0.6 * 0.92: between J and A, dark parts brighter
        assert (out >= torch.minimum(img, torch.tensor(0.6 * 0.92)) - 1e-5).all()
        dark = img < 0.5
        assert out[dark].mean() > img[dark].mean()
        deltas.append((out - img).mean(0).flatten())
    corr = torch.corrcoef(torch.stack(deltas))
    assert corr.min() < 0.5  # not one depth map with different strengths


def test_identity_is_the_clean_photo_in_its_own_source(image):
    assert torch.equal(degrade(image, "identity", 3), image)
    assert TASKS["identity"].source == "clean"


@pytest.mark.parametrize("seed", range(12))
def test_content_conditions_stay_in_range_and_change_the_photo(seed, image):
    photo = (image + 0.2 * torch.rand(image.shape, generator=torch.Generator().manual_seed(99))).clamp(0, 1)
    out = add_content_condition(photo, torch.Generator().manual_seed(seed))
    assert out.shape == photo.shape and out.min() >= 0 and out.max() <= 1
    assert (out - photo).abs().mean() > 1e-3  # a condition, not the photo as it was (textured: blur shows)
    assert torch.equal(out, add_content_condition(photo, torch.Generator().manual_seed(seed)))


def test_photoshop_rain_is_sparse_bright_streaks_at_one_angle():
    layer = photoshop_rain_layer(256, 256, torch.Generator().manual_seed(1), angle=0.0)
    covered = (layer > 0.05).float().mean().item()
    assert 0.005 < covered < 0.4
    # vertical streaks: the layer changes far more across columns than along them
    assert layer.diff(dim=-1).abs().mean() > 2 * layer.diff(dim=-2).abs().mean()
    brightest = layer.flatten().kthvalue(int(0.999 * layer.numel())).values
    assert STREAKS_LIGHT.peak[0] - 0.05 <= brightest <= 1


def test_photoshop_rain_only_brightens(image):
    rainy = add_rain_photoshop(image, torch.Generator().manual_seed(2))
    assert (rainy >= image - 1e-6).all() and (rainy > image + 0.05).any()
