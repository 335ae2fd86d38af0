"""Commands that compare backends on this machine: ``parity`` and ``bench``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from baryir.data.tasks import TASK_NAMES
from baryir.formats import BACKEND_NAMES, RUN_PRECISIONS

from .common import file_with_suffix, list_of, non_negative, positive, sizes, write_json


def _combos(backends: list[str], precisions: list[str]) -> list[tuple[str, str]]:
    return [(b, p) for b in backends for p in precisions]


def cmd_parity(args: argparse.Namespace) -> int:
    from ..comparison.parity import Combo, large_item, markdown, run_parity
    from ..evaluate import paired_items, synthetic_items

    if not args.pairs and not args.clean:
        print("error: give --pairs INPUT_DIR TARGET_DIR or --clean DIR --tasks ...", file=sys.stderr)
        return 2
    skipped: list[str] = []
    items = paired_items(*args.pairs, limit=args.limit, skipped=skipped) if args.pairs else []
    if args.clean:
        items += synthetic_items(args.clean, args.tasks, limit=args.limit, skipped=skipped)
    if not items:
        print("error: no image could be read; see the skipped files above", file=sys.stderr)
        return 2
    items.append(large_item(items[0]))
    combos = [Combo(b, p) for b, p in _combos(args.backends, args.precisions)]
    report = run_parity(
        args.model, items, combos, Path(args.cache), int8_model=args.int8_model, torch_device=args.torch_device
    )
    print(markdown(report))
    if skipped:
        print(f"skipped {len(skipped)} file(s) or pair(s) (named above); parity is over the rest", file=sys.stderr)
    if args.json:
        write_json(args.json, {**report, "skipped": skipped})
    return 0 if all(r["passed"] for r in report["rows"]) else 1  # skipped inputs are said, not a failed row


def cmd_bench(args: argparse.Namespace) -> int:
    from ..comparison.bench import markdown, plot_png, run_bench

    combos = _combos(args.backends, args.precisions)
    report = run_bench(
        args.model,
        combos,
        args.size,
        Path(args.cache),
        args.warmup,
        args.repeats,
        args.int8_model,
        args.torch_device,
        args.top if args.profile else 0,
    )
    print(markdown(report))
    if args.json:
        write_json(args.json, report)
    if args.plot:
        print(f"plot: {plot_png(report, args.plot)}")
    return 1 if any("failed" in r for r in report["rows"]) else 0


def add_row_options(p: argparse.ArgumentParser) -> None:
    """The options ``parity`` and ``bench`` share: which model, backends and precisions make the rows."""
    p.add_argument("--model", default="default")
    backends = list(BACKEND_NAMES)
    p.add_argument(
        "--backends",
        nargs="+",
        default=["torch", "onnxruntime", "openvino"],
        action=list_of(backends),
        metavar="BACKEND",
        help=f"{', '.join(backends)} (space or comma separated)",
    )
    precisions = list(RUN_PRECISIONS)
    p.add_argument(
        "--precisions",
        nargs="+",
        default=["fp32"],
        action=list_of(precisions),
        metavar="PRECISION",
        help=f"{', '.join(precisions)} (space or comma separated)",
    )
    p.add_argument("--cache", default="out/artifacts", help="where exported artifacts are kept")
    p.add_argument(
        "--int8-model",
        help="quantized checkpoint for int8 rows (default: the shipped INT8 version of --model)",
    )
    p.add_argument(
        "--torch-device",
        default="cpu",
        choices=["cpu", "cuda"],
        help="device of the torch rows (with cuda, torch fp32 gets a CUDA row; parity's reference stays "
        "PyTorch FP32 on the CPU)",
    )


def _add_parity(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "parity",
        help="compare every backend x precision with PyTorch FP32 on real degraded images",
        description="Run the same degraded images (plus one >= 1024 px) through each backend and precision, "
        "exporting what is needed into --cache, and compare with PyTorch FP32 and the clean targets. Budgets: "
        "FP32 >= 50 dB and FP16/BF16 >= 40 dB vs PyTorch, INT8 <= 0.3 dB loss vs target. Exit 1 if a row fails.",
    )
    add_row_options(p)
    p.add_argument("--pairs", nargs=2, metavar=("INPUT_DIR", "TARGET_DIR"))
    p.add_argument("--clean", help="clean photos degraded with --tasks (fixed seeds)")
    p.add_argument("--tasks", nargs="+", default=["denoise_25"], choices=sorted(TASK_NAMES), metavar="TASK")
    p.add_argument("--limit", type=positive(int), default=3, help="images per folder (default 3)")
    p.add_argument("--json", help="write {reference, rows} JSON here")
    p.set_defaults(func=cmd_parity)


def _add_bench(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="latency, throughput and memory per backend x precision x size",
        description="Benchmark each backend and precision at each size, every row in a fresh process and all "
        "rows in one run (compare ratios, not absolute numbers, on a shared machine).",
    )
    add_row_options(p)
    p.add_argument(
        "--size",
        type=lambda t: sizes(t, 8),
        default=[(512, 512)],
        help="HxW list of multiples of 8 (the network's input), e.g. 512x512,1024x1024",
    )
    p.add_argument("--warmup", type=non_negative(int), default=2)
    p.add_argument("--repeats", type=positive(int), default=10)
    p.add_argument(
        "--profile",
        action="store_true",
        help="after timing, profile each row with its runtime's own profiler (OpenVINO PERF_COUNT with the "
        "kernel of each layer, ONNX Runtime's profiler, the PyTorch profiler): where the time goes on this machine",
    )
    p.add_argument(
        "--top", type=positive(int), default=12, help="operation types and layers listed per profile (default 12)"
    )
    p.add_argument("--json", help="write the rows (and profiles) as JSON here")
    p.add_argument("--plot", type=file_with_suffix(".png"), help="write a latency bar chart (PNG) here")
    p.set_defaults(func=cmd_bench)


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """This group's subcommands."""
    _add_parity(sub)
    _add_bench(sub)
