"""One runner interface over PyTorch, ONNX Runtime, OpenVINO, TensorRT and CoreML.

Importing this package imports no backend library; each is loaded when a runner needs it.
"""

from baryir.formats import BACKEND_NAMES

from .base import BackendUnavailable, Runner, RunnerInfo
from .loader import load_runner
from .processing import Tiling

__all__ = ["BACKEND_NAMES", "BackendUnavailable", "Runner", "RunnerInfo", "Tiling", "load_runner"]
