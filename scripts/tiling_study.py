"""Measure how much tiled restoration differs from whole-image restoration.

The network has global statistics (MDTA's channel attention normalises over the whole tile),
so tiles see slightly different statistics than the whole image. This prints, per tile size
and overlap, the PSNR between tiled and whole-image output and the PSNR of each vs the clean
target, on noisy CBSD68-style photos.

Usage: python scripts/tiling_study.py --clean DIR [--model default] [--limit 4] [--json FILE]
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from baryir.evaluate import synthetic_items
from baryir.metrics import psnr
from baryir.runtimes import Tiling, load_runner


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clean", required=True)
    parser.add_argument("--model", default="default")
    parser.add_argument("--task", default="denoise_25")
    parser.add_argument("--limit", type=int, default=4)
    parser.add_argument("--json")
    args = parser.parse_args()
    runner = load_runner(args.model, "torch", "cpu", "fp32")
    items = synthetic_items(args.clean, [args.task], limit=args.limit)
    whole = [runner.restore(it.degraded.permute(1, 2, 0).numpy()) for it in items]
    targets = [it.target.permute(1, 2, 0).numpy() for it in items]
    rows = [
        {
            "tile": "whole",
            "overlap": 0,
            "psnr_vs_whole": float("inf"),
            "psnr_vs_target": float(np.mean([psnr(w, t) for w, t in zip(whole, targets)])),
        }
    ]
    for tile in (128, 192, 256):
        for overlap in (16, 32, 48):
            if tile <= 2 * overlap:
                continue
            outs = [runner.restore(it.degraded.permute(1, 2, 0).numpy(), Tiling(tile, overlap)) for it in items]
            rows.append(
                {
                    "tile": tile,
                    "overlap": overlap,
                    "psnr_vs_whole": float(np.mean([psnr(o, w) for o, w in zip(outs, whole)])),
                    "max_abs_vs_whole": float(max(np.abs(o - w).max() for o, w in zip(outs, whole))),
                    "psnr_vs_target": float(np.mean([psnr(o, t) for o, t in zip(outs, targets)])),
                }
            )
    print("| tile | overlap | PSNR tiled vs whole | max abs vs whole | PSNR vs target |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['tile']} | {r['overlap']} | {r['psnr_vs_whole']:.2f} | {r.get('max_abs_vs_whole', 0):.4f} "
            f"| {r['psnr_vs_target']:.2f} |"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
