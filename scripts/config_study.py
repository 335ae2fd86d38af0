"""Edge-config study: train candidate BaryNet configs from scratch with one recipe at one
budget, then measure each (quality per task, parameters, GMACs, ONNX Runtime and OpenVINO
FP32 latency at 512x512) and write one table.

Every step is a ``baryir`` command, so each run can be stopped and resumed: a finished step
is skipped, an interrupted training run continues with ``--resume``.

    python scripts/config_study.py --data data/train/* --clean data/test/CBSD68 \\
        --pairs data/test/Rain100L_sample/input data/test/Rain100L_sample/target \\
        -o runs/config-study
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from baryir.data.tasks import THREE_TASK_VARIED

#: The candidates, as overrides of ``mobile`` (its budget: <= 2 M parameters, <= 10 GMACs at 256x256).
CANDIDATES: dict[str, dict] = {
    "mobile": {},
    "mid-deep": {"widths": [16, 32, 64, 96], "num_blocks": [2, 3, 4, 1]},
    "half-deep": {"widths": [16, 32, 64, 64], "num_blocks": [2, 4, 4, 2]},
    "wide-ffn": {"widths": [16, 32, 64, 96], "num_blocks": [2, 2, 3, 1], "ffn_expansion_factor": 2.0},
}
EVAL_TASKS = ("denoise_15", "denoise_25", "denoise_50", "dehaze")


def baryir(*args: str) -> None:
    """Run one ``baryir`` command with this interpreter; stop the study if it fails."""
    command = [sys.executable, "-m", "baryir.cli", *args]
    print("+ baryir", " ".join(args), flush=True)
    subprocess.run(command, check=True)


def train(name: str, run: Path, args: argparse.Namespace) -> Path:
    model = run / "model.safetensors"
    metrics = run / "metrics.json"
    if metrics.exists():
        done = json.loads(metrics.read_text())
        if done["steps"] == args.steps and not done["stopped_by"]:
            return model
    config = run.parent / "configs" / f"{name}.json"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(json.dumps({"base": "mobile", "name": name, **CANDIDATES[name]}))
    resume = ["--resume"] if (run / "state.pt").exists() else []
    baryir(
        "train", "--config", str(config), "--data", *args.data, "--tasks", *args.tasks,
        "--steps", str(args.steps), "--batch-size", str(args.batch_size), "--patch-size", str(args.patch_size),
        "--lr", str(args.lr), "--warmup", "100", "--workers", "1", "--seed", str(args.seed),
        "--content-haze", str(args.content_haze),
        "--val-every", str(args.steps), "--ckpt-every", "250", "--no-progress", "-o", str(run), *resume,
    )  # fmt: skip
    return model


def measure(name: str, model: Path, out: Path, args: argparse.Namespace) -> dict:
    """Quality, size and latency of one trained candidate (each measurement cached as JSON)."""
    quality, info, bench = out / f"{name}.eval.json", out / f"{name}.info.json", out / f"{name}.bench.json"
    if not quality.exists():
        pairs = ["--pairs", *args.pairs, "--pairs-task", "derain"] if args.pairs else []
        baryir(
            "eval", "--model", str(model), "--clean", args.clean, "--tasks", *EVAL_TASKS,
            "--limit", str(args.limit), *pairs, "--no-progress", "--json", str(quality),
        )  # fmt: skip
    if not info.exists():
        result = subprocess.run(
            [sys.executable, "-m", "baryir.cli", "info", str(model), "--json"],
            check=True,
            capture_output=True,
            text=True,
        )
        info.write_text(result.stdout)
    if not bench.exists() and not args.no_bench:
        baryir(
            "bench", "--model", str(model), "--backends", "onnxruntime,openvino", "--precisions", "fp32",
            "--size", "512x512", "--warmup", "1", "--repeats", str(args.repeats),
            "--cache", str(out / "artifacts" / name), "--json", str(bench),
        )  # fmt: skip
    return {
        "quality": json.loads(quality.read_text()),
        "info": json.loads(info.read_text()),
        "bench": json.loads(bench.read_text()) if bench.exists() else None,
    }


def table(rows: dict[str, dict]) -> str:
    """One Markdown table: PSNR/SSIM per task, parameters, GMACs, latency."""
    tasks: list[str] = []
    for r in rows.values():
        tasks += [x["task"] for x in r["quality"]["results"] if x["task"] not in tasks]
    head = "| config | params (M) | GMACs 256² | " + " | ".join(tasks) + " | ORT ms 512² | OpenVINO ms 512² |"
    lines = [head, "|" + "---|" * (5 + len(tasks))]
    for name, r in rows.items():
        by_task = {x["task"]: x for x in r["quality"]["results"]}
        cells = [f"{by_task[t]['psnr']:.2f} / {by_task[t]['ssim']:.4f}" if t in by_task else "—" for t in tasks]
        latency = {b["backend"]: b for b in (r["bench"] or {}).get("rows", [])}

        def ms(backend: str, latency: dict = latency) -> str:
            row = latency.get(backend)
            return f"{row['p50_ms']:.0f}" if row and "p50_ms" in row else "—"

        info = r["info"]
        lines.append(
            f"| {name} | {info['parameters'] / 1e6:.2f} | {info['gmacs']:.2f} | "
            + " | ".join(cells)
            + f" | {ms('onnxruntime')} | {ms('openvino')} |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", nargs="+", required=True, help="folders of clean training photos")
    parser.add_argument("--clean", required=True, help="clean test photos (CBSD68)")
    parser.add_argument("--pairs", nargs=2, metavar=("INPUT_DIR", "TARGET_DIR"), help="real rain pairs")
    parser.add_argument("--candidates", nargs="+", default=list(CANDIDATES), choices=list(CANDIDATES))
    parser.add_argument("--tasks", nargs="+", default=list(THREE_TASK_VARIED))
    parser.add_argument("--steps", type=int, default=900)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--patch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--content-haze", type=float, default=0.3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, default=68, help="CBSD68 photos per task")
    parser.add_argument("--no-bench", action="store_true", help="skip the latency rows")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per latency row (after one warm-up)")
    parser.add_argument("--only-train", action="store_true", help="train the candidates, measure nothing")
    parser.add_argument("-o", "--out", type=Path, required=True)
    args = parser.parse_args()
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    rows = {}
    for name in args.candidates:
        model = train(name, args.out / name, args)
        if not args.only_train:
            rows[name] = measure(name, model, args.out, args)
    if rows:
        text = table(rows)
        (args.out / "study.md").write_text(text)
        (args.out / "study.json").write_text(json.dumps(rows, indent=2))
        print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
