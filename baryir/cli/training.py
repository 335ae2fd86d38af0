"""Commands that train and judge models: ``train``, ``eval`` and ``quantize``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from baryir.data.tasks import TASK_NAMES
from baryir.formats import BACKEND_NAMES, RUN_PRECISIONS
from baryir.options import BaryLossWeights, TrainOptions
from baryir.quantize.options import QuantizeOptions
from baryir.quantize.scheme import IGNORED_SCOPES, MODEL_TYPES, TARGET_DEVICES

from .common import (
    add_validation_options,
    field_defaults,
    non_negative,
    options_from,
    patch_side,
    positive,
    unit_interval,
    validation_items,
    write_json,
)

if TYPE_CHECKING:
    from ..evaluate import Restore

#: Defaults of every option live once, in the options dataclasses.
T, W, Q = field_defaults(TrainOptions), field_defaults(BaryLossWeights), field_defaults(QuantizeOptions)


def cmd_train(args: argparse.Namespace) -> int:
    from ..train import train

    weights = BaryLossWeights(l1=args.l1_weight, structure=args.structure_weight, congruence=args.congruence_weight)
    opts = options_from(TrainOptions, args, weights=weights, progress=not args.no_progress)
    summary = train(opts, validation_items(args))
    print(json.dumps({k: summary[k] for k in ("steps", "seconds", "device", "validation")}, indent=2))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    if not args.pairs and not args.clean:
        print("error: give --pairs INPUT_DIR TARGET_DIR and/or --clean DIR --tasks ...", file=sys.stderr)
        return 2
    from ..evaluate import evaluate, markdown_table, paired_items, synthetic_items

    if args.backend != "torch" and args.device != "cpu":
        print(f"error: --device applies to --backend torch; {args.backend} picks its own device", file=sys.stderr)
        return 2
    restore, where = _torch_restore(args) if args.backend == "torch" else _runner_restore(args)
    if restore is None:
        return 2
    items, skipped = [], []
    if args.pairs:
        items += paired_items(*args.pairs, task=args.pairs_task, limit=args.limit, skipped=skipped)
    if args.clean:
        items += synthetic_items(args.clean, args.tasks, limit=args.limit, skipped=skipped)
    if not items:
        print("error: no image could be read; see the skipped files above", file=sys.stderr)
        return 2
    from ..checkpoints import resolve_model_path
    from ..io.atomic import refuse_overwriting_inputs

    refuse_overwriting_inputs([resolve_model_path(args.model), args.int8_model, where["artifact"]], [args.json])
    print(f"running on {where['backend']} {where['device']} at {where['runs_at']}", file=sys.stderr)
    rows = evaluate(restore, items, progress=not args.no_progress)
    print(markdown_table(rows))
    if skipped:
        print(f"skipped {len(skipped)} file(s) or pair(s) (named above); the table is over the rest", file=sys.stderr)
    if args.json:
        write_json(args.json, {"model": str(args.model), **where, "results": rows, "skipped": skipped})
    return 1 if skipped else 0


def _torch_restore(args: argparse.Namespace) -> tuple[Restore | None, dict]:
    """The model in PyTorch (a quantized checkpoint as NNCF's fake-quantized model)."""
    import torch

    from baryir.quantize.checkpoint import is_quantized, load_quantized

    from ..checkpoints import load_model, resolve_model_path
    from ..inference import restore_tensor, torch_device

    quantized = is_quantized(args.model)
    if quantized and args.device != "cpu":
        print(
            f"error: {args.model} is quantized: it evaluates as NNCF's fake-quantized model on the CPU; "
            "use --device cpu, or --backend onnxruntime/openvino --precision int8 for an INT8 runtime",
            file=sys.stderr,
        )
        return None, {}
    if args.precision != "fp32":
        print("error: --backend torch evaluates in FP32; pick a runtime backend for --precision", file=sys.stderr)
        return None, {}
    if args.device.startswith("cuda"):  # true FP32, as on the CPU (PyTorch lets cuDNN use TF32 by default)
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    model = load_quantized(args.model) if quantized else load_model(args.model, torch_device(args.device))
    backend = "torch-fake-quant-int8" if quantized else "torch"
    artifact = str(resolve_model_path(args.model))
    where = {"backend": backend, "device": args.device, "runs_at": "fp32", "artifact": artifact}
    return (lambda img: restore_tensor(model, img)), where


def _runner_restore(args: argparse.Namespace) -> tuple[Restore, dict]:
    """The model exported for ``--backend`` (into ``--cache``, reused while the weights are
    unchanged) and run by that runtime; device and precision are read back from the runner."""
    from ..comparison.parity import artifact_for, open_runner, runner_restore

    artifact = artifact_for(args.model, args.backend, args.precision, Path(args.cache), args.int8_model)
    runner = open_runner(artifact, args.backend, args.precision)
    info = runner.info
    where = {"backend": info.backend, "device": info.device, "runs_at": info.precision, "artifact": info.artifact}
    return runner_restore(runner), where


def cmd_quantize(args: argparse.Namespace) -> int:
    from baryir.quantize.api import run_quantize

    path = run_quantize(options_from(QuantizeOptions, args, progress=not args.no_progress), validation_items(args))
    print(f"quantized model: {path}")
    print(f"export it with: baryir export --model {path} --format onnx,openvino --precision int8")
    return 0


def _add_train(sub: argparse._SubParsersAction) -> None:
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
        default=T.tasks,
        choices=sorted(TASK_NAMES),
        metavar="TASK",
        help=f"task mix (default: the paper's 3-task setting {' '.join(T.tasks)})",
    )
    p.add_argument("-o", "--out", required=True, help="run folder (weights, state, metrics)")
    p.add_argument(
        "--config",
        default=T.config,
        help=f"config to train from scratch: a name (default {T.config}) or a JSON file of fields, "
        'e.g. {"base": "mobile", "widths": [16, 32, 64, 96], "num_blocks": [2, 3, 4, 1]}',
    )
    p.add_argument("--init", help="start from these weights instead (fine-tuning)")
    p.add_argument("--loss", choices=["bary", "l1"], default=T.loss, help="bary: the paper; l1: ablation")
    p.add_argument("--steps", type=positive(int), default=T.steps, help=f"default {T.steps}")
    p.add_argument("--batch-size", type=positive(int), default=T.batch_size, help=f"default {T.batch_size}")
    p.add_argument("--patch-size", type=patch_side, default=T.patch_size, help=f"default {T.patch_size}")
    p.add_argument(
        "--content-haze",
        type=unit_interval(),
        default=T.content_haze,
        metavar="P",
        help="share of non-haze samples whose scene (input and target) is mildly hazy, so that rain or "
        f"noise on a misty photo is not taken for a haze task (default {T.content_haze}: the published data; "
        "the shipped model used 0.3)",
    )
    p.add_argument(
        "--content-variety",
        type=unit_interval(),
        default=T.content_variety,
        metavar="P",
        help="share of samples whose photo (input and target) first gets a condition the model should keep: "
        f"soft focus, shake, JPEG, exposure, downscaling or a colour cast (default {T.content_variety})",
    )
    p.add_argument(
        "--content-sky",
        type=unit_interval(),
        default=T.content_sky,
        metavar="P",
        help="share of samples (haze ones too) whose photo (input and target) first gets a cloudy or overcast "
        f"sky, so that clouds and bright backlit areas are not taken for haze (default {T.content_sky})",
    )
    p.add_argument("--lr", type=positive(float), default=T.lr, help=f"peak learning rate (default {T.lr:g})")
    p.add_argument("--pots-lr", type=positive(float), help="potentials' learning rate (default: --lr)")
    p.add_argument(
        "--optimizer", choices=["adamw", "rmsprop"], default=T.optimizer, help="rmsprop is the published one"
    )
    p.add_argument("--schedule", choices=["cosine", "step", "constant"], default=T.schedule)
    p.add_argument(
        "--warmup", type=non_negative(int), default=T.warmup, help=f"linear warm-up steps (default {T.warmup})"
    )
    p.add_argument(
        "--l1-weight", type=non_negative(float), default=W.l1, help=f"Sigma, the L1 weight (published {W.l1:g})"
    )
    p.add_argument(
        "--structure-weight",
        type=non_negative(float),
        default=W.structure,
        help="weight of orthogonality + contrastive",
    )
    p.add_argument(
        "--congruence-weight", type=non_negative(float), default=W.congruence, help="potentials' congruence penalty"
    )
    p.add_argument(
        "--precision",
        choices=["auto", "fp32", "bf16"],
        default=T.precision,
        help="autocast precision (auto: bf16 on CUDA and on CPUs with native bf16, AVX512-BF16 or AMX; else fp32)",
    )
    p.add_argument("--device", default=T.device, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (~2x faster after warm-up)")
    p.add_argument("--seed", type=int, default=T.seed)
    p.add_argument(
        "--ema",
        type=unit_interval(one_ok=False),
        default=T.ema,
        metavar="DECAY",
        help="also keep an exponential moving average of the weights (e.g. 0.999), written to "
        "model_ema.safetensors and validated beside the trained weights (default 0: off)",
    )
    p.add_argument(
        "--workers", type=non_negative(int), default=T.workers, help=f"data loader processes (default {T.workers})"
    )
    add_validation_options(p, limit=4)
    p.add_argument("--val-every", type=positive(int), default=T.val_every, help=f"default {T.val_every}")
    p.add_argument("--ckpt-every", type=positive(int), default=T.ckpt_every, help=f"default {T.ckpt_every}")
    p.add_argument(
        "--keep-every",
        type=non_negative(int),
        default=T.keep_every,
        metavar="N",
        help="also keep the weights of every N-th step in RUN/snapshots/, for interpolation or a later "
        "pick (default 0: only the latest)",
    )
    p.add_argument("--resume", action="store_true", help="continue the run in --out exactly where it stopped")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_train)


def _add_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="PSNR/SSIM with the papers' protocol",
        description="Evaluate on paired folders (matched by base name) and/or on clean photos "
        "degraded with a fixed per-image seed. RGB, [0, 1], data range 1, no shave. A pair without a "
        "partner, of two sizes or with an unreadable file is named and skipped, the rest measured "
        '(exit code 1, and a "skipped" list in --json).',
    )
    p.add_argument("--model", default="default", help="shipped name or weights file (default: default)")
    p.add_argument("--pairs", nargs=2, metavar=("INPUT_DIR", "TARGET_DIR"))
    p.add_argument("--pairs-task", default="paired", help="task label for --pairs rows (e.g. derain)")
    p.add_argument("--clean", help="folder of clean photos to degrade with --tasks")
    p.add_argument("--tasks", nargs="+", default=["denoise_25"], choices=sorted(TASK_NAMES), metavar="TASK")
    p.add_argument("--limit", type=positive(int), help="at most this many images per folder")
    p.add_argument(
        "--device",
        default="cpu",
        help="torch's device: cpu (default, the numbers in docs/) or cuda (FP32; cuDNN's TF32 off)",
    )
    p.add_argument(
        "--backend",
        default="torch",
        choices=list(BACKEND_NAMES),
        help="run the model here: torch (default) or a runtime, which gets --model exported into --cache first "
        "(exports are reused while the weights are unchanged); the JSON names the backend, device and precision "
        "that ran",
    )
    p.add_argument(
        "--precision",
        default="fp32",
        choices=list(RUN_PRECISIONS),
        help="precision of a runtime backend (int8: the shipped INT8 version of --model, or --int8-model)",
    )
    p.add_argument("--cache", default="out/artifacts", help="where exported artifacts are kept (runtime backends)")
    p.add_argument("--int8-model", help="quantized checkpoint for --precision int8 (a `baryir quantize` output)")
    p.add_argument("--json", help="write {model, backend, device, runs_at, artifact, results} JSON here")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_eval)


def _add_quantize(sub: argparse._SubParsersAction) -> None:
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
    p.add_argument("--method", choices=["ptq", "qat"], default=Q.method)
    p.add_argument("--data", nargs="+", required=True, help="folders of clean photos or published Train/ roots")
    p.add_argument("--tasks", nargs="+", default=Q.tasks, choices=sorted(TASK_NAMES), metavar="TASK")
    p.add_argument("-o", "--out", required=True, help="output folder")
    p.add_argument(
        "--ignored",
        choices=sorted(IGNORED_SCOPES),
        default=Q.ignored,
        help=f"ops kept in floating point (default {Q.ignored}, chosen by the ablation in docs/quantization.md)",
    )
    p.add_argument(
        "--model-type",
        choices=MODEL_TYPES,
        default=Q.model_type,
        help="NNCF model type: transformer also leaves adds, means, powers and divisions in float (default: default)",
    )
    p.add_argument(
        "--target-device",
        choices=TARGET_DEVICES,
        default=Q.target_device,
        help="NNCF target device whose hardware config places the quantizers (default: any; docs/quantization.md)",
    )
    p.add_argument(
        "--calib-samples",
        type=positive(int),
        default=Q.calib_samples,
        help=f"calibration patches (default {Q.calib_samples})",
    )
    p.add_argument(
        "--calib-patch",
        type=patch_side,
        default=Q.calib_patch,
        help=f"calibration patch size (default {Q.calib_patch})",
    )
    p.add_argument(
        "--steps", type=positive(int), default=Q.steps, help=f"QAT steps (default {Q.steps}, the shipped INT8 model's)"
    )
    p.add_argument(
        "--lr",
        type=positive(float),
        default=Q.lr,
        help=f"QAT learning rate (default {Q.lr:g}; 2e-5 was worse than PTQ)",
    )
    p.add_argument("--batch-size", type=positive(int), default=Q.batch_size, help=f"default {Q.batch_size}")
    p.add_argument("--patch-size", type=patch_side, default=Q.patch_size, help=f"default {Q.patch_size}")
    for name in ("haze", "variety", "sky"):
        default = getattr(Q, f"content_{name}")
        p.add_argument(
            f"--content-{name}",
            type=unit_interval(),
            default=default,
            metavar="P",
            help=f"as in `baryir train` (default {default}, the shipped model's training data)",
        )
    p.add_argument("--loss", choices=["bary", "l1"], default=Q.loss, help="QAT loss (default: the training losses)")
    p.add_argument(
        "--distill",
        type=non_negative(float),
        default=Q.distill,
        help=f"weight of an extra L1 to the FP32 model's output, for --learn-from clean (default {Q.distill:g}: off)",
    )
    p.add_argument(
        "--learn-from",
        choices=["clean", "fp32"],
        default=Q.learn_from,
        help="what QAT's L1 term compares the INT8 output with: fp32 (the float model's output: INT8 learns to "
        "reproduce the float model, docs/quantization.md) or clean (the clean photo, as in training) "
        f"(default {Q.learn_from})",
    )
    p.add_argument("--device", default=Q.device, help=f"cpu or cuda (default {Q.device})")
    p.add_argument("--seed", type=int, default=Q.seed)
    p.add_argument(
        "--workers", type=non_negative(int), default=Q.workers, help=f"data loader processes (default {Q.workers})"
    )
    p.add_argument("--ckpt-every", type=positive(int), default=Q.ckpt_every, help=f"default {Q.ckpt_every}")
    p.add_argument("--val-every", type=positive(int), default=Q.val_every, help=f"default {Q.val_every}")
    add_validation_options(p, limit=4)
    p.add_argument("--resume", action="store_true", help="continue the QAT run in --out")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_quantize)


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """This group's subcommands."""
    _add_train(sub)
    _add_eval(sub)
    _add_quantize(sub)
