"""What a run stopped by a signal raises (torch-free, so the CLI can handle it anywhere)."""

from __future__ import annotations

import signal
from pathlib import Path


class TrainingStopped(Exception):
    """A run ended early by SIGINT/SIGTERM, after saving everything ``--resume`` needs."""

    def __init__(self, signum: int, step: int, steps: int, out: Path) -> None:
        self.signum = signum
        name = signal.Signals(signum).name
        super().__init__(
            f"{name} at step {step} of {steps}: everything is saved in {out}; "
            "run the same command with --resume to continue"
        )
