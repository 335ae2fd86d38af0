"""Pack folders of clean training photos under a size budget, to carry them to a leased GPU
machine (the device tool carries at most 64 MiB), with the fewest pixels changed:

- photos stored lossy already (JPEG) are copied byte for byte: a re-encode would add loss;
- the others (PNG, ...) become lossless WebP if everything then fits ``--max-mib``;
- otherwise those become JPEG with full-resolution colour (4:4:4) at the highest quality in
  ``--qualities`` that fits. The report gives the quality and the worst PSNR of a re-encoded
  photo against its source, so a run on the packed copy can state what it saw.

Usage: python scripts/pack_data.py DIR [DIR ...] -o OUT [--max-mib 56] [--json FILE]
"""

from __future__ import annotations

import argparse
import io
import json
import math
from pathlib import Path

import numpy as np
from PIL import Image

from baryir.data.photos import list_images
from baryir.io.atomic import atomic_write_bytes, refuse_overwriting_inputs
from baryir.metrics import psnr

LOSSY_SUFFIXES = (".jpg", ".jpeg")


def encode(pixels: np.ndarray, quality: int | None) -> tuple[bytes, str]:
    """Lossless WebP for ``quality`` None, else JPEG 4:4:4 at ``quality``; bytes and suffix."""
    buf = io.BytesIO()
    if quality is None:
        Image.fromarray(pixels).save(buf, format="WEBP", lossless=True, method=4)
        return buf.getvalue(), ".webp"
    Image.fromarray(pixels).save(buf, format="JPEG", quality=quality, subsampling=0)
    return buf.getvalue(), ".jpg"


def pack(folders: list[Path], out: Path, max_mib: float, qualities: list[int]) -> dict:
    """Write the packed copy into ``out`` (one sub-folder per input folder); a ValueError, and
    nothing written, when even the lowest quality does not fit."""
    names = [folder.name for folder in folders]
    if len(set(names)) != len(names):
        raise ValueError(f"input folders share a name ({', '.join(names)}): their packed copies would collide")
    sources = [(folder.name, path) for folder in folders for path in list_images(folder)]
    stems = [(folder, path.stem) for folder, path in sources]
    if len(set(stems)) != len(stems):
        raise ValueError("two photos of one folder share a name but not the suffix: rename one")
    kept = {i: path.read_bytes() for i, (_, path) in enumerate(sources) if path.suffix.lower() in LOSSY_SUFFIXES}
    pixels = {i: np.asarray(Image.open(path).convert("RGB")) for i, (_, path) in enumerate(sources) if i not in kept}
    budget = max_mib * 2**20 - sum(len(b) for b in kept.values())
    for quality in [None, *sorted(qualities, reverse=True)]:
        encoded = {i: encode(p, quality) for i, p in pixels.items()}
        if sum(len(b) for b, _ in encoded.values()) <= budget:
            break
    else:
        raise ValueError(
            f"{len(sources)} photos do not fit {max_mib} MiB even at JPEG quality {quality}: raise --max-mib"
        )
    worst = math.inf
    for i, (folder, path) in enumerate(sources):
        data, suffix = (kept[i], path.suffix) if i in kept else encoded[i]
        atomic_write_bytes(out / folder / f"{path.stem}{suffix}", data)
        if i in pixels and quality is not None:
            packed = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
            worst = min(worst, psnr(packed / 255.0, pixels[i] / 255.0))
    return {
        "photos": len(sources),
        "folders": {name: sum(folder == name for folder, _ in sources) for name in names},
        "copied": len(kept),
        "reencoded": len(pixels),
        "encoding": "lossless webp" if quality is None else f"jpeg 4:4:4 quality {quality}",
        "mib": round(sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) / 2**20, 2),
        "worst_psnr_db": None if math.isinf(worst) else round(worst, 2),
        "out": str(out),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folders", nargs="+", type=Path, help="folders of clean photos")
    p.add_argument("-o", "--out", type=Path, required=True, help="output folder (one sub-folder per input)")
    p.add_argument("--max-mib", type=float, default=56.0, help="size budget of the packed copy (default 56)")
    p.add_argument("--qualities", type=int, nargs="+", default=[97, 95, 92, 90], help="JPEG qualities to try")
    p.add_argument("--json", type=Path, help="write the report here too")
    args = p.parse_args()
    refuse_overwriting_inputs(args.folders, [args.out, *(args.out / f.name for f in args.folders)])
    report = pack(args.folders, args.out, args.max_mib, args.qualities)
    print(json.dumps(report, indent=2))
    if args.json:
        atomic_write_bytes(args.json, (json.dumps(report, indent=2) + "\n").encode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
