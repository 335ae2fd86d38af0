"""One runner interface over PyTorch, ONNX Runtime, OpenVINO, TensorRT and CoreML.

Importing this package imports no backend library; each is loaded when a runner needs it.
"""

from .base import BackendUnavailable, Runner, RunnerInfo
from .loader import BACKENDS, load_runner
from .processing import Tiling

__all__ = ["BACKENDS", "BackendUnavailable", "Runner", "RunnerInfo", "Tiling", "load_runner"]
