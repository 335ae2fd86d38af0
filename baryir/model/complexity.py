"""Parameter count, multiply-accumulates and CPU latency of a BaryNet."""

from __future__ import annotations

import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from .barynet import BaryNet


def count_parameters(model: torch.nn.Module) -> int:
    """Number of parameters."""
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def count_gmacs(model: BaryNet, height: int, width: int) -> float:
    """GMACs of one deployment forward pass at height x width (convolutions and matmuls,
    counted by ``torch.utils.flop_counter``; MACs = FLOPs / 2)."""
    x = torch.zeros(1, model.config.inp_channels, height, width)
    with FlopCounterMode(display=False) as counter:
        model(x, return_latents=False)
    return counter.get_total_flops() / 2e9


@torch.no_grad()
def cpu_latency_ms(model: BaryNet, height: int, width: int, repeats: int = 5, warmup: int = 1) -> float:
    """Median eager FP32 latency in milliseconds on the CPU at height x width."""
    x = torch.rand(1, model.config.inp_channels, height, width)
    model = model.eval()
    for _ in range(warmup):
        model(x)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model(x)
        times.append((time.perf_counter() - start) * 1e3)
    return sorted(times)[len(times) // 2]
