"""PyTorch eager runner: CPU or CUDA, fp32 / fp16 / bf16."""

from __future__ import annotations

import numpy as np
import torch

from baryir.checkpoints import load_model
from baryir.inference import torch_device

from ..base import OpTime, Runner, RunnerInfo

_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


class TorchRunner(Runner):
    """BaryNet in eager PyTorch. Half precision keeps the model's float32 islands (LayerNorm
    statistics, MDTA's L2 norm); fp16 on the CPU is supported but slow."""

    def __init__(self, model: str, device: str | None = None, precision: str | None = None) -> None:
        precision = precision or "fp32"
        if precision not in _DTYPES:
            raise ValueError(f"torch runner precision must be one of {sorted(_DTYPES)}, not {precision!r}")
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.dtype = _DTYPES[precision]
        self.device = torch_device(device)
        self.model = load_model(model, self.device).to(self.dtype)
        label = f"cuda ({torch.cuda.get_device_name(self.device)})" if self.device.type == "cuda" else "cpu"
        runs_at = precision
        if self.device.type == "cuda" and precision == "fp32" and torch.backends.cudnn.allow_tf32:
            runs_at = "tf32"  # PyTorch's default: cuDNN convolutions in TF32 on Ampere and newer GPUs
        self.info = RunnerInfo("torch", label, runs_at, str(model))
        if self.model.readout is not None:
            self.degradation_classes = self.model.readout.classes
        self.degradation_note = self.model.readout_refused

    @torch.inference_mode()
    def run(self, batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(batch).to(self.device, self.dtype)
        return self.model(x, return_latents=False).clamp(0, 1).float().cpu().numpy()

    @torch.inference_mode()
    def run_degradation(self, batch: np.ndarray) -> np.ndarray:
        """The readout on the encoder alone (no decoder runs)."""
        x = torch.from_numpy(batch).to(self.device, self.dtype)
        return self.model(x, degradation="only").float().cpu().numpy()

    def profile(self, batch: np.ndarray, runs: int) -> list[OpTime]:
        """The PyTorch profiler: each ATen operator's self time (device time on CUDA), summed
        over ``runs``; operators are aggregated by name (eager PyTorch has no graph nodes)."""
        from torch.profiler import ProfilerActivity
        from torch.profiler import profile as torch_profile

        self.run(batch)
        cuda = self.device.type == "cuda"
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
        with torch_profile(activities=activities) as prof:
            for _ in range(runs):
                self.run(batch)
        ops = []
        for event in prof.key_averages():
            us = event.self_device_time_total if cuda else event.self_cpu_time_total
            if event.key.startswith("aten::") and us > 0:
                ops.append(OpTime(event.key, event.key.removeprefix("aten::"), self.device.type, us / 1e3 / runs))
        return ops
