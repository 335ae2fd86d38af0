"""CoreML runner (macOS only): tensor- or image-flavour mlpackages from `baryir export`."""

from __future__ import annotations

import numpy as np

from baryir.formats import DEGRADATION_NAME, FORMATS, INPUT_NAME, OUTPUT_NAME, needs_extra

from ..base import BackendUnavailable, Runner, RunnerInfo

_UNITS = {"all": "ALL", "cpu": "CPU_ONLY", "gpu": "CPU_AND_GPU", "ane": "CPU_AND_NE"}


class CoreMLRunner(Runner):
    """Predict with Core ML. Image-flavour models take and return 8-bit RGB images."""

    def __init__(self, path: str, device: str | None = None, precision: str = "fp16", io: str = "image") -> None:
        reason = FORMATS["coreml"].cannot_run_here()
        if reason:
            raise BackendUnavailable(reason)
        try:
            import coremltools as ct
        except ImportError as e:
            raise BackendUnavailable(needs_extra("The CoreML runner (coremltools)", "coreml")) from e
        device = device or "all"
        self.model = ct.models.MLModel(path, compute_units=getattr(ct.ComputeUnit, _UNITS[device]))
        self.io = io
        self.info = RunnerInfo("coreml", f"coreml compute units {_UNITS[device]}", precision, path)

    @classmethod
    def open(cls, path: str, device: str | None, precision: str | None, manifest: dict) -> CoreMLRunner:
        """The program's precision and I/O flavour are the manifest's (fp16 and image by default)."""
        return cls(path, device, manifest.get("precision") or "fp16", manifest.get("io", "image"))

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(o.name for o in self.model.get_spec().description.output)

    def _predict(self, x: np.ndarray) -> dict:
        from PIL import Image

        if self.io == "image":
            img = Image.fromarray((x.transpose(1, 2, 0) * 255 + 0.5).clip(0, 255).astype(np.uint8))
            return self.model.predict({INPUT_NAME: img})
        return self.model.predict({INPUT_NAME: x[None]})

    def run(self, batch: np.ndarray) -> np.ndarray:
        outs = []
        for x in batch:
            out = self._predict(x)[OUTPUT_NAME]
            if self.io == "image":
                outs.append(np.asarray(out.convert("RGB"), dtype=np.float32).transpose(2, 0, 1) / 255.0)
            else:
                outs.append(np.asarray(out)[0])
        return np.stack(outs).astype(np.float32)

    def run_degradation(self, batch: np.ndarray) -> np.ndarray:
        return np.concatenate([np.asarray(self._predict(x)[DEGRADATION_NAME], dtype=np.float32) for x in batch])
