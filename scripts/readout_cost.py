"""What the degradation readout costs (issue #32): ``analyze`` against ``restore``, and the restoring
path of an artifact with the second output against one without it, per CPU backend, in one run.

    python scripts/readout_cost.py --work /tmp/readout-cost --size 512 --repeats 5 \
        --md readout_cost.md --json readout_cost.json

Exports the model (``default``) twice, with its readout and without it (FP32, the deployment
rewrites), then times the rows interleaved, round after round, and reports medians.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from baryir.checkpoints import load_model, save_model
from baryir.export.api import export_model
from baryir.runtimes import load_runner


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default")
    ap.add_argument("--work", type=Path, required=True, help="folder for the two exports")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--md", type=Path, required=True)
    ap.add_argument("--json", type=Path, required=True)
    args = ap.parse_args()
    model = load_model(args.model)
    if model.readout is None:
        raise SystemExit(f"{args.model} has no readout")
    with_path = save_model(model, args.work / "with-readout.safetensors")
    model.readout = None
    without_path = save_model(model, args.work / "without-readout.safetensors")
    for path, folder in ((with_path, "with"), (without_path, "without")):
        if not (args.work / folder / "openvino-fp32" / "manifest.json").exists():
            export_model(path, "onnx,openvino", "fp32", args.work / folder, shapes=((256, 256),))
    image = (np.random.default_rng(0).random((args.size, args.size, 3)) * 255).astype(np.uint8)
    rows: dict[str, Callable[[], object]] = {}
    torch_runner = load_runner(with_path)
    rows["torch fp32 restore"] = lambda: torch_runner.restore(image)
    rows["torch fp32 analyze"] = lambda: torch_runner.analyze(image)
    for backend, precision in (("onnxruntime", None), ("openvino", "fp32"), ("openvino", "bf16")):
        fmt = "onnx" if backend == "onnxruntime" else "openvino"
        label = f"{backend} {precision or 'fp32'}"
        try:
            with_runner = load_runner(args.work / "with" / f"{fmt}-fp32", backend, precision=precision)
            without_runner = load_runner(args.work / "without" / f"{fmt}-fp32", backend, precision=precision)
        except (ValueError, RuntimeError, ImportError) as e:  # bf16 where the CPU has none
            print(f"skipped {label}: {e}")
            continue
        rows[f"{label} restore, artifact without readout"] = lambda r=without_runner: r.restore(image)
        rows[f"{label} restore, artifact with readout"] = lambda r=with_runner: r.restore(image)
        rows[f"{label} analyze"] = lambda r=with_runner: r.analyze(image)
    times: dict[str, list[float]] = {name: [] for name in rows}
    for run in rows.values():
        run()  # warm-up (compilation, allocation)
    for _ in range(args.repeats):
        for name, run in rows.items():
            start = time.perf_counter()
            run()
            times[name].append((time.perf_counter() - start) * 1e3)
    medians = {name: statistics.median(ts) for name, ts in times.items()}
    lines = [f"| {args.size}² | p50 ms | vs its restore |", "|---|---:|---:|"]
    for name, ms in medians.items():
        base = name.split(" restore")[0].split(" analyze")[0]
        restore = medians.get(f"{base} restore, artifact with readout", medians.get(f"{base} restore"))
        lines.append(f"| {name} | {ms:.0f} | {ms / restore:.2f}× |")
    report = "\n".join(lines) + "\n"
    print(report)
    args.md.write_text(report)
    args.json.write_text(json.dumps({"size": args.size, "repeats": args.repeats, "ms": times}, indent=2) + "\n")


if __name__ == "__main__":
    main()
