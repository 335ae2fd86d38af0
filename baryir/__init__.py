"""BaryIR: all-in-one image restoration with a learned Wasserstein-barycenter latent space.

The model API is imported on first use, so that torch-free parts (``baryir.io``, the
runtimes) can be imported where PyTorch is not installed.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["BaryNet", "BaryConfig", "CONFIGS", "Potentials", "build_model", "load_model", "save_model"]
__version__ = "0.1.0"
_HOMES = {
    "build_model": ".checkpoints",
    "load_model": ".checkpoints",
    "save_model": ".checkpoints",
    "BaryNet": ".model",
    "BaryConfig": ".model",
    "CONFIGS": ".model",
    "Potentials": ".model",
}


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name], __name__), name)
    raise AttributeError(f"module 'baryir' has no attribute {name!r}")
