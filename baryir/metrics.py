"""Image quality metrics with the papers' protocol: RGB, float [0, 1], data range 1, no shave."""

from __future__ import annotations

import math

import numpy as np
import torch

from .formats import needs_extra


def psnr(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray) -> float:
    """PSNR in dB between two images in [0, 1] (inf when identical)."""
    a = torch.as_tensor(a, dtype=torch.float64)
    b = torch.as_tensor(b, dtype=torch.float64)
    mse = torch.mean((a - b) ** 2).item()
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


def ssim(a: torch.Tensor, b: torch.Tensor) -> float:
    """SSIM of two (3, H, W) images in [0, 1], from scikit-image (Gaussian-free 7x7 window,
    channel-averaged, data range 1), as the all-in-one papers' evaluation scripts use it."""
    try:
        from skimage.metrics import structural_similarity
    except ImportError as e:
        raise ImportError(needs_extra("SSIM (scikit-image)", "eval")) from e
    x = a.detach().double().permute(1, 2, 0).cpu().numpy()
    y = b.detach().double().permute(1, 2, 0).cpu().numpy()
    return float(structural_similarity(x, y, channel_axis=2, data_range=1.0))
