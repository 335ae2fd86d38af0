"""The degradation readout: what BaryIR's encoder says about a photo.

The readout pools named encoder latents into per-channel statistics over H x W (mean, standard
deviation and the mean absolute difference between horizontal and between vertical neighbours,
always in FP32) and maps them with one linear layer to class probabilities. It runs on the encoder
only: no decoder, no restoration. Which latents it reads is part of the readout: the degradation-
specific ``residual`` (source latent minus its barycenter image) the model is trained to separate
degradations with, the ``source`` latent without the decomposition, the ``bary`` latent, or the
encoder's skips ``enc1``-``enc3`` (docs/model.md compares them; the shipped readout reads the one
that tells them apart best).

The readout is fitted after training with the encoder frozen (:mod:`baryir.analysis`) and is
only valid for the weights it was fitted on: it records their digest (:func:`weights_digest`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

#: Bumped whenever the features or the head change meaning; versions this baryir cannot read
#: are refused. Version 1 stored no ``statistics`` and read the mean and standard deviation.
READOUT_VERSION = 2
READABLE_VERSIONS = (1, 2)
#: What the readout names, in the order of its outputs.
DEGRADATION_CLASSES = ("clean", "noise", "rain", "haze")
#: Latents of the encoder a readout can read (``residual`` is source - bary), from the finest.
LATENTS = ("enc1", "enc2", "enc3", "source", "bary", "residual")
#: What the shipped readout reads: the skips at 1/2 and 1/4 resolution (docs/model.md).
DEFAULT_LATENTS = ("enc2", "enc3")
#: Per-channel statistics a readout can pool, in the order they are concatenated: ``dx`` / ``dy``
#: are the mean absolute difference between horizontal / vertical neighbours (oriented fine
#: structure: rain streaks, which mean and deviation average away; docs/model.md).
STATISTICS = ("mean", "std", "dx", "dy")
#: What the shipped readout pools; readouts of version 1 pooled ("mean", "std").
DEFAULT_STATISTICS = STATISTICS
VERSION1_STATISTICS = ("mean", "std")


def pooled_statistics(z: torch.Tensor, statistics: tuple[str, ...] = DEFAULT_STATISTICS) -> torch.Tensor:
    """Per-channel ``statistics`` (names from :data:`STATISTICS`, in that order) over H x W of
    (B, C, H, W), in FP32: (B, len(statistics) * C).

    One graph for every height and width: reductions only, no shape read into Python (the
    neighbour differences get a zero for the last column / row, so they are means over H x W
    like the others and exist at any size; slices, concatenation and means run on every backend)."""
    z = z.float()
    pooled: dict[str, torch.Tensor] = {}
    mean = z.mean(dim=(2, 3), keepdim=True)
    pooled["mean"] = mean.flatten(1)
    if "std" in statistics:
        centred = z - mean
        # centred * centred, not a power: CoreML's fp16 pass keeps it fp32
        pooled["std"] = (centred * centred).mean(dim=(2, 3)).add(1e-12).sqrt()
    if "dx" in statistics:
        dx = torch.cat([z[..., :, 1:] - z[..., :, :-1], torch.zeros_like(z[..., :, :1])], dim=3)
        pooled["dx"] = dx.abs().mean(dim=(2, 3))
    if "dy" in statistics:
        dy = torch.cat([z[..., 1:, :] - z[..., :-1, :], torch.zeros_like(z[..., :1, :])], dim=2)
        pooled["dy"] = dy.abs().mean(dim=(2, 3))
    return torch.cat([pooled[name] for name in statistics], dim=1)


def check_statistics(statistics: tuple[str, ...]) -> None:
    """ValueError unless ``statistics`` are distinct names from :data:`STATISTICS`, in its order."""
    if not statistics or tuple(n for n in STATISTICS if n in statistics) != tuple(statistics):
        raise ValueError(
            f"readout statistics {list(statistics)} are not distinct names from {STATISTICS}, in that order"
        )


def weights_digest(state: dict[str, torch.Tensor]) -> str:
    """SHA-256 over a state dict's names, dtypes, shapes and values (order-independent): the
    identity of the weights a readout was fitted on, whatever file holds them."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


@dataclass(frozen=True)
class DegradationReadout:
    """A linear head on the :func:`pooled_statistics` of named latents, concatenated in order
    (per latent, the ``statistics`` in their order).

    ``weight`` is (classes, features) and ``bias`` (classes,), with the feature standardisation
    of the fit folded in. ``fitted_on`` is the :func:`weights_digest` of the model's weights;
    ``fit`` holds what the fit measured (JSON-able)."""

    weight: torch.Tensor
    bias: torch.Tensor
    fitted_on: str
    classes: tuple[str, ...] = DEGRADATION_CLASSES
    latents: tuple[str, ...] = DEFAULT_LATENTS
    statistics: tuple[str, ...] = DEFAULT_STATISTICS
    version: int = READOUT_VERSION
    fit: dict = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        k = len(self.classes)
        if self.weight.dim() != 2 or self.weight.shape[0] != k or tuple(self.bias.shape) != (k,):
            raise ValueError(
                f"readout weight {list(self.weight.shape)} and bias {list(self.bias.shape)} do not fit {k} classes"
            )
        if not self.latents or not set(self.latents) <= set(LATENTS) or len(set(self.latents)) != len(self.latents):
            raise ValueError(f"readout latents {list(self.latents)} are not distinct names from {LATENTS}")
        check_statistics(self.statistics)

    def features(self, latents: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, features): the pooled statistics of the latents it reads, in FP32."""
        return torch.cat([pooled_statistics(latents[name], self.statistics) for name in self.latents], dim=1)

    def __call__(self, latents: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, classes) probabilities from the encoder's named latents."""
        f = self.features(latents)
        return F.linear(f, self.weight.to(f.device, torch.float32), self.bias.to(f.device, torch.float32)).softmax(1)


def feature_count(
    latents: tuple[str, ...], level_widths: tuple[int, int, int, int], statistics: tuple[str, ...] = DEFAULT_STATISTICS
) -> int:
    """How many features a readout of ``statistics`` on ``latents`` takes for a model with these level widths."""
    width = dict(zip(LATENTS, (*level_widths[:3], level_widths[3], level_widths[3], level_widths[3])))
    return sum(len(statistics) * width[name] for name in latents)
