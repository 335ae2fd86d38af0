"""Photo files as torch tensors: listing, robust reading, writing, pairing by name, labelled grids."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..io.atomic import atomic_write
from ..io.images import IMAGE_SUFFIXES, ImageError, read_rgb_float

log = logging.getLogger("baryir")


#: The example photos shipped in the package (``baryir demo``, export validation input).
EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "examples"


def list_images(folder: str | Path) -> list[Path]:
    """Image files directly inside ``folder``, sorted; a clear error if there are none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise ValueError(f"{folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    return files


def read_rgb(path: str | Path) -> torch.Tensor:
    """An image file as a (3, H, W) float32 tensor in [0, 1] at its full bit depth (EXIF
    orientation applied; see :mod:`baryir.io.images`)."""
    return torch.from_numpy(read_rgb_float(path)).permute(2, 0, 1).contiguous()


def to_uint8(img: torch.Tensor) -> np.ndarray:
    """(3, H, W) float in [0, 1] -> (H, W, 3) uint8, rounded."""
    return (img.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255 + 0.5).astype(np.uint8)


def read_images(
    paths: list[Path], min_size: int = 0, limit: int | None = None, skipped: list[str] | None = None
) -> tuple[list[torch.Tensor], list[Path]]:
    """Read many images (at most ``limit`` good ones); unreadable or too-small ones are logged
    (and appended to ``skipped``, one line each) and skipped, not fatal. Returns the images and
    the paths they came from (same order).
    """
    images, kept = [], []
    for p in paths:
        if limit is not None and len(images) >= limit:
            break
        try:
            img = read_rgb(p)
        except (ValueError, OSError) as e:  # ImageError for what the codec refuses
            log_skipped(skipped, f"{p}: {e}" if isinstance(e, ImageError) else f"{p}: not a readable image ({e})")
            continue
        if min(img.shape[-2:]) < min_size:
            log_skipped(skipped, f"{p}: {img.shape[2]}x{img.shape[1]} is smaller than {min_size} px")
            continue
        images.append(img)
        kept.append(p)
    return images, kept


def log_skipped(skipped: list[str] | None, reason: str) -> None:
    """Log "skipping REASON" and append REASON to ``skipped`` (when a list is given)."""
    log.warning("skipping %s", reason)
    if skipped is not None:
        skipped.append(reason)


def pair_by_name(inputs: list[Path], targets: list[Path], skipped: list[str] | None = None) -> list[tuple[Path, Path]]:
    """Pair degraded and clean files by base name (``rain-001.png`` <-> ``rain-001.png``).

    Falls back to known published naming (``rain-x``/``norain-x``, ``x_0.8_0.2`` hazy names
    of clean ``x``); unmatched inputs are logged and skipped (appended to ``skipped``), and an
    error if none matched.
    """
    by_stem = {p.stem: p for p in targets}

    def match(p: Path) -> Path | None:
        stem = p.stem
        for key in (stem, stem.removeprefix("rain-"), f"no{stem}", stem.split("_")[0]):
            if key in by_stem:
                return by_stem[key]
        return None

    pairs = []
    for p in inputs:
        t = match(p)
        if t is None:
            log_skipped(
                skipped, f"{p}: no target with the same name in {targets[0].parent if targets else 'the targets'}"
            )
        else:
            pairs.append((p, t))
    if inputs and not pairs:
        raise ValueError(f"no input in {inputs[0].parent} has a target with the same name; pair files by name")
    return pairs


def write_png(img: torch.Tensor, path: str | Path) -> Path:
    """Write a (3, H, W) float image as an 8-bit PNG, atomically."""
    return atomic_write(path, lambda tmp: Image.fromarray(to_uint8(img)).save(tmp, format="PNG"))


def labelled_grid(
    rows: list[list[torch.Tensor]], row_labels: list[str], column_labels: list[str], gap: int = 6
) -> Image.Image:
    """Images laid out row by row (e.g. input | restored) with white gaps, a label above each
    column and left of each row (columns start at the widest image above them, so labels line up)."""
    from PIL import ImageDraw

    widths = [max(row[c].shape[2] for row in rows) for c in range(len(column_labels))]
    heights = [max(im.shape[1] for im in row) for row in rows]
    left, top = 90, 24
    width = left + sum(widths) + gap * (len(widths) - 1)
    canvas = Image.new("RGB", (width, top + sum(heights) + gap * (len(rows) - 1)), "white")
    draw = ImageDraw.Draw(canvas)
    x = left
    for label, w in zip(column_labels, widths):
        draw.text((x + 4, 6), label, fill="black")
        x += w + gap
    y = top
    for label, row, h in zip(row_labels, rows, heights):
        draw.text((6, y + h // 2 - 6), label, fill="black")
        x = left
        for im, w in zip(row, widths):
            canvas.paste(Image.fromarray(to_uint8(im)), (x, y))
            x += w + gap
        y += h + gap
    return canvas
