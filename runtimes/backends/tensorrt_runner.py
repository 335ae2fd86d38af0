"""TensorRT runner: a serialized engine through the TensorRT 10 Python API, CUDA buffers from torch."""

from __future__ import annotations

import numpy as np

from baryir.formats import DEGRADATION_NAME, INPUT_NAME, OUTPUT_NAME, needs_extra

from ..base import BackendUnavailable, Runner, RunnerInfo


class TensorRTRunner(Runner):
    """Deserialise ``model.engine`` and run it with ``execute_async_v3`` on torch CUDA tensors.

    The precision is the engine's (built strongly typed from the ONNX of that precision)."""

    def __init__(self, path: str, device: str | None = None, precision: str = "fp32") -> None:
        reason = self.unavailable_here()
        if reason:
            raise BackendUnavailable(f"The TensorRT runner: {reason}")
        import tensorrt as trt
        import torch

        self.torch = torch
        self.device = torch.device(device or "cuda")
        logger = trt.Logger(trt.Logger.WARNING)
        with open(path, "rb") as f:
            self.engine = trt.Runtime(logger).deserialize_cuda_engine(f.read())
        if self.engine is None:
            raise RuntimeError(f"{path}: TensorRT could not deserialize the engine (built by another version?)")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self._outputs = tuple(n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT)
        name = torch.cuda.get_device_name(self.device)
        self.info = RunnerInfo("tensorrt", f"cuda ({name}), TensorRT {trt.__version__}", precision, path)

    @classmethod
    def unavailable_here(cls) -> str | None:
        """None when TensorRT and a CUDA GPU are here, else the reason why not."""
        try:
            import tensorrt  # noqa: F401
        except ImportError:
            return needs_extra("TensorRT", "tensorrt", " (from NVIDIA's index), or JetPack's python3-libnvinfer")
        try:
            import torch
        except ImportError:
            return needs_extra("The TensorRT runner (CUDA buffers from PyTorch)", "torch")
        return None if torch.cuda.is_available() else "TensorRT needs an NVIDIA GPU; none is visible to torch"

    @classmethod
    def open(cls, path: str, device: str | None, precision: str | None, manifest: dict) -> TensorRTRunner:
        """An engine's precision is the one it was built at (the manifest's)."""
        return cls(path, device, manifest.get("precision") or "fp32")

    @property
    def output_names(self) -> tuple[str, ...]:
        return self._outputs

    def _execute(self, batch: np.ndarray) -> dict:
        """Every output of the engine for ``batch`` (each output needs an address to run)."""
        torch = self.torch
        x = torch.from_numpy(np.ascontiguousarray(batch)).to(self.device)
        self.context.set_input_shape(INPUT_NAME, tuple(x.shape))
        self.context.set_tensor_address(INPUT_NAME, x.data_ptr())
        outs = {}
        for name in self._outputs:
            shape = tuple(self.context.get_tensor_shape(name))
            outs[name] = torch.empty(shape, device=self.device, dtype=torch.float32)
            self.context.set_tensor_address(name, outs[name].data_ptr())
        stream = torch.cuda.current_stream(self.device)
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError("TensorRT execution failed")
        stream.synchronize()
        return outs

    def run(self, batch: np.ndarray) -> np.ndarray:
        return self._execute(batch)[OUTPUT_NAME].cpu().numpy()

    def run_degradation(self, batch: np.ndarray) -> np.ndarray:
        return self._execute(batch)[DEGRADATION_NAME].cpu().numpy()

    def close(self) -> None:
        self.context = self.engine = None
