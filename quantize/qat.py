"""Quantization-aware fine-tuning: the training losses on the fake-quantized model.

The quantized model (from :func:`baryir.quantize.ptq.quantize_ptq`) trains with the same min-max
game as ``baryir train`` (L1 + the barycenter terms against fresh Kantorovich potentials),
at a low learning rate, plus optional distillation ``distill * L1(restored, teacher)`` from
the FP32 model. With ``learn_from="fp32"`` the L1 term itself compares with the FP32 model's
output instead of the clean photo: the INT8 model learns to reproduce the float model rather than
to be fine-tuned again (docs/quantization.md). NNCF's quantizers pass straight-through gradients
to the weights and learn their scales. Checkpoints: ``model-int8.safetensors`` (see
:mod:`quantize.checkpoint`) and the trainer's resumable state.
"""

from __future__ import annotations

import copy

import torch

from baryir.checkpoints import read_safetensors
from baryir.evaluate import EvalItem
from baryir.model import BaryNet
from baryir.train import Trainer, TrainOptions

from .checkpoint import save_quantized
from .scheme import Int8Scheme

QAT_WEIGHTS = "model-int8.safetensors"
#: what QAT's L1 term compares the quantized model's output with (``baryir quantize --learn-from``)
LEARN_FROM = ("clean", "fp32")


def check_learn_from(learn_from: str, distill: float) -> None:
    """A ``ValueError`` for a ``learn_from`` QAT does not know, or for distillation on top of
    ``learn_from="fp32"`` (the same L1 twice, the teacher run twice a step)."""
    if learn_from not in LEARN_FROM:
        raise ValueError(f"--learn-from must be one of {', '.join(LEARN_FROM)}, not {learn_from!r}")
    if learn_from == "fp32" and distill > 0:
        raise ValueError("--distill adds L1 to the FP32 output, which --learn-from fp32 already is: use one of them")


class QATTrainer(Trainer):
    """:class:`baryir.train.Trainer` over a quantized model, saving quantized checkpoints."""

    def __init__(
        self,
        opts: TrainOptions,
        quantized: BaryNet,
        scheme: Int8Scheme,
        teacher: BaryNet | None = None,
        distill: float = 0.0,
        learn_from: str = "clean",
        provenance: dict | None = None,
        validation: list[EvalItem] | None = None,
    ) -> None:
        if opts.compile:
            raise ValueError("QAT does not support --compile (NNCF's quantizer hooks)")
        check_learn_from(learn_from, distill)
        if learn_from == "fp32" and teacher is None:
            raise ValueError("learn_from='fp32' needs the FP32 model (teacher)")
        self.scheme, self.distill, self.provenance = scheme, distill, provenance or {}
        self.learn_from = learn_from
        super().__init__(opts, validation, model=quantized)
        self.teacher = None
        if teacher is not None and (distill > 0 or learn_from == "fp32"):
            self.teacher = copy.deepcopy(teacher).to(self.device).eval().requires_grad_(False)

    def save_weights(self) -> None:
        meta = {
            "step": self.step,
            "method": "qat",
            "tasks": self.opts.tasks,
            "learn_from": self.learn_from,
            **self.provenance,
        }
        save_quantized(self.model, self.out / QAT_WEIGHTS, self.scheme, meta)

    def load_weights(self) -> None:
        self.model.load_state_dict(read_safetensors(self.out / QAT_WEIGHTS)[0])

    def _teacher_output(self, degraded: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.teacher(degraded, return_latents=False).float()

    def train_step(
        self, degraded: torch.Tensor, target: torch.Tensor, task: torch.Tensor, source: torch.Tensor
    ) -> dict[str, float]:
        if self.learn_from == "fp32":
            target = self._teacher_output(degraded)
        return super().train_step(degraded, target, task, source)

    def extra_loss(self, degraded: torch.Tensor, restored: torch.Tensor, logs: dict[str, float]) -> torch.Tensor | None:
        if self.teacher is None or self.distill == 0:
            return None
        term = (restored - self._teacher_output(degraded)).abs().mean()
        logs["distill"] = term.item()
        return self.distill * self.opts.weights.l1 * term
