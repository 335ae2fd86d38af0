"""What every command group shares: argument types, JSON output, validation sets."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from pathlib import Path

from baryir.io.atomic import atomic_write


def write_json(path: str, obj: object) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(obj, indent=2) + "\n"))


def size(text: str, multiple: int = 1) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 256x256, got {text!r}") from None
    if h < 1 or w < 1 or h % multiple or w % multiple:
        what = "positive" if multiple == 1 else f"positive multiples of {multiple}"
        raise argparse.ArgumentTypeError(f"height and width must be {what}, got {text!r}")
    return h, w


def sizes(text: str, multiple: int = 1) -> list[tuple[int, int]]:
    return [size(v, multiple) for v in text.split(",")]


def name_fragment(text: str) -> str:
    """A piece of a file name (``--suffix``): no folder separators, no ``..``, no control characters."""
    if any(sep in text for sep in ("/", "\\")) or ".." in text or any(ord(ch) < 32 for ch in text):
        raise argparse.ArgumentTypeError(f"a suffix is part of a file name, not a path: {text!r}")
    return text


def positive(kind: type) -> object:
    """An argparse type: a finite number of ``kind`` above 0."""
    return _at_least_zero(kind, zero_ok=False)


def file_with_suffix(*suffixes: str) -> object:
    """An argparse type: a file name ending in one of ``suffixes`` (the formats its writer makes)."""

    def parse(text: str) -> str:
        if Path(text).suffix.lower() not in suffixes:
            raise argparse.ArgumentTypeError(f"{text!r} must end in {' or '.join(suffixes)} (the format written)")
        return text

    return parse


def unit_interval(one_ok: bool = True) -> object:
    """An argparse type: a float in [0, 1] (a probability), or [0, 1) without ``one_ok`` (a decay)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not (0 <= value <= 1 if one_ok else 0 <= value < 1):
            raise argparse.ArgumentTypeError(f"must be in [0, 1{']' if one_ok else ')'}, got {text!r}")
        return value

    return parse


def patch_side(text: str) -> int:
    """An argparse type: a square patch side, a positive multiple of 8 (the network's three 2x
    downsamplings need it)."""
    value = positive(int)(text)
    if value % 8:
        raise argparse.ArgumentTypeError(f"must be a positive multiple of 8, got {text!r}")
    return value


def non_negative(kind: type) -> object:
    """An argparse type: a finite number of ``kind``, 0 or more."""
    return _at_least_zero(kind, zero_ok=True)


def _at_least_zero(kind: type, zero_ok: bool) -> object:
    def parse(text: str) -> float | int:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value) or value < 0 or (value == 0 and not zero_ok):
            raise argparse.ArgumentTypeError(f"must be a finite number {'>= 0' if zero_ok else '> 0'}, got {text!r}")
        return value

    return parse


def list_of(choices: list[str]) -> type[argparse.Action]:
    """An ``nargs="+"`` action that also takes comma lists (``torch,onnxruntime`` or ``torch onnxruntime``)."""

    class ListAction(argparse.Action):
        def __call__(self, parser, namespace, values, option_string=None):
            items = list(dict.fromkeys(item for value in values for item in value.split(",") if item))  # once each
            wrong = [item for item in items if item not in choices]
            if wrong:
                allowed = ", ".join(choices)
                parser.error(f"argument {option_string}: invalid choice {wrong[0]!r} (choose from {allowed})")
            setattr(namespace, self.dest, items)

    return ListAction


def field_defaults(cls: type) -> argparse.Namespace:
    """The defaults of an options dataclass (``default_factory`` called), for argparse's ``default=``."""
    values = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            values[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            values[f.name] = f.default_factory()
    return argparse.Namespace(**values)


def options_from(cls: type, args: argparse.Namespace, **given: object):
    """An options dataclass from parsed arguments of the same names (``given`` wins)."""
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in vars(args).items() if k in names}, **given)


def add_validation_options(p: argparse.ArgumentParser, limit: int) -> None:
    """The validation set of ``train`` and ``quantize``."""
    p.add_argument("--val-pairs", nargs=2, metavar=("INPUT_DIR", "TARGET_DIR"), help="validation pairs")
    p.add_argument("--val-clean", help="validation clean photos (degraded with --val-tasks)")
    p.add_argument("--val-tasks", nargs="+", default=["denoise_25"], metavar="TASK")
    p.add_argument(
        "--val-limit", type=positive(int), default=limit, help=f"validation images per task (default {limit})"
    )


def validation_items(args: argparse.Namespace):
    """The validation images ``add_validation_options`` asked for (none by default)."""
    from baryir.evaluate import paired_items, synthetic_items  # torch: only the commands that validate

    if args.val_pairs:
        return paired_items(*args.val_pairs, limit=args.val_limit)
    if args.val_clean:
        return synthetic_items(args.val_clean, args.val_tasks, limit=args.val_limit)
    return []
