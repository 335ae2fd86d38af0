"""The options of ``baryir quantize`` as a dataclass: the one place their defaults live (torch-free)."""

from __future__ import annotations

from dataclasses import dataclass, field

from baryir.data.tasks import THREE_TASK_SAFE

from .scheme import DEFAULT_IGNORED


@dataclass
class QuantizeOptions:
    """Everything ``baryir quantize`` accepts (see ``baryir quantize --help``)."""

    model: str
    data: list[str]
    out: str
    method: str = "qat"
    tasks: list[str] = field(default_factory=lambda: list(THREE_TASK_SAFE))
    ignored: str = DEFAULT_IGNORED
    calib_samples: int = 256
    calib_patch: int = 128
    steps: int = 360
    lr: float = 1e-4
    batch_size: int = 4
    patch_size: int = 128
    content_haze: float = 0.3
    content_variety: float = 0.25
    loss: str = "bary"
    distill: float = 1.0
    device: str = "cpu"
    seed: int = 0
    workers: int = 1
    ckpt_every: int = 50
    val_every: int = 100
    resume: bool = False
    progress: bool = True
