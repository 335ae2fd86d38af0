"""The options of training (``baryir train``) as dataclasses: the one place their defaults live.

Torch-free, so that the CLI's parser reads these defaults where PyTorch is not installed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .data.tasks import THREE_TASK


@dataclass(frozen=True)
class BaryLossWeights:
    """Weights of the model step; defaults are the published ones."""

    l1: float = 10000.0  # ``Sigma`` in the published commands
    structure: float = 0.05  # on orthogonality + contrastive
    congruence: float = 10.0  # potentials' congruence penalty


@dataclass
class TrainOptions:
    """Everything ``baryir train`` accepts (see ``baryir train --help``)."""

    data: list[str]
    out: str
    tasks: list[str] = field(default_factory=lambda: list(THREE_TASK))
    config: str = "mobile"
    init: str | None = None
    loss: str = "bary"
    steps: int = 10000
    batch_size: int = 8
    patch_size: int = 128
    content_haze: float = 0.0
    content_variety: float = 0.0
    content_sky: float = 0.0
    lr: float = 2e-4
    pots_lr: float | None = None
    optimizer: str = "adamw"
    schedule: str = "cosine"
    warmup: int = 200
    weights: BaryLossWeights = field(default_factory=BaryLossWeights)
    precision: str = "auto"
    device: str = "auto"
    seed: int = 0
    ema: float = 0.0
    workers: int = 2
    val_every: int = 500
    ckpt_every: int = 500
    keep_every: int = 0
    resume: bool = False
    compile: bool = False
    progress: bool = True
