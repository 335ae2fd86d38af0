"""Fitting the degradation readout (:mod:`baryir.model.readout`) on a trained, frozen model.

Crops of clean photos are degraded by the fitting generators of each class, the encoder's
latent is pooled into features, and a multinomial logistic regression (L2, full batch, L-BFGS)
is fitted on them; the feature standardisation is folded into the head. Rain and haze from
the other generators are left out of fitting so that they can measure generalisation.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from .data.degradations import add_content_condition, get_task
from .data.photos import list_images, read_images
from .model import DEGRADATION_CLASSES, BaryNet, DegradationReadout
from .model.readout import DEFAULT_LATENTS, DEFAULT_STATISTICS, LATENTS, pooled_statistics, weights_digest

log = logging.getLogger("baryir")

#: The degradations each class is fitted on. ``derain_mix``, ``dehaze_mix`` (and real sets such as
#: Rain100L) are held out; ``clean+`` is a clean photo with one photographic condition (soft
#: focus, shake, JPEG, exposure, downscale, colour cast), which the model keeps as content.
FIT_TASKS: dict[str, tuple[str, ...]] = {
    "clean": ("identity", "clean+"),
    "noise": ("denoise",),
    "rain": ("derain", "derain_ps"),
    "haze": ("dehaze",),
}


def degrade_for_fit(img: torch.Tensor, task: str, gen: torch.Generator) -> torch.Tensor:
    """``img`` degraded by a fitting task (a task name or ``clean+``)."""
    if task == "clean+":
        return add_content_condition(img, gen)
    return get_task(task).degrade(img, gen)


@dataclass(frozen=True)
class Sample:
    """A labelled image for fitting or testing."""

    image: torch.Tensor  # (3, H, W) in [0, 1]
    label: str
    task: str


def fitting_samples(folders: list[str | Path], per_task: int, size: int = 320, seed: int = 0) -> Iterator[Sample]:
    """``per_task`` random square crops (sides from 128 px to ``size``, multiples of 8) of the
    photos in ``folders`` for every fitting task of every class, each degraded with its own
    seeded generator (reproducible): photos come in every size, so the crops do too."""
    paths = [p for folder in folders for p in list_images(folder)]
    photos, _ = read_images(paths, min_size=size)
    if not photos:
        raise ValueError(f"no photo of at least {size} px in {', '.join(map(str, folders))}")
    gen = torch.Generator().manual_seed(seed)
    sides = list(range(min(128, size), size + 1, 8))
    for label, tasks in FIT_TASKS.items():
        for task in tasks:
            for _ in range(per_task):
                photo = photos[int(torch.randint(len(photos), (1,), generator=gen))]
                side = sides[int(torch.randint(len(sides), (1,), generator=gen))]
                y = int(torch.randint(photo.shape[1] - side + 1, (1,), generator=gen))
                x = int(torch.randint(photo.shape[2] - side + 1, (1,), generator=gen))
                crop = photo[:, y : y + side, x : x + side].contiguous()
                yield Sample(degrade_for_fit(crop, task, gen).clamp(0, 1), label, task)


Featurize = Callable[[torch.Tensor], dict[str, torch.Tensor]]


def latent_features(model: BaryNet, statistics: tuple[str, ...] = DEFAULT_STATISTICS) -> Featurize:
    """Pooled ``statistics`` of every latent of the frozen encoder (:data:`LATENTS`), per image."""

    @torch.inference_mode()
    def featurize(image: torch.Tensor) -> dict[str, torch.Tensor]:
        latents = model(image[None], degradation="latents")  # through forward: a quantized model's quantizers run
        return {name: pooled_statistics(latents[name], statistics)[0] for name in LATENTS}

    return featurize


def collect(samples: list[Sample], featurize: Featurize, progress: bool = True) -> dict[str, torch.Tensor]:
    """(N, F) features per representation for ``samples`` (images padded to a multiple of 8)."""
    rows: dict[str, list[torch.Tensor]] = {}
    for s in tqdm(samples, desc="features", unit="img", disable=not progress):
        x = s.image
        ph, pw = -x.shape[1] % 8, -x.shape[2] % 8
        if ph or pw:
            x = torch.nn.functional.pad(x[None], (0, pw, 0, ph), mode="reflect")[0]
        for name, f in featurize(x).items():
            rows.setdefault(name, []).append(f)
    return {name: torch.stack(fs) for name, fs in rows.items()}


def fit_linear(
    features: torch.Tensor, labels: torch.Tensor, classes: int, l2: float = 1e-2, steps: int = 200
) -> tuple[torch.Tensor, torch.Tensor]:
    """Multinomial logistic regression on standardised features, classes weighted equally;
    returns (weight, bias) acting on the raw features (standardisation folded in)."""
    x = features.double()
    mean, std = x.mean(0), x.std(0).clamp_min(1e-6)
    z = (x - mean) / std
    counts = torch.bincount(labels, minlength=classes).clamp_min(1).double()
    sample_weight = (1.0 / counts)[labels]
    sample_weight = sample_weight / sample_weight.sum()
    w = torch.zeros(classes, x.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=steps, line_search_fn="strong_wolfe")

    def loss_fn() -> torch.Tensor:
        opt.zero_grad()
        nll = torch.nn.functional.cross_entropy(z @ w.T + b, labels, reduction="none")
        loss = (nll * sample_weight).sum() + l2 * w.pow(2).sum()
        loss.backward()
        return loss

    opt.step(loss_fn)
    weight = (w / std).detach()
    bias = (b - (w * (mean / std)).sum(1)).detach()
    return weight.float(), bias.float()


def label_ids(samples: list[Sample], classes: tuple[str, ...] = DEGRADATION_CLASSES) -> torch.Tensor:
    return torch.tensor([classes.index(s.label) for s in samples])


def fit_readout(
    model: BaryNet,
    folders: list[str | Path],
    per_task: int = 200,
    size: int = 320,
    seed: int = 0,
    latents: tuple[str, ...] = DEFAULT_LATENTS,
    statistics: tuple[str, ...] = DEFAULT_STATISTICS,
    progress: bool = True,
) -> DegradationReadout:
    """A readout for ``model`` (frozen) pooling ``statistics`` of ``latents``, fitted on crops of
    the photos in ``folders``."""
    samples = list(fitting_samples(folders, per_task, size, seed))
    by_latent = collect(samples, latent_features(model.eval(), statistics), progress)
    feats = torch.cat([by_latent[name] for name in latents], dim=1)
    labels = label_ids(samples)
    weight, bias = fit_linear(feats, labels, len(DEGRADATION_CLASSES))
    predicted = (feats @ weight.T + bias).argmax(1)
    summary = {
        "samples": len(samples),
        "crop": size,
        "seed": seed,
        "tasks": {k: list(v) for k, v in FIT_TASKS.items()},
        "fit_accuracy": round(float((predicted == labels).double().mean()), 4),
        "photos": [str(Path(f).name) for f in folders],
    }
    return DegradationReadout(
        weight,
        bias,
        weights_digest(model.state_dict()),
        latents=tuple(latents),
        statistics=tuple(statistics),
        fit=summary,
    )
