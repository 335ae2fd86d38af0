"""Pre/post-processing shared by every runner: dtypes, padding, tiling with feathered blending.

Runners only see float32 NCHW batches whose height and width are multiples of 8; everything
else (uint8/uint16/float images, odd sizes, images too large for memory) is handled here once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from baryir.formats import PAD_MULTIPLE

#: Measured default (docs/runtimes.md, "Tiles vs the whole image"): tiles this large differ from whole-image inference
#: by well under one 8-bit level; overlap is blended with a linear ramp.
DEFAULT_OVERLAP = 32

RunBatch = Callable[[np.ndarray], np.ndarray]


def pad_to_multiple(x: np.ndarray, multiple: int = PAD_MULTIPLE) -> np.ndarray:
    """Reflect-pad the bottom/right of (N, C, H, W) up to a multiple (edge mode when tiny)."""
    h, w = x.shape[-2:]
    ph, pw = -h % multiple, -w % multiple
    if not (ph or pw):
        return x
    mode = "reflect" if ph < h and pw < w else "edge"
    return np.pad(x, ((0, 0), (0, 0), (0, ph), (0, pw)), mode=mode)


def run_padded(run: RunBatch, x: np.ndarray) -> np.ndarray:
    """Run a batch of any size: pad to the multiple, run, crop back."""
    h, w = x.shape[-2:]
    return run(np.ascontiguousarray(pad_to_multiple(x)))[..., :h, :w]


@dataclass(frozen=True)
class Tiling:
    """Tile side (pixels, a multiple of 8) and overlap between neighbouring tiles."""

    tile: int
    overlap: int = DEFAULT_OVERLAP

    def __post_init__(self) -> None:
        if self.tile % PAD_MULTIPLE or self.tile <= 2 * self.overlap:
            raise ValueError(f"tile {self.tile} must be a multiple of {PAD_MULTIPLE} and > 2 x overlap {self.overlap}")
        if self.overlap < 0:
            raise ValueError("overlap must be >= 0")


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Start offsets covering [0, size) with tiles of ``tile`` overlapping by >= ``overlap``."""
    if size <= tile:
        return [0]
    step = tile - overlap
    starts = list(range(0, size - tile, step))
    return starts + [size - tile]


def _ramp(length: int, overlap: int, at_start: bool, at_end: bool) -> np.ndarray:
    """1-D blending weights: linear ramps over the overlap, except at the image border."""
    w = np.ones(length, dtype=np.float32)
    if overlap:
        ramp = (np.arange(overlap, dtype=np.float32) + 0.5) / overlap
        if not at_start:
            w[:overlap] = ramp
        if not at_end:
            w[-overlap:] = ramp[::-1]
    return w


def run_tiled(run: RunBatch, x: np.ndarray, tiling: Tiling, batch: int = 1) -> np.ndarray:
    """Restore (1, C, H, W) tile by tile (``batch`` tiles per call) with feathered blending."""
    _, c, h, w = x.shape
    t, ov = tiling.tile, tiling.overlap
    if h <= t and w <= t:
        return run_padded(run, x)
    ys, xs = tile_starts(h, t, ov), tile_starts(w, t, ov)
    out = np.zeros((1, c, h, w), dtype=np.float32)
    weight = np.zeros((h, w), dtype=np.float32)
    boxes = [(y, xx) for y in ys for xx in xs]
    for i in range(0, len(boxes), batch):
        chunk = boxes[i : i + batch]
        tiles = np.concatenate([x[:, :, y : y + t, xx : xx + t] for y, xx in chunk])
        restored = run_padded(run, tiles)
        for (y, xx), tile_out in zip(chunk, restored):
            th, tw = tile_out.shape[-2:]
            wy = _ramp(th, ov, y == 0, y + th >= h)
            wx = _ramp(tw, ov, xx == 0, xx + tw >= w)
            wmap = wy[:, None] * wx[None, :]
            out[0, :, y : y + th, xx : xx + tw] += tile_out * wmap
            weight[y : y + th, xx : xx + tw] += wmap
    return out / weight


#: Peak activation memory of eager FP32 inference per pixel and per unit of ``dim``, measured
#: with the mobile config (dim 16): +584 MB at 512x512, +2157 MB at 1024x1024 (~2.1 kB/pixel).
ACTIVATION_BYTES_PER_PIXEL_PER_DIM = 132.0


def auto_tiling(height: int, width: int, dim: int, budget_mb: float, overlap: int = DEFAULT_OVERLAP) -> Tiling | None:
    """None if the whole image fits ``budget_mb`` of activations, else the largest square tile
    (multiple of 8) that does."""
    per_pixel = ACTIVATION_BYTES_PER_PIXEL_PER_DIM * dim
    if height * width * per_pixel <= budget_mb * 2**20:
        return None
    side = int((budget_mb * 2**20 / per_pixel) ** 0.5) // PAD_MULTIPLE * PAD_MULTIPLE
    return Tiling(max(side, 2 * overlap + 2 * PAD_MULTIPLE), overlap)
