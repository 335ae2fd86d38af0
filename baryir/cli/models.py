"""Commands about a model itself: ``info``, ``convert-official``, ``fit-readout`` and ``demo``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .common import file_with_suffix, positive, size


def cmd_info(args: argparse.Namespace) -> int:
    from ..checkpoints import build_model, load_model
    from ..model import CONFIGS
    from ..model.complexity import count_gmacs, count_parameters, cpu_latency_ms

    if args.model and args.model_option and args.model != args.model_option:
        raise ValueError(f"two models given ({args.model} and --model {args.model_option}); give one")
    args.model = args.model or args.model_option or "default"
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
    if not is_config:
        info["readout"] = readout_summary(model)
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
        if "readout" in info:
            r = info["readout"]
            print(
                "readout     "
                + (
                    f"{'+'.join(r['latents'])}: {', '.join(r['statistics'])} -> {', '.join(r['classes'])} "
                    f"(version {r['version']}, fit accuracy {r['fit'].get('fit_accuracy', '?')})"
                    if r["fitted"]
                    else r["why_not"]
                )
            )
    return 0


def readout_summary(model) -> dict:
    """What ``info`` says of a model's degradation readout (or why it has none)."""
    readout = model.readout
    if readout is None:
        return {"fitted": False, "why_not": model.readout_refused or "none (fit one with `baryir fit-readout`)"}
    return {
        "fitted": True,
        "latents": list(readout.latents),
        "statistics": list(readout.statistics),
        "classes": list(readout.classes),
        "version": readout.version,
        "fit": readout.fit,
    }


def cmd_convert_official(args: argparse.Namespace) -> int:
    from ..checkpoints import (
        model_from_state_dict,
        potentials_from_state_dict,
        read_official,
        save_model,
        save_potentials,
    )
    from ..io.atomic import refuse_overwriting_inputs

    refuse_overwriting_inputs([args.checkpoint], [args.output, args.potentials])
    model_state, pots_state, extra = read_official(args.checkpoint)
    try:
        model = model_from_state_dict(model_state)
    except ValueError as e:
        raise ValueError(f"{args.checkpoint}: {e}") from None
    # the checkpoint's own entries (epoch, ...) go under their own names, never over ours
    out = save_model(model, args.output, {"source": Path(args.checkpoint).name, "checkpoint": extra})
    print(f"wrote {out} ({model.config.dim=}, {sum(p.numel() for p in model.parameters()):,} parameters)")
    if args.potentials:
        if pots_state is None:
            print(f"error: {args.checkpoint} holds no potentials ('Pots')", file=sys.stderr)
            return 2
        print(f"wrote {save_potentials(potentials_from_state_dict(pots_state), args.potentials)}")
    return 0


def cmd_fit_readout(args: argparse.Namespace) -> int:
    from ..analysis import fit_readout
    from ..checkpoints import (
        CONFIG_KEY,
        FORMAT_KEY,
        READOUT_KEY,
        load_model,
        read_safetensors,
        resolve_model_path,
        save_model,
    )
    from ..io.atomic import refuse_overwriting_inputs

    source = resolve_model_path(args.model)
    refuse_overwriting_inputs([source, *args.data], [args.output])
    model = load_model(source)
    readout = fit_readout(model, args.data, args.per_task, args.crop, args.seed, progress=not args.no_progress)
    model.readout = readout
    kept = {}  # the source's own provenance (training run, steps, ...) stays with the weights
    if source.suffix == ".safetensors":
        for key, value in read_safetensors(source)[1].items():
            if key.startswith("baryir.") and key not in (CONFIG_KEY, FORMAT_KEY, READOUT_KEY):
                kept[key.removeprefix("baryir.")] = value
    out = save_model(model, args.output, {**kept, "readout_source": source.name})
    print(
        f"wrote {out}: readout on {'+'.join(readout.latents)}, {readout.fit['samples']} crops, "
        f"accuracy on them {readout.fit['fit_accuracy']:.3f} (measure held-out accuracy: docs/model.md)"
    )
    return 0


#: Row labels of the demo figure, by example file name.
EXAMPLE_LABELS = {"haze": "haze", "noise25": "noise (sigma 25)", "rain": "rain"}


def cmd_demo(args: argparse.Namespace) -> int:
    from ..checkpoints import load_model
    from ..data.photos import EXAMPLES_DIR, labelled_grid, list_images, read_rgb, write_png
    from ..inference import restore_tensor
    from ..io.atomic import atomic_write

    model = load_model(args.model)
    out = Path(args.out)
    rows, labels = [], []
    for path in list_images(EXAMPLES_DIR):
        degraded = read_rgb(path)
        restored = restore_tensor(model, degraded)
        print(f"restored {path.name} -> {write_png(restored, out / path.name)}")
        rows.append([degraded, restored])
        labels.append(EXAMPLE_LABELS.get(path.stem, path.stem))
    grid = labelled_grid(rows, labels, ["input", f"restored ({Path(args.model).stem})"])
    figure = Path(args.figure) if args.figure else out / "comparison.png"
    kind = "JPEG" if figure.suffix.lower() in (".jpg", ".jpeg") else "PNG"
    atomic_write(figure, lambda tmp: grid.save(tmp, format=kind, **({"quality": 90} if kind == "JPEG" else {})))
    print(f"side by side (input | restored, labelled): {figure}")
    return 0


def _add_info(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "info",
        help="config, parameter count and GMACs of a model",
        description="Show a model's config, parameters and GMACs. MODEL is a config name "
        "(paper, small, mobile, nano), a config JSON file (see train --config), a shipped name "
        "(default) or a model file; given as MODEL or --model like every other command's, "
        "the shipped default when left out.",
    )
    p.add_argument("model", metavar="MODEL", nargs="?", help="the model (default: the shipped default)")
    p.add_argument("--model", dest="model_option", metavar="MODEL", help="the same, as the other commands take it")
    p.add_argument(
        "--size",
        type=lambda text: size(text, 8),
        default=(256, 256),
        help="input size HxW for GMACs, multiples of 8 (default 256x256)",
    )
    p.add_argument("--latency", action="store_true", help="also time one eager FP32 CPU forward pass")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=cmd_info)


def _add_convert_official(sub: argparse._SubParsersAction) -> None:
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


def _add_fit_readout(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "fit-readout",
        help="fit the degradation readout (for analyze and restore --skip-clean) on a trained model",
        description="Freeze MODEL, degrade random crops of the clean photos in DATA (clean, noise, rain, haze; "
        "the fitting generators of baryir.analysis.FIT_TASKS), pool the encoder's features at 1/2 and 1/4 "
        "resolution (per channel: mean, deviation, mean absolute horizontal and vertical neighbour difference) "
        "and fit a linear readout (docs/model.md: why those features). "
        "Writes a copy of the model with the readout stored beside the weights (tied to them by their digest: "
        "changing the weights later drops it). Never writes over MODEL.",
    )
    p.add_argument("--model", default="default", help="shipped name or weights file (default: default)")
    p.add_argument("--data", nargs="+", required=True, help="folders of clean photos (training photos, not test sets)")
    p.add_argument("-o", "--output", required=True, help="the new .safetensors model file")
    p.add_argument("--per-task", type=positive(int), default=200, help="crops per fitting task (default 200)")
    p.add_argument("--crop", type=positive(int), default=320, help="largest crop side; crops are 128 px to it (320)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_fit_readout)


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="restore the bundled example images and write a comparison PNG",
        description="Restore the example images shipped in the package (rain, noise, haze) "
        "and write each result plus comparison.png (input | restored).",
    )
    p.add_argument("--model", default="default", help="shipped name or weights file (default: default)")
    p.add_argument("-o", "--out", default="out/demo", help="output folder (default out/demo)")
    p.add_argument(
        "--figure",
        type=file_with_suffix(".jpg", ".jpeg", ".png"),
        help="write the labelled comparison here instead of OUT/comparison.png (.jpg or .png; "
        "the README's docs/demo.jpg is `baryir demo --figure docs/demo.jpg`)",
    )
    p.set_defaults(func=cmd_demo)


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """This group's subcommands."""
    _add_info(sub)
    _add_convert_official(sub)
    _add_fit_readout(sub)
    _add_demo(sub)
