"""The ``baryir`` command: one parser, one module per command group, one-line errors.

The top of the stack: it imports every layer below and nothing imports it. Building the parser
imports no torch, so ``restore`` and ``verify`` run where only a backend is installed.
"""

from __future__ import annotations

import argparse
import logging
import pickle
import sys

from ..formats import needs_extra
from . import compare, deploy, models, training


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="baryir",
        description="BaryIR all-in-one image restoration: train, quantize, export, run and compare models.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in (models, training, deploy, compare):
        group.add_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command. Errors are one line (``error: <file or option>: <reason>``) with exit 2,
    1 when some inputs of a batch failed, 128 + N after signal N (130 on Ctrl-C)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s: %(message)s")
    from ..signals import TrainingStopped

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
            print(f"error: {needs_extra(f'baryir {args.command} (PyTorch)', 'torch')}", file=sys.stderr)
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
