"""The ``baryir`` command: parses arguments and calls into the packages."""

from __future__ import annotations

import argparse
import json
import logging
import pickle
import sys
from pathlib import Path

from .data.tasks import TASK_NAMES, THREE_TASK
from .formats import BACKEND_NAMES, FORMATS

#: The per-format export options (argparse dests), from the format table.
EXPORT_OPTIONS = tuple(name for f in FORMATS.values() for name in f.options)

log = logging.getLogger("baryir")


def _write_json(path: str, obj: object) -> None:
    from .io.atomic import atomic_write

    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(obj, indent=2) + "\n"))


# ---------------------------------------------------------------------------- info
def cmd_info(args: argparse.Namespace) -> int:
    from .checkpoints import build_model, load_model
    from .model import CONFIGS
    from .model.complexity import count_gmacs, count_parameters, cpu_latency_ms

    is_config = args.model in CONFIGS or args.model.endswith(".json")
    model = build_model(args.model) if is_config else load_model(args.model)
    h, w = args.size
    info = {
        "model": args.model,
        "config": model.config.to_dict(),
        "parameters": count_parameters(model),
        "gmacs": round(count_gmacs(model, h, w), 3),
        "size": [h, w],
    }
    if args.latency:
        info["cpu_latency_ms"] = round(cpu_latency_ms(model, h, w), 1)
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        print(f"model       {args.model}")
        for key, value in info["config"].items():
            print(f"  {key:<22}{value}")
        print(f"parameters  {info['parameters']:,} ({info['parameters'] / 1e6:.3f} M)")
        print(f"GMACs       {info['gmacs']} at {h}x{w}")
        if args.latency:
            print(f"CPU latency {info['cpu_latency_ms']} ms (eager FP32, batch 1)")
    return 0


# ---------------------------------------------------------------------------- convert-official
def cmd_convert_official(args: argparse.Namespace) -> int:
    from .checkpoints import (
        model_from_state_dict,
        potentials_from_state_dict,
        read_official,
        save_model,
        save_potentials,
    )
    from .io.atomic import refuse_overwriting_inputs

    refuse_overwriting_inputs([args.checkpoint], [args.output, args.potentials])
    model_state, pots_state, extra = read_official(args.checkpoint)
    try:
        model = model_from_state_dict(model_state)
    except ValueError as e:
        raise ValueError(f"{args.checkpoint}: {e}") from None
    out = save_model(model, args.output, {"source": Path(args.checkpoint).name, **extra})
    print(f"wrote {out} ({model.config.dim=}, {sum(p.numel() for p in model.parameters()):,} parameters)")
    if args.potentials:
        if pots_state is None:
            print(f"error: {args.checkpoint} holds no potentials ('Pots')", file=sys.stderr)
            return 2
        print(f"wrote {save_potentials(potentials_from_state_dict(pots_state), args.potentials)}")
    return 0


# ---------------------------------------------------------------------------- train
def _validation_items(args: argparse.Namespace):
    from .evaluate import paired_items, synthetic_items

    if args.val_pairs:
        return paired_items(*args.val_pairs, limit=args.val_limit)
    if args.val_clean:
        return synthetic_items(args.val_clean, args.val_tasks, limit=args.val_limit)
    return []


def cmd_train(args: argparse.Namespace) -> int:
    from .losses import BaryLossWeights
    from .train import TrainOptions, train

    opts = TrainOptions(
        data=args.data,
        out=args.out,
        tasks=args.tasks,
        config=args.config,
        init=args.init,
        loss=args.loss,
        steps=args.steps,
        batch_size=args.batch_size,
        patch_size=args.patch_size,
        content_haze=args.content_haze,
        lr=args.lr,
        pots_lr=args.pots_lr,
        optimizer=args.optimizer,
        schedule=args.schedule,
        warmup=args.warmup,
        weights=BaryLossWeights(l1=args.l1_weight, structure=args.structure_weight, congruence=args.congruence_weight),
        precision=args.precision,
        device=args.device,
        seed=args.seed,
        ema=args.ema,
        workers=args.workers,
        val_every=args.val_every,
        ckpt_every=args.ckpt_every,
        resume=args.resume,
        compile=args.compile,
        progress=not args.no_progress,
    )
    summary = train(opts, _validation_items(args))
    print(json.dumps({k: summary[k] for k in ("steps", "seconds", "device", "validation")}, indent=2))
    return 0


# ---------------------------------------------------------------------------- eval
def cmd_eval(args: argparse.Namespace) -> int:
    import torch

    from .checkpoints import load_model, resolve_model_path
    from .evaluate import evaluate, markdown_table, paired_items, synthetic_items
    from .inference import restore_tensor

    if not args.pairs and not args.clean:
        print("error: give --pairs INPUT_DIR TARGET_DIR and/or --clean DIR --tasks ...", file=sys.stderr)
        return 2
    from baryir.quantize.checkpoint import is_quantized, load_quantized

    quantized = is_quantized(args.model)
    # a quantized checkpoint runs as NNCF's fake-quantized PyTorch model (INT8 runtimes: baryir parity)
    if quantized and args.device != "cpu":
        print(
            f"error: {args.model} is quantized: it evaluates as NNCF's fake-quantized model on the CPU; "
            "use --device cpu",
            file=sys.stderr,
        )
        return 2
    if args.device.startswith("cuda"):  # true FP32, as on the CPU (PyTorch lets cuDNN use TF32 by default)
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    from .inference import torch_device

    model = load_quantized(args.model) if quantized else load_model(args.model, torch_device(args.device))
    items = []
    if args.pairs:
        items += paired_items(*args.pairs, task=args.pairs_task, limit=args.limit)
    if args.clean:
        items += synthetic_items(args.clean, args.tasks, limit=args.limit)
    from .io.atomic import refuse_overwriting_inputs

    refuse_overwriting_inputs([resolve_model_path(args.model)], [args.json])
    rows = evaluate(lambda img: restore_tensor(model, img), items, progress=not args.no_progress)
    print(markdown_table(rows))
    if args.json:
        backend = "torch-fake-quant-int8" if quantized else "torch"
        _write_json(args.json, {"model": str(args.model), "backend": backend, "device": args.device, "results": rows})
    return 0


# ---------------------------------------------------------------------------- demo
def cmd_demo(args: argparse.Namespace) -> int:
    from .checkpoints import load_model
    from .data.images import EXAMPLES_DIR, comparison_grid, list_images, read_rgb, write_png
    from .inference import restore_tensor

    model = load_model(args.model)
    out = Path(args.out)
    rows = []
    for path in list_images(EXAMPLES_DIR):
        degraded = read_rgb(path)
        restored = restore_tensor(model, degraded)
        print(f"restored {path.name} -> {write_png(restored, out / path.name)}")
        rows.append([degraded, restored])
    print(f"side by side (input | restored): {write_png(comparison_grid(rows), out / 'comparison.png')}")
    return 0


# ---------------------------------------------------------------------------- export
def cmd_export(args: argparse.Namespace) -> int:
    from baryir.export.api import ExportValidationError, export_model
    from baryir.export.common import DEFAULT_SHAPES

    try:
        results = export_model(
            args.model,
            args.format,
            args.precision,
            args.out,
            shapes=tuple(args.shapes or DEFAULT_SHAPES),
            validate=not args.no_validate,
            large=args.validate_large,
            **{k: getattr(args, k) for k in EXPORT_OPTIONS if getattr(args, k) is not None},
        )
    except ExportValidationError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print("| format | precision | folder | MB | seconds | worst max abs | worst PSNR vs torch |")
    print("|---|---|---|---:|---:|---:|---:|")
    for r in results:
        rows = r.get("validation", [])
        worst_abs = max((v["max_abs"] for v in rows), default=float("nan"))
        worst_psnr = min((v["psnr"] for v in rows), default=float("nan"))
        checked = f"{worst_abs:.2e} | {worst_psnr:.1f}" if rows else "not validated here | -"
        print(
            f"| {r['format']} | {r['precision']} | {r['folder']} | {r['artifact_bytes'] / 1e6:.2f} "
            f"| {r['export_seconds']} | {checked} |"
        )
        if r.get("validation_note"):
            print(f"  note: {r['validation_note']}")
        if r.get("engine_built") is False:
            print(f"  note: engine not built here ({r['reason']})")
    if args.json:
        _write_json(args.json, results)
    return 0


# ---------------------------------------------------------------------------- quantize
def cmd_quantize(args: argparse.Namespace) -> int:
    from baryir.quantize.api import QuantizeOptions, run_quantize

    opts = QuantizeOptions(
        model=args.model,
        data=args.data,
        out=args.out,
        method=args.method,
        tasks=args.tasks,
        ignored=args.ignored,
        calib_samples=args.calib_samples,
        calib_patch=args.calib_patch,
        steps=args.steps,
        lr=args.lr,
        batch_size=args.batch_size,
        patch_size=args.patch_size,
        content_haze=args.content_haze,
        loss=args.loss,
        distill=args.distill,
        device=args.device,
        seed=args.seed,
        workers=args.workers,
        ckpt_every=args.ckpt_every,
        val_every=args.val_every,
        resume=args.resume,
        progress=not args.no_progress,
    )
    path = run_quantize(opts, _validation_items(args))
    print(f"quantized model: {path}")
    print(f"export it with: baryir export --model {path} --format onnx,openvino --precision int8")
    return 0


# ---------------------------------------------------------------------------- restore
def cmd_restore(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from baryir.runtimes import Tiling, load_runner
    from baryir.runtimes.loader import model_dim
    from baryir.runtimes.restore import expand_inputs, plan_outputs, restore_file

    paths, skipped = expand_inputs(args.inputs)
    for path in skipped:
        print(f"skipped {path}: not an image suffix", file=sys.stderr)
    if not paths:
        print("error: no input images matched", file=sys.stderr)
        return 2
    suffix = f".{args.format}" if args.format else None
    jobs, refused = plan_outputs(paths, Path(args.out), suffix, args.suffix)
    for result in refused:
        print(f"error: {result.input}: {result.error}", file=sys.stderr)
    tiling = Tiling(args.tile, args.overlap) if args.tile else None
    failures = len(refused)
    if jobs:
        runner = load_runner(args.model, args.backend, args.device, args.precision, verify=not args.no_verify)
        info = runner.info
        print(f"backend {info.backend} on {info.device} at {info.precision} ({info.artifact})", file=sys.stderr)
        auto = (model_dim(args.model), args.memory_mb)
        for path, out_path in tqdm(jobs, desc="restore", unit="img", disable=args.no_progress):
            result = restore_file(runner, path, out_path, tiling, auto)
            if result.error:
                failures += 1
                tqdm.write(f"error: {result.input}: {result.error}", file=sys.stderr)
            for note in result.notes:
                tqdm.write(f"note: {result.input}: {note}", file=sys.stderr)
    print(f"restored {len(paths) - failures} of {len(paths)} image(s) into {args.out}", file=sys.stderr)
    return 1 if failures else 0


# ---------------------------------------------------------------------------- verify
def cmd_verify(args: argparse.Namespace) -> int:
    from baryir.runtimes import load_runner
    from baryir.runtimes.verify import artifact_folder, verify_runner

    results = []
    for artifact in args.artifacts:
        folder = artifact_folder(artifact)
        if folder is None:
            print(f"error: {artifact}: not an export folder (needs manifest.json and golden.npz)", file=sys.stderr)
            results.append({"artifact": artifact, "passed": False, "failures": ["not an export folder"]})
            continue
        try:
            runner = load_runner(folder, args.backend, args.device, verify=False)
        except (ImportError, ValueError, RuntimeError, OSError) as e:
            print(f"error: {artifact}: cannot run here ({e})", file=sys.stderr)
            results.append({"artifact": artifact, "passed": False, "failures": [f"cannot run here: {e}"]})
            continue
        with runner:
            results.append(verify_runner(runner, folder))
    print("| artifact | backend | device | runs at | PSNR vs PyTorch | max abs | tolerance | result |")
    print("|---|---|---|---|---:|---:|---|---|")
    for r in results:
        if "psnr" not in r:
            print(f"| {r['artifact']} | | | | | | | FAILED: {r['failures'][0]} |")
            continue
        verdict = "pass" if r["passed"] else f"FAILED: {'; '.join(r['failures'])}: {r['cause']}"
        print(
            f"| {r['artifact']} | {r['backend']} | {r['device']} | {r['runs_at']} | {r['psnr']:.1f} "
            f"| {r['max_abs']:.2e} | {', '.join(f'{k} {v:g}' for k, v in r['tolerance'].items())} | {verdict} |"
        )
    if args.json:
        _write_json(args.json, results)
    return 0 if all(r["passed"] for r in results) else 1


# ---------------------------------------------------------------------------- parity / bench
def _combos(backends: list[str], precisions: list[str]) -> list[tuple[str, str]]:
    return [(b, p) for b in backends for p in precisions]


def cmd_parity(args: argparse.Namespace) -> int:
    from .comparison.parity import Combo, large_item, markdown, run_parity
    from .evaluate import paired_items, synthetic_items

    if not args.pairs and not args.clean:
        print("error: give --pairs INPUT_DIR TARGET_DIR or --clean DIR --tasks ...", file=sys.stderr)
        return 2
    items = paired_items(*args.pairs, limit=args.limit) if args.pairs else []
    if args.clean:
        items += synthetic_items(args.clean, args.tasks, limit=args.limit)
    items.append(large_item(items[0]))
    combos = [Combo(b, p) for b, p in _combos(args.backends, args.precisions)]
    report = run_parity(
        args.model, items, combos, Path(args.cache), int8_model=args.int8_model, torch_device=args.torch_device
    )
    print(markdown(report))
    if args.json:
        _write_json(args.json, report)
    return 0 if all(r["passed"] for r in report["rows"]) else 1


def cmd_bench(args: argparse.Namespace) -> int:
    from .comparison.bench import markdown, plot_png, run_bench

    combos = _combos(args.backends, args.precisions)
    report = run_bench(
        args.model, combos, args.size, Path(args.cache), args.warmup, args.repeats, args.int8_model, args.torch_device
    )
    print(markdown(report))
    if args.json:
        _write_json(args.json, report)
    if args.plot:
        print(f"plot: {plot_png(report, args.plot)}")
    return 1 if any("failed" in r for r in report["rows"]) else 0


# ---------------------------------------------------------------------------- parser
def _size(text: str, multiple: int = 1) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 256x256, got {text!r}") from None
    if h < 1 or w < 1 or h % multiple or w % multiple:
        what = "positive" if multiple == 1 else f"positive multiples of {multiple}"
        raise argparse.ArgumentTypeError(f"height and width must be {what}, got {text!r}")
    return h, w


def _sizes(text: str, multiple: int = 1) -> list[tuple[int, int]]:
    return [_size(v, multiple) for v in text.split(",")]


def _positive(kind: type) -> object:
    def parse(text: str) -> float | int:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text!r}")
        return value

    return parse


def _list_of(choices: list[str]) -> type[argparse.Action]:
    """An ``nargs="+"`` action that also takes comma lists (``torch,onnxruntime`` or ``torch onnxruntime``)."""

    class ListAction(argparse.Action):
        def __call__(self, parser, namespace, values, option_string=None):
            items = [item for value in values for item in value.split(",") if item]
            wrong = [item for item in items if item not in choices]
            if wrong:
                allowed = ", ".join(choices)
                parser.error(f"argument {option_string}: invalid choice {wrong[0]!r} (choose from {allowed})")
            setattr(namespace, self.dest, items)

    return ListAction


def _add_row_options(p: argparse.ArgumentParser) -> None:
    """The options ``parity`` and ``bench`` share: which model, backends and precisions make the rows."""
    p.add_argument("--model", default="default")
    backends = list(BACKEND_NAMES)
    p.add_argument(
        "--backends",
        nargs="+",
        default=["torch", "onnxruntime", "openvino"],
        action=_list_of(backends),
        metavar="BACKEND",
        help=f"{', '.join(backends)} (space or comma separated)",
    )
    precisions = ["fp32", "fp16", "bf16", "int8"]
    p.add_argument(
        "--precisions",
        nargs="+",
        default=["fp32"],
        action=_list_of(precisions),
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="baryir",
        description="BaryIR all-in-one image restoration: inspect, convert, train and evaluate models.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "info",
        help="config, parameter count and GMACs of a model",
        description="Show a model's config, parameters and GMACs. MODEL is a config name "
        "(paper, small, mobile, nano), a config JSON file (see train --config), a shipped name "
        "(default) or a model file.",
    )
    p.add_argument("model", metavar="MODEL")
    p.add_argument("--size", type=_size, default=(256, 256), help="input size HxW for GMACs (default 256x256)")
    p.add_argument("--latency", action="store_true", help="also time one eager FP32 CPU forward pass")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser(
        "convert-official",
        help="convert a published BaryIR checkpoint to safetensors",
        description="Read a published checkpoint ({'epoch', 'BaryIR', 'Pots'} with pickled "
        "modules) or a plain state dict without executing code from it (allowlisted "
        "unpickler), and write safetensors with the inferred config.",
    )
    p.add_argument("checkpoint", metavar="CKPT")
    p.add_argument("-o", "--output", required=True, help="output .safetensors for the network")
    p.add_argument("--potentials", help="also write the Kantorovich potentials to this .safetensors")
    p.set_defaults(func=cmd_convert_official)

    p = sub.add_parser(
        "train",
        help="train BaryIR (barycenter min-max game or the L1 ablation)",
        description="Train on synthetic degradations of clean photos and/or the published "
        "data/Train layout. Runs data-parallel under torchrun.",
    )
    p.add_argument("--data", nargs="+", required=True, help="folders of clean photos or published Train/ roots")
    p.add_argument(
        "--tasks",
        nargs="+",
        default=list(THREE_TASK),
        choices=sorted(TASK_NAMES),
        metavar="TASK",
        help=f"task mix (default: the paper's 3-task setting {' '.join(THREE_TASK)})",
    )
    p.add_argument("-o", "--out", required=True, help="run folder (weights, state, metrics)")
    p.add_argument(
        "--config",
        default="mobile",
        help="config to train from scratch: a name (default mobile) or a JSON file of fields, "
        'e.g. {"base": "mobile", "widths": [16, 32, 64, 96], "num_blocks": [2, 3, 4, 1]}',
    )
    p.add_argument("--init", help="start from these weights instead (fine-tuning)")
    p.add_argument("--loss", choices=["bary", "l1"], default="bary", help="bary: the paper; l1: ablation")
    p.add_argument("--steps", type=int, default=10000)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--patch-size", type=int, default=128)
    p.add_argument(
        "--content-haze",
        type=float,
        default=0.0,
        metavar="P",
        help="share of non-haze samples whose scene (input and target) is mildly hazy, so that rain or "
        "noise on a misty photo is not taken for a haze task (default 0: the published data; the "
        "shipped model used 0.3)",
    )
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--pots-lr", type=float, help="potentials' learning rate (default: --lr)")
    p.add_argument("--optimizer", choices=["adamw", "rmsprop"], default="adamw", help="rmsprop is the published one")
    p.add_argument("--schedule", choices=["cosine", "step", "constant"], default="cosine")
    p.add_argument("--warmup", type=int, default=200, help="linear warm-up steps")
    p.add_argument("--l1-weight", type=float, default=10000.0, help="Sigma, the L1 weight (published 10000)")
    p.add_argument("--structure-weight", type=float, default=0.05, help="weight of orthogonality + contrastive")
    p.add_argument("--congruence-weight", type=float, default=10.0, help="potentials' congruence penalty")
    p.add_argument(
        "--precision",
        choices=["auto", "fp32", "bf16"],
        default="auto",
        help="autocast precision (auto: bf16 on CUDA, fp32 on CPU)",
    )
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (~2x faster after warm-up)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--ema",
        type=float,
        default=0.0,
        metavar="DECAY",
        help="also keep an exponential moving average of the weights (e.g. 0.999), written to "
        "model_ema.safetensors and validated beside the trained weights (default 0: off)",
    )
    p.add_argument("--workers", type=int, default=2, help="data loader processes")
    p.add_argument("--val-pairs", nargs=2, metavar=("INPUT_DIR", "TARGET_DIR"), help="validation pairs")
    p.add_argument("--val-clean", help="validation clean photos (degraded with --val-tasks)")
    p.add_argument("--val-tasks", nargs="+", default=["denoise_25"], metavar="TASK")
    p.add_argument("--val-limit", type=int, default=4, help="validation images per task")
    p.add_argument("--val-every", type=int, default=500)
    p.add_argument("--ckpt-every", type=int, default=500)
    p.add_argument("--resume", action="store_true", help="continue the run in --out exactly where it stopped")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "eval",
        help="PSNR/SSIM with the papers' protocol",
        description="Evaluate on paired folders (matched by base name) and/or on clean photos "
        "degraded with a fixed per-image seed. RGB, [0, 1], data range 1, no shave.",
    )
    p.add_argument("--model", default="default", help="shipped name or weights file (default: default)")
    p.add_argument("--pairs", nargs=2, metavar=("INPUT_DIR", "TARGET_DIR"))
    p.add_argument("--pairs-task", default="paired", help="task label for --pairs rows (e.g. derain)")
    p.add_argument("--clean", help="folder of clean photos to degrade with --tasks")
    p.add_argument("--tasks", nargs="+", default=["denoise_25"], choices=sorted(TASK_NAMES), metavar="TASK")
    p.add_argument("--limit", type=int, help="at most this many images per folder")
    p.add_argument(
        "--device",
        default="cpu",
        help="run the model here: cpu (default, the numbers in docs/) or cuda (FP32; cuDNN's TF32 off)",
    )
    p.add_argument("--json", help="write {model, backend, results} JSON here")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser(
        "demo",
        help="restore the bundled example images and write a comparison PNG",
        description="Restore the example images shipped in the package (rain, noise, haze) "
        "and write each result plus comparison.png (input | restored).",
    )
    p.add_argument("--model", default="default", help="shipped name or weights file (default: default)")
    p.add_argument("-o", "--out", default="out/demo", help="output folder (default out/demo)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser(
        "export",
        help="export to ONNX, TensorRT, CoreML and OpenVINO, validated against PyTorch",
        description="Export a model to deployable artifacts, one folder per format and precision "
        "(OUT/<format>-<precision>/) with manifest.json and golden.npz. Every artifact is validated against "
        "PyTorch FP32 before it is written (FP32: max abs error <= 1e-4; FP16: >= 40 dB).",
    )
    p.add_argument("--model", default="default", help="shipped name or weights file (default: default)")
    p.add_argument("--format", default="onnx", help=f"comma list of {', '.join(FORMATS)}, or all")
    p.add_argument("--precision", default="fp32", help="comma list of fp32, fp16, int8")
    p.add_argument(
        "--shapes",
        type=_sizes,
        default=None,
        help="HxW list: CoreML enumerated sizes and the TensorRT profile (min/max cover them, opt is the first); "
        "default 256x256,480x640,720x1280,1080x1920",
    )
    # Per-format options: None when not given, so that one given without its format is an error;
    # their defaults live in baryir.formats.FORMATS.
    p.add_argument(
        "--coreml-io",
        choices=["image", "tensor"],
        help="CoreML only. image (default): CVPixelBuffer in/out for camera apps; tensor: float MLMultiArray",
    )
    p.add_argument(
        "--coreml-flexible",
        choices=["enumerated", "range"],
        help="CoreML only. enumerated (default) shapes run on the Neural Engine; range shapes fall back to GPU/CPU",
    )
    p.add_argument(
        "--coreml-weights",
        choices=["float", "int8", "pal6", "pal4"],
        help="CoreML only. Weight compression: float (default), int8 linear or 6/4-bit palettes "
        "(smaller app, same speed on the ANE)",
    )
    p.add_argument("--max-batch", type=int, help="TensorRT only. Profile maximum batch (default 1)")
    p.add_argument("--no-validate", action="store_true", help="skip the comparison with PyTorch")
    p.add_argument("--validate-large", action="store_true", help="also validate at 2048x2048 (slow on CPU)")
    p.add_argument("-o", "--out", required=True, help="output folder")
    p.add_argument("--json", help="write the results (manifests) as JSON here")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser(
        "restore",
        help="restore image files with any backend",
        description="Restore files, folders and globs (PNG/JPEG/TIFF/BMP/WebP). Outputs keep the input's name and "
        "format, bit depth, alpha and ICC profile; EXIF orientation is applied. Bad inputs are reported and "
        "skipped; the exit code is 1 if any failed.",
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT")
    p.add_argument("-o", "--out", required=True, help="output folder (never the inputs' own files)")
    p.add_argument("--model", default="default", help="default, a checkpoint, or an exported artifact/folder")
    p.add_argument("--backend", default="auto", choices=["auto", *BACKEND_NAMES])
    p.add_argument("--device", help="cpu/cuda (torch), cpu/cuda/tensorrt/coreml (onnxruntime), CPU/GPU/NPU (openvino)")
    p.add_argument("--precision", help="fp32/fp16/bf16 where the backend can choose (default: the artifact's)")
    p.add_argument(
        "--tile",
        type=int,
        help="tile size (multiple of 8); default: tile only images whose activations exceed --memory-mb",
    )
    p.add_argument("--memory-mb", type=_positive(float), default=1024, help="activation memory budget for auto tiling")
    p.add_argument(
        "--suffix",
        default="",
        help="append this to each output's name (photo.png -> photo_restored.png with _restored), e.g. to "
        "write into the inputs' own folder; outputs never replace inputs",
    )
    p.add_argument("--overlap", type=int, default=32, help="tile overlap in pixels, feathered (default 32)")
    p.add_argument("--format", choices=["png", "jpg", "tif", "bmp", "webp"], help="write this format instead")
    p.add_argument(
        "--no-verify",
        action="store_true",
        help="skip the artifact's check against its golden.npz at load (done once per artifact and machine)",
    )
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_restore)

    p = sub.add_parser(
        "verify",
        help="check exported artifacts on this machine against their golden.npz",
        description="Run each artifact with its own runtime on this machine, compare its output on the "
        "golden input with PyTorch's (golden.npz) and judge it by the tolerance in its manifest. Prints "
        "PSNR and max abs error vs PyTorch; exit 1 if any artifact fails (the line names the likely cause).",
    )
    p.add_argument("artifacts", nargs="+", metavar="ARTIFACT", help="export folders (or a model file inside one)")
    p.add_argument("--backend", default="auto", help="run with this backend (default: the artifact's)")
    p.add_argument("--device", help="device for the runtime (default: the artifact's)")
    p.add_argument("--json", help="write the results as JSON here")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser(
        "parity",
        help="compare every backend x precision with PyTorch FP32 on real degraded images",
        description="Run the same degraded images (plus one >= 1024 px) through each backend and precision, "
        "exporting what is needed into --cache, and compare with PyTorch FP32 and the clean targets. Budgets: "
        "FP32 >= 50 dB and FP16/BF16 >= 40 dB vs PyTorch, INT8 <= 0.3 dB loss vs target. Exit 1 if a row fails.",
    )
    _add_row_options(p)
    p.add_argument("--pairs", nargs=2, metavar=("INPUT_DIR", "TARGET_DIR"))
    p.add_argument("--clean", help="clean photos degraded with --tasks (fixed seeds)")
    p.add_argument("--tasks", nargs="+", default=["denoise_25"], choices=sorted(TASK_NAMES), metavar="TASK")
    p.add_argument("--limit", type=int, default=3, help="images per folder (default 3)")
    p.add_argument("--json", help="write {reference, rows} JSON here")
    p.set_defaults(func=cmd_parity)

    p = sub.add_parser(
        "bench",
        help="latency, throughput and memory per backend x precision x size",
        description="Benchmark each backend and precision at each size, every row in a fresh process and all "
        "rows in one run (compare ratios, not absolute numbers, on a shared machine).",
    )
    _add_row_options(p)
    p.add_argument(
        "--size",
        type=lambda t: _sizes(t, 8),
        default=[(512, 512)],
        help="HxW list of multiples of 8 (the network's input), e.g. 512x512,1024x1024",
    )
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--json", help="write the rows as JSON here")
    p.add_argument("--plot", help="write a latency bar chart (PNG) here")
    p.set_defaults(func=cmd_bench)

    from baryir.quantize.scheme import DEFAULT_IGNORED, IGNORED_SCOPES

    p = sub.add_parser(
        "quantize",
        help="INT8: NNCF post-training quantization (ptq) or quantization-aware fine-tuning (qat)",
        description="Quantize a model to symmetric signed INT8 (per-channel weights, per-tensor "
        "activations, zero points 0: one scheme for ONNX Runtime, OpenVINO and TensorRT). "
        "ptq calibrates on degraded patches of the task mix; qat starts from ptq and "
        "fine-tunes with the training losses. Writes OUT/model-int8.safetensors, which "
        "`baryir export --precision int8` and `baryir eval` read.",
    )
    p.add_argument("--model", default="default", help="float model to quantize (default: the shipped one)")
    p.add_argument("--method", choices=["ptq", "qat"], default="qat")
    p.add_argument("--data", nargs="+", required=True, help="folders of clean photos or published Train/ roots")
    p.add_argument("--tasks", nargs="+", default=list(THREE_TASK), choices=sorted(TASK_NAMES), metavar="TASK")
    p.add_argument("-o", "--out", required=True, help="output folder")
    p.add_argument(
        "--ignored",
        choices=sorted(IGNORED_SCOPES),
        default=DEFAULT_IGNORED,
        help=f"ops kept in floating point (default {DEFAULT_IGNORED}, chosen by the ablation in docs/quantization.md)",
    )
    p.add_argument("--calib-samples", type=int, default=256, help="calibration patches (default 256)")
    p.add_argument("--calib-patch", type=int, default=128, help="calibration patch size (default 128)")
    p.add_argument("--steps", type=int, default=360, help="QAT steps (default 360, the shipped INT8 model's)")
    p.add_argument("--lr", type=float, default=1e-4, help="QAT learning rate (default 1e-4; 2e-5 was worse than PTQ)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--patch-size", type=int, default=128)
    p.add_argument(
        "--content-haze",
        type=float,
        default=0.3,
        metavar="P",
        help="as in `baryir train` (default 0.3, the shipped model's training data)",
    )
    p.add_argument("--loss", choices=["bary", "l1"], default="bary", help="QAT loss (default: the training losses)")
    p.add_argument(
        "--distill", type=float, default=1.0, help="weight of L1 to the FP32 model's output (default 1; 0: off)"
    )
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=1, help="data loader processes")
    p.add_argument("--ckpt-every", type=int, default=50)
    p.add_argument("--val-every", type=int, default=100)
    p.add_argument("--val-pairs", nargs=2, metavar=("INPUT_DIR", "TARGET_DIR"), help="validation pairs")
    p.add_argument("--val-clean", help="validation clean photos (degraded with --val-tasks)")
    p.add_argument("--val-tasks", nargs="+", default=["denoise_25"], metavar="TASK")
    p.add_argument("--val-limit", type=int, default=4)
    p.add_argument("--resume", action="store_true", help="continue the QAT run in --out")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_quantize)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command. Errors are one line (``error: <file or option>: <reason>``) with exit 2,
    1 when some inputs of a batch failed, 128 + N after signal N (130 on Ctrl-C)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s: %(message)s")
    from .signals import TrainingStopped

    try:
        return args.func(args)
    except TrainingStopped as e:
        print(e, file=sys.stderr)
        return 128 + e.signum  # the shell's convention for a process ended by a signal
    except KeyboardInterrupt:
        if args.debug:
            raise
        print("interrupted (Ctrl-C); outputs already written are complete, nothing is half-written", file=sys.stderr)
        return 130
    except (FileNotFoundError, ValueError, ImportError, pickle.UnpicklingError, OSError) as e:
        if args.debug:
            raise
        if isinstance(e, ModuleNotFoundError) and e.name == "torch":
            print(f"error: baryir {args.command} needs PyTorch: pip install 'baryir[torch]'", file=sys.stderr)
            return 2
        if isinstance(e, OSError) and e.strerror:  # "FILE: reason", not Python's "[Errno 2] ...: 'FILE'"
            print(f"error: {f'{e.filename}: ' if e.filename else ''}{e.strerror}", file=sys.stderr)
        else:
            print(f"error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # a bug or an unforeseen input: still one line, the traceback on --debug
        if args.debug:
            raise
        print(f"error: {type(e).__name__}: {e} (run with --debug for the traceback)", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
