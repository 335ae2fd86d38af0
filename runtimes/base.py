"""The Runner interface: one small class per backend, shared processing around it."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from baryir.io.images import from_float, to_float

from .processing import Tiling, run_padded, run_tiled


@dataclass(frozen=True)
class RunnerInfo:
    """What a runner really runs: read back from the runtime where it can be."""

    backend: str
    device: str
    precision: str
    artifact: str


@dataclass(frozen=True)
class OpTime:
    """One operation's time in a profiled run: its name in the graph, its type, the kernel or
    provider that ran it, and milliseconds per run (mean over the profiled runs)."""

    name: str
    op: str
    kernel: str
    ms: float


class Runner(ABC):
    """Runs float32 NCHW batches (H, W multiples of 8) through one backend.

    ``restore`` adds what every backend shares: dtype conversion, padding and tiling.
    """

    info: RunnerInfo

    @abstractmethod
    def run(self, batch: np.ndarray) -> np.ndarray:
        """(N, 3, H, W) float32 in [0, 1] -> restored, same shape; H, W multiples of 8."""

    def restore(self, image: np.ndarray, tiling: Tiling | None = None, batch: int = 1) -> np.ndarray:
        """Restore an (H, W, 3) uint8/uint16/float image of any size; same dtype out."""
        x, dtype = to_float(image)
        x = np.ascontiguousarray(x.transpose(2, 0, 1)[None])
        y = run_tiled(self.run, x, tiling, batch) if tiling else run_padded(self.run, x)
        return from_float(y[0].transpose(1, 2, 0), dtype)

    def profile(self, batch: np.ndarray, runs: int) -> list[OpTime]:
        """Per-operation times of ``runs`` runs of ``batch`` after one warm-up, as the runtime's
        own profiler reports them; a backend without one raises NotImplementedError."""
        raise NotImplementedError(f"{self.info.backend} has no per-operation profiler in this project")

    def close(self) -> None:  # noqa: B027 - optional hook, a no-op for backends without resources
        """Release the backend's resources (sessions, engines)."""

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class BackendUnavailable(ImportError):
    """A backend's library (or device) is missing; the message says what to install."""
