"""Restore image files with any runner: format, bit depth, alpha, EXIF and ICC preserved.

One bad input never stops a batch: each file gets a result (written path or the reason it
failed), outputs are written atomically and never onto an input.
"""

from __future__ import annotations

import glob
import io
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from baryir.data.images import IMAGE_SUFFIXES

from .base import Runner
from .processing import Tiling, auto_tiling

#: Refuse images above this many pixels (decompression bombs); 100 MP covers real photos.
MAX_PIXELS = 100_000_000
_FORMATS = {
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".png": "PNG",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".bmp": "BMP",
    ".webp": "WEBP",
}


@dataclass
class RestoreResult:
    """What happened to one input."""

    input: str
    output: str | None = None
    error: str | None = None


def expand_inputs(inputs: list[str]) -> list[Path]:
    """Files, folders (their images, sorted) and glob patterns, in order, without duplicates."""
    found: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found += sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        elif any(ch in item for ch in "*?["):
            found += sorted(Path(p) for p in glob.glob(item, recursive=True))
        else:
            found.append(path)
    seen: set[Path] = set()
    return [p for p in found if not (p.resolve() in seen or seen.add(p.resolve()))]


def _load(path: Path) -> tuple[np.ndarray, np.ndarray | None, Image.Image]:
    """(RGB array uint8/uint16, alpha or None, the opened image) with EXIF orientation applied."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)  # PIL's own guard, as an error
        im = Image.open(path)  # reads the header only
        if im.width * im.height > MAX_PIXELS:  # checked before any pixel is decoded
            raise Image.DecompressionBombError(f"{im.width}x{im.height}")
        im.load()
    if im.width == 0 or im.height == 0:
        raise ValueError("zero-size image")
    im = ImageOps.exif_transpose(im)
    alpha = None
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        gray = np.asarray(im, dtype=np.uint16 if im.mode != "I" else np.int32).astype(np.uint16)
        return np.repeat(gray[..., None], 3, axis=2), None, im
    if im.mode == "P":
        im_conv = im.convert("RGBA") if "transparency" in im.info else im.convert("RGB")
    else:
        im_conv = im
    if im_conv.mode in ("RGBA", "LA", "PA"):
        alpha = np.asarray(im_conv.getchannel("A"))
    rgb = np.asarray(im_conv.convert("RGB"))
    return rgb, alpha, im


def _encode(rgb: np.ndarray, alpha: np.ndarray | None, source: Image.Image, fmt: str) -> bytes:
    """Back to the source's mode family (gray stays gray, 16-bit stays 16-bit) with its ICC."""
    if rgb.dtype == np.uint16:
        out = Image.fromarray(rgb.mean(axis=2).round().astype(np.uint16))
    elif source.mode in ("L", "LA"):
        out = Image.fromarray(rgb).convert("L")
    else:
        out = Image.fromarray(rgb)
    if alpha is not None:
        out = out.convert("LA" if out.mode == "L" else "RGBA")
        out.putalpha(Image.fromarray(alpha))
    buf = io.BytesIO()
    params = {"icc_profile": source.info["icc_profile"]} if source.info.get("icc_profile") else {}
    if fmt == "JPEG":
        params["quality"] = 95
        if out.mode not in ("RGB", "L"):
            out = out.convert("RGB")
    out.save(buf, format=fmt, **params)
    return buf.getvalue()


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def restore_with_fallback(runner: Runner, rgb: np.ndarray, tiling: Tiling | None) -> np.ndarray:
    """``runner.restore``; on out-of-memory, retry with tiles half the size (down to 128 px)."""
    while True:  # each retry halves the tile, so this ends
        try:
            return runner.restore(rgb, tiling)
        except (MemoryError, RuntimeError) as e:
            if isinstance(e, RuntimeError) and "out of memory" not in str(e).lower():
                raise
            side = tiling.tile if tiling else max(rgb.shape[:2])
            smaller = (side // 2) // 8 * 8
            if smaller < 128:
                raise
            tiling = Tiling(smaller, min(tiling.overlap if tiling else 32, smaller // 4))


def restore_file(
    runner: Runner,
    path: Path,
    out_dir: Path,
    tiling: Tiling | None = None,
    suffix: str | None = None,
    auto: tuple[int, float] | None = None,
) -> RestoreResult:
    """Restore one file into ``out_dir`` (same name and format unless ``suffix`` says otherwise).

    Without ``tiling``, ``auto=(model dim, budget MB)`` tiles images whose activations would
    not fit the budget."""
    out_path = out_dir / (path.stem + (suffix or path.suffix))
    if out_path.resolve() == path.resolve():
        return RestoreResult(str(path), error="output would overwrite the input; choose another -o folder")
    try:
        rgb, alpha, source = _load(path)
    except FileNotFoundError:
        return RestoreResult(str(path), error="file not found")
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        return RestoreResult(str(path), error=f"more than {MAX_PIXELS:,} pixels (decompression bomb guard)")
    except (OSError, ValueError, SyntaxError) as e:
        return RestoreResult(str(path), error=f"not a readable image ({e})")
    fmt = _FORMATS.get(out_path.suffix.lower())
    if fmt is None:
        return RestoreResult(str(path), error=f"cannot write {out_path.suffix!r}; use --format png")
    if tiling is None and auto is not None:
        tiling = auto_tiling(rgb.shape[0], rgb.shape[1], auto[0], auto[1])
    restored = restore_with_fallback(runner, rgb, tiling)
    _write_atomic(out_path, _encode(restored, alpha, source, fmt))
    return RestoreResult(str(path), str(out_path))
