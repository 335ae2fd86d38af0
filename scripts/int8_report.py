r"""FP32 vs PTQ-INT8 vs QAT-INT8 quality through the real INT8 runtimes (ONNX Runtime, OpenVINO).

Every model is exported (FP32 ONNX for the float row, Q/DQ ONNX and OpenVINO INT8 IR for the
quantized ones) and evaluated with `baryir eval`'s protocol on CBSD68 sigma 15/25/50,
synthetic haze on CBSD68 and Rain100L pairs. Prints Markdown (with each INT8 row's worst image
against FP32) and writes JSON (every image's PSNR).

    python scripts/int8_report.py --fp32 default --int8 ptq=out/ptq/model-int8.safetensors \
        qat=out/qat/model-int8.safetensors --clean data/test/CBSD68 \
        --pairs data/test/Rain100L_sample/input data/test/Rain100L_sample/target \
        --limit 10 --json out/int8_report.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import torch

from baryir.evaluate import evaluate, paired_items, synthetic_items
from baryir.export.api import export_model
from baryir.metrics import psnr
from baryir.runtimes import load_runner

TASKS = ["denoise_15", "denoise_25", "denoise_50", "dehaze"]


def _restore_with(runner, items: list, kept: list[np.ndarray], scores: list[float], keep: int = 4):
    """A restore function for ``evaluate`` that also keeps its first ``keep`` outputs and each
    image's PSNR (``evaluate`` restores ``items`` in their order): a mean can hide one photo
    that INT8 costs dBs."""

    def restore(img: torch.Tensor) -> torch.Tensor:
        out = runner.restore(img.permute(1, 2, 0).numpy())
        if len(kept) < keep:
            kept.append(out)
        restored = torch.from_numpy(np.ascontiguousarray(out.transpose(2, 0, 1)))
        scores.append(psnr(restored.float().clamp(0, 1), items[len(scores)].target))
        return restored

    return restore


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fp32", default="default", help="float model")
    ap.add_argument("--int8", nargs="+", default=[], metavar="NAME=PATH", help="quantized checkpoints")
    ap.add_argument("--clean", required=True)
    ap.add_argument("--pairs", nargs=2, metavar=("INPUT_DIR", "TARGET_DIR"))
    ap.add_argument("--tasks", nargs="+", default=TASKS)
    ap.add_argument("--limit", type=int, default=10)
    ap.add_argument("--backends", nargs="+", default=["onnxruntime", "openvino"])
    ap.add_argument("--json")
    args = ap.parse_args()

    items = synthetic_items(args.clean, args.tasks, limit=args.limit)
    if args.pairs:
        items += paired_items(*args.pairs, limit=args.limit)
    variants = [("fp32", args.fp32, "fp32")] + [(*spec.split("=", 1), "int8") for spec in args.int8]
    results, outputs = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, model, precision in variants:
            for backend in args.backends if precision == "int8" else ["onnxruntime"]:
                fmt = "onnx" if backend == "onnxruntime" else "openvino"
                folder = Path(tmp) / name
                if not (folder / f"{fmt}-{precision}" / "manifest.json").exists():
                    export_model(model, fmt, precision, folder, validate=False, shapes=((256, 256),))
                runner = load_runner(folder / f"{fmt}-{precision}", backend, "cpu" if fmt == "onnx" else None)
                kept: list[np.ndarray] = []
                scores: list[float] = []
                rows = evaluate(_restore_with(runner, items, kept, scores), items, progress=False)
                outputs[(name, backend)] = kept
                results.append(
                    {
                        "model": name,
                        "backend": backend,
                        "runs_at": runner.info.precision,
                        "rows": rows,
                        "images": scores,
                    }
                )
                runner.close()
                mean = np.mean([r["psnr"] for r in rows])
                print(f"{name:6s} {backend:12s} mean PSNR {mean:.3f}", flush=True)
    base = {(r["dataset"], r["task"]): r["psnr"] for r in results[0]["rows"]}
    keys = list(base)
    header = "| model | backend | " + " | ".join(f"{d} {t}" for d, t in keys) + " | mean | Δ vs FP32 | worst image Δ |"
    lines = [header, "|" + "---|" * (len(keys) + 5)]
    names = [f"{it.dataset}/{it.task}/{it.name}" for it in items]
    for res in results:
        cells = {(r["dataset"], r["task"]): r for r in res["rows"]}
        mean = np.mean([cells[k]["psnr"] for k in keys])
        delta = mean - np.mean([base[k] for k in keys])
        per_image = np.array(res["images"]) - np.array(results[0]["images"])
        worst = int(np.argmin(per_image))
        res["worst_image"] = {"image": names[worst], "delta_db": float(per_image[worst])}
        lines.append(
            f"| {res['model']} | {res['backend']} ({res['runs_at']}) | "
            + " | ".join(f"{cells[k]['psnr']:.2f} / {cells[k]['ssim']:.4f}" for k in keys)
            + f" | {mean:.3f} | {delta:+.3f} | "
            + (f"{per_image[worst]:+.2f} ({names[worst]}) |" if res is not results[0] else " |")
        )
    agreement = {}
    for name, _, precision in variants:
        if precision == "int8" and {(name, "onnxruntime"), (name, "openvino")} <= set(outputs):
            a, b = outputs[(name, "onnxruntime")], outputs[(name, "openvino")]
            mse = np.mean([np.mean((x - y) ** 2) for x, y in zip(a, b)])
            agreement[name] = float(10 * np.log10(1 / mse)) if mse > 0 else float("inf")
    print("\n".join(lines))
    for name, value in agreement.items():
        print(f"{name}: ONNX Runtime vs OpenVINO INT8 outputs agree at {value:.1f} dB")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"results": results, "ort_vs_openvino_db": agreement}, indent=2))


if __name__ == "__main__":
    main()
