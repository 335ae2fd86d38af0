"""Read the published BaryIR checkpoints without their code and without running any code.

The published checkpoints are ``torch.save({"epoch", "BaryIR": <module>, "Pots": <module>})``:
whole pickled modules of classes ``model_bary.*`` and ``torch.nn.*``. A normal unpickler
would import those classes (and could be made to call anything, e.g. ``os.system``). This
one resolves only an explicit allowlist: tensor/storage rebuild functions and a few
containers map to the real objects; module classes map to inert stand-ins that record their
``__dict__``; every other global is refused before anything runs.
"""

from __future__ import annotations

import io
import pickle
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch

# Globals rebuilt by their real implementation: they only construct tensors/containers.
_REAL_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("__builtin__", "set"): set,  # protocol-2 pickles name the module as Python 2 did
    ("torch", "Size"): torch.Size,
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): torch._utils._rebuild_parameter_with_state,
    ("torch", "device"): torch.device,
}

_PUBLISHED_CLASSES = {
    "BaryNet",
    "TransformerBlock",
    "Attention",
    "FeedForward",
    "LayerNorm",
    "WithBias_LayerNorm",
    "BiasFree_LayerNorm",
    "OverlapPatchEmbed",
    "Downsample",
    "Upsample",
    "Potentials",
    "resblock",
}
_TORCH_NN_CLASSES = {
    "torch.nn.modules.conv": {"Conv2d"},
    "torch.nn.modules.container": {"Sequential", "ModuleList", "ModuleDict"},
    "torch.nn.modules.pixelshuffle": {"PixelShuffle", "PixelUnshuffle"},
    "torch.nn.modules.linear": {"Linear", "Identity"},
    "torch.nn.modules.activation": {"LeakyReLU", "PReLU", "GELU", "ReLU"},
    "torch.nn.modules.flatten": {"Flatten"},
}


class UnsafeCheckpointError(pickle.UnpicklingError):
    """The checkpoint references a global outside the allowlist; nothing was executed."""


class PickledModule:
    """Inert stand-in for a pickled ``nn.Module``: keeps its state, runs nothing."""

    qualname = "module"

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def tensors(self, prefix: str = "") -> dict[str, torch.Tensor]:
        """The module's parameters and persistent buffers, named like ``state_dict()``."""
        out: dict[str, torch.Tensor] = {}
        skip = self.__dict__.get("_non_persistent_buffers_set", set())
        for group in ("_parameters", "_buffers"):
            for name, value in (self.__dict__.get(group) or {}).items():
                if value is not None and name not in skip:
                    out[prefix + name] = value.detach()
        for name, child in (self.__dict__.get("_modules") or {}).items():
            if isinstance(child, PickledModule):
                out.update(child.tensors(f"{prefix}{name}."))
        return out


_stand_ins: dict[str, type[PickledModule]] = {}


def _stand_in(qualname: str) -> type[PickledModule]:
    if qualname not in _stand_ins:
        _stand_ins[qualname] = type(qualname.rsplit(".", 1)[-1], (PickledModule,), {"qualname": qualname})
    return _stand_ins[qualname]


class Unpickler(pickle.Unpickler):
    """``pickle.Unpickler`` whose ``find_class`` enforces the allowlist."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _REAL_GLOBALS:
            return _REAL_GLOBALS[(module, name)]
        if (module == "model_bary" and name in _PUBLISHED_CLASSES) or name in _TORCH_NN_CLASSES.get(module, ()):
            return _stand_in(f"{module}.{name}")
        raise UnsafeCheckpointError(
            f"refusing to load global {module}.{name}: it is not on the allowlist of tensor "
            "rebuilders and BaryIR/torch.nn module classes, so this file could run code when "
            "unpickled. Nothing was executed; if you trust the file, re-save its state_dict() "
            "with the code that made it"
        )


class _PickleModule:
    """What ``torch.load(pickle_module=...)`` needs: an ``Unpickler`` and ``load``."""

    Unpickler = Unpickler
    UnpicklingError = pickle.UnpicklingError

    @staticmethod
    def load(file: io.IOBase, **kwargs: Any) -> Any:
        return Unpickler(file, **kwargs).load()


def safe_torch_load(path: str | Path) -> Any:
    """``torch.load`` through the allowlisting unpickler (tensors mapped to the CPU)."""
    return torch.load(path, map_location="cpu", pickle_module=_PickleModule, weights_only=False)


def to_state_dict(obj: Any, what: str) -> dict[str, torch.Tensor]:
    """A flat name -> tensor dict from a pickled module or a (nested) state dict."""
    if isinstance(obj, PickledModule):
        return obj.tensors()
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return {str(k): v.detach() for k, v in obj.items()}
    raise ValueError(f"{what} is neither a pickled module nor a state dict (got {type(obj).__name__})")
