"""The Runner interface: one small class per backend, shared processing around it."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from baryir.formats import INT8_HAS_NO_READOUT
from baryir.io.images import from_float, to_float

from .processing import Tiling, pad_to_multiple, run_padded, run_tiled, tile_starts


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
    #: The classes of the artifact's ``degradation`` output, in order (empty: it has none).
    degradation_classes: tuple[str, ...] = ()
    #: Why the model has no degradation output, where that is known (a refused readout).
    degradation_note: str | None = None

    @classmethod
    def unavailable_here(cls) -> str | None:
        """Why this backend cannot run on this machine beyond its platform (checked before any
        export is made for it), or None."""
        return None

    @classmethod
    def open(cls, path: str, device: str | None, precision: str | None, manifest: dict) -> Runner:
        """A runner for the artifact at ``path`` (a checkpoint for PyTorch) with its manifest ({}
        without one): what ``load_runner`` calls. Each backend states its own defaults here."""
        return cls(path, device, precision)

    def miss_cause(self, manifest: dict) -> str | None:
        """Why an artifact with this ``manifest`` misses its golden output on this machine, with
        the fix, where this backend knows a cause of its own; None leaves the general one."""
        return None

    @abstractmethod
    def run(self, batch: np.ndarray) -> np.ndarray:
        """(N, 3, H, W) float32 in [0, 1] -> restored, same shape; H, W multiples of 8."""

    def run_degradation(self, batch: np.ndarray) -> np.ndarray:
        """(N, 3, H, W) float32 in [0, 1] -> (N, classes) degradation probabilities; H, W
        multiples of 8. Backends whose artifacts can carry the second output implement it."""
        raise NotImplementedError(f"{self.info.backend} runners do not read a degradation output")

    def require_degradation(self) -> None:
        """Raise the one-line reason (naming the model and the fix) if there is no degradation output."""
        if not self.degradation_classes:
            fix = (
                INT8_HAS_NO_READOUT
                if self.info.precision.startswith("int8")
                else "has no degradation output; use a model with a readout "
                "(the shipped default has one; `baryir fit-readout` fits one) and export it again"
            )
            raise ValueError(self.degradation_note or f"{self.info.artifact}: {fix}")

    def analyze(self, image: np.ndarray, tiling: Tiling | None = None) -> dict[str, float]:
        """What the model reads in an (H, W, 3) image: {class: probability}. With ``tiling``
        the tiles' probabilities are averaged, weighted by their area."""
        self.require_degradation()
        x, _ = to_float(image)
        x = np.ascontiguousarray(x.transpose(2, 0, 1)[None])
        h, w = x.shape[-2:]
        if tiling is None or (h <= tiling.tile and w <= tiling.tile):
            probs = self.run_degradation(np.ascontiguousarray(pad_to_multiple(x)))[0]
        else:
            t = tiling.tile
            tiles = [(y, xx) for y in tile_starts(h, t, tiling.overlap) for xx in tile_starts(w, t, tiling.overlap)]
            area = np.array([min(t, h - y) * min(t, w - xx) for y, xx in tiles], dtype=np.float64)
            rows = [
                self.run_degradation(np.ascontiguousarray(pad_to_multiple(x[:, :, y : y + t, xx : xx + t])))[0]
                for y, xx in tiles
            ]
            probs = (np.asarray(rows, dtype=np.float64) * area[:, None]).sum(0) / area.sum()
        if probs.shape != (len(self.degradation_classes),) or not np.isfinite(probs).all():
            raise ValueError(
                f"{self.info.artifact}: its degradation output {list(probs.shape)} is not "
                f"{len(self.degradation_classes)} finite probabilities (one per class its manifest names); "
                "export it again"
            )
        return {c: float(p) for c, p in zip(self.degradation_classes, probs)}

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
