"""Pack folders of clean training photos under a size budget, to carry them to a leased GPU
machine (the device tool carries at most 64 MiB): every photo re-encoded as WebP at the highest
quality in ``--qualities`` whose total fits ``--max-mib``, same size, same folder names.

A photo already stored lossy (JPEG) is re-encoded once more, so the quality is kept high; the
report says which quality was used and how far it moved the pixels (PSNR of packed vs source,
the worst photo), so a training run on the packed copy states what it saw.

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

from baryir.data.images import list_images
from baryir.io.atomic import atomic_write_bytes, refuse_overwriting_inputs


def encode(pixels: np.ndarray, quality: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="WEBP", quality=quality, method=6)
    return buf.getvalue()


def psnr8(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def pack(folders: list[Path], out: Path, max_mib: float, qualities: list[int]) -> dict:
    """Write the packed copy into ``out`` (one sub-folder per input folder); a ValueError when
    even the lowest quality does not fit."""
    sources = [(folder.name, path) for folder in folders for path in list_images(folder)]
    names = [folder.name for folder in folders]
    if len(set(names)) != len(names):
        raise ValueError(f"input folders share a name ({', '.join(names)}): their packed copies would collide")
    pixels = [np.asarray(Image.open(path).convert("RGB")) for _, path in sources]
    for quality in sorted(qualities, reverse=True):
        encoded = [encode(p, quality) for p in pixels]
        total = sum(len(e) for e in encoded)
        if total <= max_mib * 2**20:
            break
    else:
        need = f"{total / 2**20:.1f} MiB even at quality {quality}"
        raise ValueError(f"{len(sources)} photos need {need}: raise --max-mib")
    worst = math.inf
    for (folder, path), data, original in zip(sources, encoded, pixels):
        atomic_write_bytes(out / folder / f"{path.stem}.webp", data)
        worst = min(worst, psnr8(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")), original))
    return {
        "photos": len(sources),
        "folders": {f.name: len(list_images(f)) for f in folders},
        "quality": quality,
        "mib": round(total / 2**20, 2),
        "worst_psnr_db": round(worst, 2),
        "out": str(out),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folders", nargs="+", type=Path, help="folders of clean photos")
    p.add_argument("-o", "--out", type=Path, required=True, help="output folder (one sub-folder per input)")
    p.add_argument("--max-mib", type=float, default=56.0, help="size budget of the packed copy (default 56)")
    p.add_argument("--qualities", type=int, nargs="+", default=[98, 95, 92, 90], help="WebP qualities to try")
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
