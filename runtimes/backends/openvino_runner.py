"""OpenVINO runner: CPU / GPU / NPU with an explicit inference precision."""

from __future__ import annotations

import numpy as np

from ..base import BackendUnavailable, Runner, RunnerInfo

_HINTS = {"fp32": "f32", "fp16": "f16", "bf16": "bf16"}


class OpenVINORunner(Runner):
    """An IR (model.xml) compiled for ``device``. The inference precision is set explicitly
    (default f32: the CPU plugin would silently pick bf16 on AMX CPUs) and read back."""

    def __init__(self, path: str, device: str | None = None, precision: str | None = None) -> None:
        try:
            import openvino as ov
        except ImportError as e:
            raise BackendUnavailable("OpenVINO is missing: pip install 'baryir[openvino]'") from e
        device = (device or "CPU").upper()
        precision = precision or "fp32"
        config = {}
        if precision != "int8":  # INT8 IR: integer kernels; the float parts follow the hint below
            if precision not in _HINTS:
                raise ValueError(f"openvino precision must be one of {sorted(_HINTS)} or int8, not {precision!r}")
            config["INFERENCE_PRECISION_HINT"] = _HINTS[precision]
        else:
            config["INFERENCE_PRECISION_HINT"] = "f32"
        self.compiled = ov.Core().compile_model(path, device, config)
        actual = self.compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
        label = precision if precision == "int8" else {"f32": "fp32", "f16": "fp16", "bf16": "bf16"}.get(actual, actual)
        self.request = self.compiled.create_infer_request()
        self.info = RunnerInfo("openvino", device, label, path)

    def run(self, batch: np.ndarray) -> np.ndarray:
        return np.asarray(self.request.infer({0: batch})[0]).copy()

    def close(self) -> None:
        self.request = self.compiled = None
