"""ONNX Runtime runner: CPU, or the CUDA / TensorRT / CoreML execution providers when present."""

from __future__ import annotations

import numpy as np

from baryir.formats import INPUT_NAME, OUTPUT_NAME, needs_extra

from ..base import BackendUnavailable, Runner, RunnerInfo

_PROVIDERS = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
    "coreml": ["CoreMLExecutionProvider", "CPUExecutionProvider"],
}


class OnnxRuntimeRunner(Runner):
    """An ONNX artifact in ONNX Runtime; the precision is the graph's (from its manifest)."""

    def __init__(self, path: str, device: str | None = None, precision: str = "fp32", threads: int = 0) -> None:
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise BackendUnavailable(needs_extra("The ONNX Runtime runner", "onnx")) from e
        device = device or "cpu"
        if device not in _PROVIDERS:
            raise ValueError(f"onnxruntime device must be one of {sorted(_PROVIDERS)}, not {device!r}")
        if _PROVIDERS[device][0] not in ort.get_available_providers():
            raise BackendUnavailable(
                f"{_PROVIDERS[device][0]} is not in this onnxruntime build (available: {ort.get_available_providers()})"
            )
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(path, options, providers=_PROVIDERS[device])
        active = self.session.get_providers()[0].removesuffix("ExecutionProvider")
        self.info = RunnerInfo("onnxruntime", active, precision, path)

    def run(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run([OUTPUT_NAME], {INPUT_NAME: batch})[0]

    def close(self) -> None:
        self.session = None
