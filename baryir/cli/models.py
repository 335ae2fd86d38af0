"""Commands about a model itself: ``info``, ``convert-official`` and ``demo``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .common import size


def cmd_info(args: argparse.Namespace) -> int:
    from ..checkpoints import build_model, load_model
    from ..model import CONFIGS
    from ..model.complexity import count_gmacs, count_parameters, cpu_latency_ms

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


#: Row labels of the demo figure, by example file name.
EXAMPLE_LABELS = {"haze": "haze", "noise25": "noise (sigma 25)", "rain": "rain"}


def cmd_demo(args: argparse.Namespace) -> int:
    from ..checkpoints import load_model
    from ..data.images import EXAMPLES_DIR, labelled_grid, list_images, read_rgb, write_png
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
        "(default) or a model file.",
    )
    p.add_argument("model", metavar="MODEL")
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
        help="write the labelled comparison here instead of OUT/comparison.png (.jpg or .png; "
        "the README's docs/demo.jpg is `baryir demo --figure docs/demo.jpg`)",
    )
    p.set_defaults(func=cmd_demo)


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """This group's subcommands."""
    _add_info(sub)
    _add_convert_official(sub)
    _add_demo(sub)
