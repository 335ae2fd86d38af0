"""Quantization-aware fine-tuning: the training losses on the fake-quantized model.

The quantized model (from :func:`baryir.quantize.ptq.quantize_ptq`) trains with the same min-max
game as ``baryir train`` (L1 + the barycenter terms against fresh Kantorovich potentials),
at a low learning rate, plus optional distillation ``distill * L1(restored, teacher)`` from
the FP32 model. NNCF's quantizers pass straight-through gradients to the weights and learn
their scales. Checkpoints: ``model-int8.safetensors`` (see :mod:`quantize.checkpoint`) and
the trainer's resumable state.
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


class QATTrainer(Trainer):
    """:class:`baryir.train.Trainer` over a quantized model, saving quantized checkpoints."""

    def __init__(
        self,
        opts: TrainOptions,
        quantized: BaryNet,
        scheme: Int8Scheme,
        teacher: BaryNet | None = None,
        distill: float = 0.0,
        provenance: dict | None = None,
        validation: list[EvalItem] | None = None,
    ) -> None:
        if opts.compile:
            raise ValueError("QAT does not support --compile (NNCF's quantizer hooks)")
        self.scheme, self.distill, self.provenance = scheme, distill, provenance or {}
        super().__init__(opts, validation, model=quantized)
        self.teacher = None
        if teacher is not None and distill > 0:
            self.teacher = copy.deepcopy(teacher).to(self.device).eval().requires_grad_(False)

    def save_weights(self) -> None:
        meta = {"step": self.step, "method": "qat", "tasks": self.opts.tasks, **self.provenance}
        save_quantized(self.model, self.out / QAT_WEIGHTS, self.scheme, meta)

    def load_weights(self) -> None:
        self.model.load_state_dict(read_safetensors(self.out / QAT_WEIGHTS)[0])

    def extra_loss(self, degraded: torch.Tensor, restored: torch.Tensor, logs: dict[str, float]) -> torch.Tensor | None:
        if self.teacher is None:
            return None
        with torch.no_grad():
            target = self.teacher(degraded, return_latents=False)
        term = (restored - target).abs().mean()
        logs["distill"] = term.item()
        return self.distill * self.opts.weights.l1 * term
