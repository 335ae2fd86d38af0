"""What ``restore --skip-clean`` does to the papers' protocol: each photo is restored, or left as
it is when the readout reads it as clean; PSNR against the clean target with and without it.

    python scripts/skip_clean_eval.py --model out/onnx-fp32 --clean data/test/CBSD68 \
        --tasks identity denoise_25 derain_ps derain_mix dehaze dehaze_mix jpeg deblur \
        --pairs data/test/Rain100L_sample/input data/test/Rain100L_sample/target --md skip.md --json skip.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from tqdm import tqdm

from baryir.data.photos import to_uint8
from baryir.evaluate import paired_items, synthetic_items
from baryir.metrics import psnr
from baryir.runtimes import load_runner
from baryir.runtimes.restore import label_of


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="a model or an export folder with a degradation output")
    ap.add_argument("--clean", type=Path, required=True)
    ap.add_argument("--tasks", nargs="+", required=True)
    ap.add_argument("--pairs", nargs=2, type=Path, metavar=("INPUT", "TARGET"))
    ap.add_argument("--md", type=Path, required=True)
    ap.add_argument("--json", type=Path, required=True)
    args = ap.parse_args()
    runner = load_runner(args.model)
    sets = {f"{args.clean.name} {task}": synthetic_items(args.clean, [task]) for task in args.tasks}
    if args.pairs:
        sets[args.pairs[0].parent.name] = paired_items(*args.pairs)
    rows = {}
    for name, items in sets.items():
        restored_db, skipped_db, input_db, skipped = [], [], [], 0
        for item in tqdm(items, desc=name, unit="img"):
            x = to_uint8(item.degraded)
            out = runner.restore(x)
            clean = label_of(runner.analyze(x)) == "clean"
            skipped += clean
            ref = np.asarray(to_uint8(item.target), dtype=np.float64) / 255
            restored_db.append(psnr(out / 255.0, ref))
            input_db.append(psnr(x / 255.0, ref))
            skipped_db.append(input_db[-1] if clean else restored_db[-1])
        rows[name] = {
            "n": len(items),
            "read_as_clean": skipped,
            "input": _summary(input_db),
            "restore": _summary(restored_db),
            "restore_skip_clean": _summary(skipped_db),
        }
    args.json.write_text(json.dumps({"model": args.model, "rows": rows}, indent=2) + "\n")
    lines = [
        "| set | n | read as clean | input dB | restore dB (worst) | --skip-clean dB (worst) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, r in rows.items():
        lines.append(
            f"| {name} | {r['n']} | {r['read_as_clean']} | {r['input']['mean']:.2f} | "
            f"{r['restore']['mean']:.2f} ({r['restore']['worst']:.2f}) | "
            f"{r['restore_skip_clean']['mean']:.2f} ({r['restore_skip_clean']['worst']:.2f}) |"
        )
    args.md.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def _summary(values: list[float]) -> dict:
    """Mean over finite values (a photo left exactly as it is has infinite PSNR against itself,
    counted as 100 dB) and the worst."""
    capped = [min(v, 100.0) for v in values]
    return {"mean": float(np.mean(capped)), "worst": float(min(capped))}


if __name__ == "__main__":
    main()
