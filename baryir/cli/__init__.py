"""The ``baryir`` command: one parser, one module per command group, one-line errors.

The top of the stack: it imports every layer below and nothing imports it. Building the parser
imports no torch, so ``restore`` and ``verify`` run where only a backend is installed.
"""

from __future__ import annotations

import argparse
import glob
import logging
import pickle
import sys
from pathlib import Path

from ..formats import needs_extra, shipped_files
from ..io.atomic import refuse_overwriting_inputs, refuse_wrong_kind
from ..io.text import one_line
from ..signals import TrainingStopped
from . import deploy, measure, models, training


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="baryir",
        description="BaryIR all-in-one image restoration: train, quantize, export, run and compare models.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in (models, training, deploy, measure):
        group.add_parsers(sub)
    return parser


#: Options naming a file a command writes whole (reports, plots, figures).
WRITTEN_FILES = ("json", "plot", "figure")
#: Options naming what a command writes into: a folder (``out``) or a model file (``output``);
#: each command guards its own files there.
WRITTEN_FOLDERS = ("out", "output")
#: Every option naming something a command writes, and whether it is a folder.
WRITES_FOLDER = {**dict.fromkeys((*WRITTEN_FILES, "output", "potentials"), False), "out": True, "cache": True}


def read_paths(args: argparse.Namespace) -> list[Path]:
    """Every existing file or folder an option or argument names (glob patterns expanded), and
    the shipped files a model name stands for: what the command may read. Output options are
    left out."""
    values = [v for k, v in vars(args).items() if k not in WRITTEN_FILES + WRITTEN_FOLDERS and v]
    found = []
    for value in values:
        for item in value if isinstance(value, list | tuple) else [value]:
            if not isinstance(item, str | Path) or not str(item):
                continue
            matches = glob.glob(str(item)) if any(ch in str(item) for ch in "*?[") else [item]
            found += [Path(m) for m in matches if Path(m).exists()]
            if not Path(item).exists():
                found += shipped_files(str(item))
    return found


def written_path(args: argparse.Namespace, name: str) -> bool:
    """Whether option ``name`` names a path here (``info --json`` is a switch, not a file)."""
    value = getattr(args, name, None)
    return isinstance(value, str | Path) and bool(str(value))


def guard_written_files(args: argparse.Namespace) -> None:
    """The one guard of every command's outputs, before any work: each is of the kind its option
    names (a folder for ``out`` and ``cache``, a file otherwise), and no whole-file output may
    be, link to or lie in what the command reads."""
    for name, folder in WRITES_FOLDER.items():
        if written_path(args, name):
            refuse_wrong_kind(getattr(args, name), folder, option=f"--{name}")
    outputs = [getattr(args, name) for name in WRITTEN_FILES if written_path(args, name)]
    if outputs:
        refuse_overwriting_inputs(read_paths(args), outputs)


def main(argv: list[str] | None = None) -> int:
    """Run one command. Errors are one line (``error: <file or option>: <reason>``) with exit 2,
    1 when some inputs of a batch failed, 128 + N after signal N (130 on Ctrl-C)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s: %(message)s")

    try:
        guard_written_files(args)
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
            print(f"error: {needs_extra(f'baryir {args.command} (PyTorch)', 'torch')}", file=sys.stderr)
            return 2
        if isinstance(e, OSError) and e.strerror:  # "FILE: reason", not Python's "[Errno 2] ...: 'FILE'"
            print(f"error: {f'{e.filename}: ' if e.filename else ''}{e.strerror}", file=sys.stderr)
        else:
            print(f"error: {one_line(str(e))}", file=sys.stderr)
        return 2
    except Exception as e:  # a bug or an unforeseen input: still one line, the traceback on --debug
        if args.debug:
            raise
        print(f"error: {type(e).__name__}: {one_line(str(e))} (run with --debug for the traceback)", file=sys.stderr)
        return 2
