r"""Before/after timing of the exact deployment rewrites (and of INT8 variants), interleaved in one run.

Exports the float model's training graph as it is into ``--work`` (once; reused), takes the
rewritten exports and the INT8 ones from ``--cache`` (the cache ``baryir bench`` and ``parity``
use, exported there if missing), optionally two INT8 checkpoints (one quantized before rewrites
existed, one after), then times every artifact x runtime x precision round-robin (one run each
per round) so that a noisy machine slows them alike. Prints Markdown and writes JSON; each
artifact is checked against its golden on this machine first (a wrong one is never timed).

    python scripts/rewrite_bench.py --model default --int8-before old-int8.safetensors \
        --int8-after out/qat/model-int8.safetensors --size 512x512 --rounds 5 --json out/rewrite_bench.json
    python scripts/rewrite_bench.py --model default --int8 base=out/base/model-int8.safetensors \
        transformer=out/transformer/model-int8.safetensors --rounds 6     # NNCF placement variants
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from baryir.comparison.parity import artifact_for
from baryir.cpu import cpu_features
from baryir.export.api import export_model
from baryir.io.atomic import atomic_write
from baryir.runtimes import load_runner
from baryir.runtimes.environment import describe_cpu, onednn_hides_bf16


def _rows(args: argparse.Namespace) -> list[tuple[str, Path, str | None]]:
    """(label, artifact folder, runner precision) for every timed combination."""
    cache, before = Path(args.cache), Path(args.work) / "training-graph"
    if not (before / "openvino-fp32" / "manifest.json").exists():
        export_model(args.model, "onnx,openvino", "fp32", before, validate=False, shapes=((256, 256),), rewrites=())
    floats = {
        "training graph": {b: before / f"{f}-fp32" for b, f in (("onnxruntime", "onnx"), ("openvino", "openvino"))},
        "rewritten": {b: Path(artifact_for(args.model, b, "fp32", cache)) for b in ("onnxruntime", "openvino")},
    }
    rows = []
    for name, folders in floats.items():
        rows.append((f"onnxruntime fp32, {name}", folders["onnxruntime"], None))
        rows.append((f"openvino f32, {name}", folders["openvino"], "fp32"))
        if cpu_features().get("bf16") and not onednn_hides_bf16():
            rows.append((f"openvino bf16 (the CPU plugin's default here), {name}", folders["openvino"], "bf16"))
    int8 = [("quantized on the training graph", args.int8_before), ("quantized rewritten", args.int8_after)]
    for spec in args.int8:
        name, sep, ckpt = spec.partition("=")
        if not (sep and name and ckpt):
            raise SystemExit(f"--int8 {spec!r}: give NAME=CHECKPOINT")
        int8.append((name, ckpt))
    bf16 = cpu_features().get("bf16") and not onednn_hides_bf16()
    for name, ckpt in int8:
        if ckpt:
            for backend in ("onnxruntime", "openvino"):
                folder = Path(artifact_for(args.model, backend, "int8", cache, ckpt))
                rows.append((f"{backend} int8, {name}", folder, None))
                if backend == "openvino" and bf16:
                    rows.append((f"openvino int8+bf16, {name}", folder, "int8+bf16"))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--int8-before", help="an INT8 checkpoint quantized on the training graph")
    parser.add_argument("--int8-after", help="an INT8 checkpoint quantized on the rewritten graph")
    parser.add_argument(
        "--int8", nargs="*", default=[], metavar="NAME=CKPT", help="more INT8 checkpoints, e.g. NNCF placement variants"
    )
    parser.add_argument("--size", default="512x512")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--cache", default="out/artifacts", help="the exports of bench and parity (reused)")
    parser.add_argument("--work", default="out/rewrite_bench", help="where the training-graph export is kept")
    parser.add_argument("--json")
    args = parser.parse_args()
    h, w = (int(v) for v in args.size.split("x"))
    x = np.random.default_rng(0).random((1, 3, h, w), dtype=np.float32)
    runners = []
    for label, folder, precision in _rows(args):
        runner = load_runner(folder, precision=precision)  # checks the artifact against its golden here
        runner.run(x)  # warm-up (and OpenVINO INT8's static compile)
        runners.append((label, runner))
    times: dict[str, list[float]] = {label: [] for label, _ in runners}
    for _ in range(args.rounds):
        for label, runner in runners:
            start = time.perf_counter()
            runner.run(x)
            times[label].append((time.perf_counter() - start) * 1e3)
    runs_at = {label: runner.info.precision for label, runner in runners}
    p50 = {label: float(np.median(t)) for label, t in times.items()}
    base = next(v for k, v in p50.items() if k.startswith("onnxruntime fp32, training"))
    print(f"{args.size}, {args.rounds} interleaved rounds, cpu: {describe_cpu()}\n")
    print("| artifact | runs at | p50 ms | vs ONNX Runtime FP32 (training graph) |")
    print("|---|---|---:|---:|")
    for label, ms in p50.items():
        print(f"| {label} | {runs_at[label]} | {ms:.0f} | {base / ms:.2f}x |")
    if args.json:
        report = {"size": [h, w], "rounds": args.rounds, "cpu": describe_cpu(), "p50_ms": p50, "runs_at": runs_at}
        atomic_write(args.json, lambda tmp: Path(tmp).write_text(json.dumps(report, indent=2)))


if __name__ == "__main__":
    main()
