"""Calibration data: degraded patches of the task mix, drawn like the training samples."""

from __future__ import annotations

from pathlib import Path

import torch

from baryir.data.datasets import AllInOneDataset


def calibration_batches(
    data: list[str | Path],
    tasks: list[str],
    samples: int = 256,
    patch_size: int = 128,
    batch_size: int = 8,
    seed: int = 1234,
) -> list[torch.Tensor]:
    """``samples`` degraded patches (N, 3, p, p) in batches, the same every call for a seed.

    The seed differs from training's default so calibration does not only see training crops.
    """
    if samples < 1:
        raise ValueError("calibration needs at least one sample")
    dataset = AllInOneDataset([str(d) for d in data], tasks, patch_size, seed=seed)
    patches = [dataset[k][0] for k in range(samples)]
    return [torch.stack(patches[i : i + batch_size]) for i in range(0, samples, batch_size)]
