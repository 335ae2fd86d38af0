"""CoreML runner (macOS only): tensor- or image-flavour mlpackages from `baryir export`."""

from __future__ import annotations

import numpy as np

from baryir.formats import FORMATS, INPUT_NAME, OUTPUT_NAME, needs_extra

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

    def run(self, batch: np.ndarray) -> np.ndarray:
        from PIL import Image

        outs = []
        for x in batch:
            if self.io == "image":
                img = Image.fromarray((x.transpose(1, 2, 0) * 255 + 0.5).clip(0, 255).astype(np.uint8))
                out = np.asarray(self.model.predict({INPUT_NAME: img})[OUTPUT_NAME].convert("RGB"), dtype=np.float32)
                outs.append(out.transpose(2, 0, 1) / 255.0)
            else:
                outs.append(np.asarray(self.model.predict({INPUT_NAME: x[None]})[OUTPUT_NAME])[0])
        return np.stack(outs).astype(np.float32)
