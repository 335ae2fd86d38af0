"""The options of ``baryir quantize`` as a dataclass: the one place their defaults live (torch-free)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from baryir.data.tasks import THREE_TASK_SAFE
from baryir.options import TrainOptions

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
    model_type: str = "default"
    target_device: str = "any"
    calib_samples: int = 256
    calib_patch: int = 128
    steps: int = 360
    lr: float = 1e-4
    batch_size: int = 4
    patch_size: int = 128
    content_haze: float = 0.3
    content_variety: float = 0.25
    content_sky: float = 0.0
    loss: str = "bary"
    distill: float = 0.0
    learn_from: str = "fp32"
    device: str = "cpu"
    seed: int = 0
    workers: int = 1
    ckpt_every: int = 50
    val_every: int = 100
    resume: bool = False
    progress: bool = True

    def train_options(self) -> TrainOptions:
        """The QAT fine-tune's options: every field both dataclasses name is taken from here; QAT
        itself fixes a cosine schedule with a short warm-up, the paper's loss weights (the
        default) and FP32 (fake quantization is not autocast-safe)."""
        shared = {f.name for f in fields(TrainOptions)} & {f.name for f in fields(self)}
        return TrainOptions(
            **{name: getattr(self, name) for name in shared},
            schedule="cosine",
            warmup=min(20, self.steps // 10),
            precision="fp32",
        )
