"""Read ``torch.save`` files (the published BaryIR checkpoints) without running any code.

``torch.load`` is never called: it would hand a TorchScript archive to TorchScript's loader
(which runs the archive's code) and, with a custom pickle module, it needs its unsafe mode.
Instead this module reads the zip container itself:

1. The archive is inspected before anything is unpickled. TorchScript archives and any zip
   holding code (``code/``, ``*.py``, ``constants.pkl``, ``bytecode.pkl``, or any pickle other
   than ``data.pkl``), legacy pre-zip files, compressed members and big-endian files are refused.
2. ``data.pkl`` is unpickled by :class:`Unpickler`, which resolves only an explicit allowlist:
   a few containers, dtype markers for storages and validating tensor rebuilders; module
   classes of ``model_bary`` and ``torch.nn`` map to inert stand-ins that record their
   ``__dict__``. Every other global is refused before anything runs.
3. Storages are read from ``data/<key>`` only after their claimed size is checked against the
   member's real size; every tensor view is checked to lie inside its storage.
"""

from __future__ import annotations

import math
import pickle
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch

from .io.text import clip


class UnsafeCheckpointError(pickle.UnpicklingError):
    """The file could run code or is malformed; it was refused before anything was executed."""


class _StorageType:
    """What ``torch.FloatStorage`` & co. resolve to: only their dtype is used."""

    def __init__(self, dtype: torch.dtype) -> None:
        self.dtype = dtype


_STORAGE_DTYPES = {
    "FloatStorage": torch.float32,
    "DoubleStorage": torch.float64,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _rebuild_tensor_v2(
    storage: Any, offset: Any, size: Any, stride: Any, requires_grad: Any, hooks: Any, metadata: Any = None
) -> torch.Tensor:
    """A view of ``storage`` after checking that every element it reaches lies inside it."""
    if not isinstance(storage, torch.Tensor) or storage.dim() != 1:
        raise UnsafeCheckpointError("a tensor refers to something that is not a storage")
    if not (isinstance(size, tuple) and isinstance(stride, tuple) and len(size) == len(stride)):
        raise UnsafeCheckpointError("a tensor has a malformed size or stride")
    if not (_is_int(offset) and offset >= 0 and all(_is_int(v) and v >= 0 for v in size + stride)):
        raise UnsafeCheckpointError(
            f"a tensor has a negative or non-integer offset/size/stride ({clip(offset)}, {clip(size)})"
        )
    if hooks:
        raise UnsafeCheckpointError("a tensor carries backward hooks (code); refusing")
    if math.prod(size) > 0:
        last = offset + sum((n - 1) * s for n, s in zip(size, stride))
        if last >= storage.numel():
            raise UnsafeCheckpointError(
                f"a tensor of size {clip(list(size))} at offset {offset} reaches element {last} of a "
                f"{storage.numel()}-element storage"
            )
    elif offset > storage.numel():
        raise UnsafeCheckpointError("a tensor's offset lies past its storage")
    return storage.as_strided(size, stride, offset)


def _rebuild_parameter(data: Any, requires_grad: Any, hooks: Any, state: Any = None) -> torch.Tensor:
    if not isinstance(data, torch.Tensor) or hooks:
        raise UnsafeCheckpointError("a parameter holds something other than a plain tensor")
    return data


# Globals rebuilt by our own code or by constructors that only build values.
_REAL_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("__builtin__", "set"): set,  # protocol-2 pickles name the module as Python 2 did
    ("torch", "Size"): torch.Size,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch", "device"): torch.device,
    **{("torch", name): _StorageType(dtype) for name, dtype in _STORAGE_DTYPES.items()},
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


class PickledModule:
    """Inert stand-in for a pickled ``nn.Module``: keeps its state, runs nothing."""

    qualname = "module"

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, dict):
            raise UnsafeCheckpointError(f"the pickled {self.qualname} has a non-dict state")
        self.__dict__.update(state)

    def tensors(self, prefix: str = "", _seen: frozenset[int] = frozenset()) -> dict[str, torch.Tensor]:
        """The module's parameters and persistent buffers, named like ``state_dict()``."""
        if id(self) in _seen or len(_seen) > 64:
            raise UnsafeCheckpointError(
                f"module {clip(prefix.rstrip('.') or 'root')} contains itself (or nests > 64 deep)"
            )
        seen = _seen | {id(self)}
        out: dict[str, torch.Tensor] = {}
        skip = self.__dict__.get("_non_persistent_buffers_set", set())
        for group in ("_parameters", "_buffers"):
            for name, value in (self.__dict__.get(group) or {}).items():
                if value is None or name in skip:
                    continue
                if not isinstance(value, torch.Tensor):
                    raise UnsafeCheckpointError(f"{clip(prefix + str(name))} is a {type(value).__name__}, not a tensor")
                out[prefix + name] = value.detach()
        for name, child in (self.__dict__.get("_modules") or {}).items():
            if isinstance(child, PickledModule):
                out.update(child.tensors(f"{prefix}{name}.", seen))
        return out


_stand_ins: dict[str, type[PickledModule]] = {}


def _stand_in(qualname: str) -> type[PickledModule]:
    if qualname not in _stand_ins:
        _stand_ins[qualname] = type(qualname.rsplit(".", 1)[-1], (PickledModule,), {"qualname": qualname})
    return _stand_ins[qualname]


class Unpickler(pickle._Unpickler):
    """An unpickler whose ``find_class`` enforces the allowlist, whose storages come from the
    archive's ``data/`` members, size-checked, and whose BUILD only fills plain containers.

    It is pickle's pure-Python unpickler so that BUILD can be replaced: the stock one calls
    ``__setstate__``, and ``Tensor.__setstate__`` re-points a tensor at a storage of any size
    (uninitialised process memory), or it updates the ``__dict__`` of whatever is on the stack,
    allowlisted objects shared by every load included.
    """

    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, file: Any, archive: zipfile.ZipFile | None = None, prefix: str = "") -> None:
        super().__init__(file)
        self._archive, self._prefix = archive, prefix
        self._storages: dict[str, torch.Tensor] = {}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _REAL_GLOBALS:
            return _REAL_GLOBALS[(module, name)]
        if (module == "model_bary" and name in _PUBLISHED_CLASSES) or name in _TORCH_NN_CLASSES.get(module, ()):
            return _stand_in(f"{module}.{name}")
        raise UnsafeCheckpointError(
            f"refusing to load global {clip(f'{module}.{name}')}: it is not on the allowlist of tensor "
            "rebuilders and BaryIR/torch.nn module classes, so this file could run code when "
            "unpickled. Nothing was executed; if you trust the file, re-save its state_dict() "
            "with the code that made it"
        )

    def load_build(self) -> None:
        """BUILD: ``state`` into the ``__dict__`` of a module stand-in or a state dict made by
        this load (``_metadata``); anything else (a tensor, an allowlisted global) is refused."""
        state = self.stack.pop()
        inst = self.stack[-1]
        if not isinstance(inst, PickledModule) and type(inst) is not OrderedDict:
            raise UnsafeCheckpointError(
                f"the file sets the state of a {type(inst).__name__}; only modules and state dicts may have one "
                "(a tensor's bytes come only from the file)"
            )
        if isinstance(state, tuple) and len(state) == 2 and state[1] is None:
            state = state[0]  # (dict state, no slot state)
        plain = isinstance(state, dict) and all(isinstance(k, str) for k in state)
        if not plain or (type(inst) is OrderedDict and not set(state) <= {"_metadata"}):
            raise UnsafeCheckpointError(
                f"the file sets the state of a {type(inst).__name__} from {clip(state)}; only a module's "
                "attributes or a state dict's _metadata may be set"
            )
        inst.__dict__.update(state)

    dispatch[pickle.BUILD[0]] = load_build

    def persistent_load(self, pid: Any) -> torch.Tensor:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise UnsafeCheckpointError(f"unknown persistent id {clip(pid)}")
        _, kind, key, _location, numel = pid
        if not isinstance(kind, _StorageType) or not isinstance(key, str) or not _is_int(numel) or numel < 0:
            raise UnsafeCheckpointError("malformed storage reference")
        if key in self._storages:
            return self._storages[key]
        if self._archive is None:
            raise UnsafeCheckpointError("a storage outside an archive")
        name = f"{self._prefix}data/{key}"
        try:
            info = self._archive.getinfo(name)
        except KeyError:
            raise UnsafeCheckpointError(f"storage {clip(key)} is missing from the archive") from None
        itemsize = torch.empty(0, dtype=kind.dtype).element_size()
        if info.file_size != numel * itemsize:
            raise UnsafeCheckpointError(
                f"storage {clip(key)} claims {clip(numel)} elements of {itemsize} bytes "
                f"but holds {info.file_size} bytes"
            )
        data = bytearray(self._archive.read(info))
        storage = torch.frombuffer(data, dtype=kind.dtype) if data else torch.empty(0, dtype=kind.dtype)
        self._storages[key] = storage
        return storage


_CODE_MARKERS = ("/code/", "/constants.pkl", "/bytecode.pkl", "/extra/", ".py", ".debug_pkl")


def _overlapping(members: list[zipfile.ZipInfo], file_size: int) -> bool:
    """Whether the members' data (each after its 30-byte local header and name) overlap, or add up
    to more than the file: a few MB of overlapping members can be read as gigabytes."""
    end, total = 0, 0
    for info in sorted(members, key=lambda i: i.header_offset):
        if info.header_offset < end:
            return True
        end = info.header_offset + 30 + len(info.filename.encode()) + info.compress_size
        total += info.file_size
    return total > file_size or end > file_size


def _open_archive(path: Path) -> tuple[zipfile.ZipFile, str]:
    """The zip archive and its member prefix, after refusing anything but plain torch data."""
    if not zipfile.is_zipfile(path):
        head = path.read_bytes()[:2]
        if head[:1] == b"\x80":
            raise UnsafeCheckpointError(
                "legacy (pre-zip) torch format; re-save it with torch.save() in a current PyTorch"
            )
        raise UnsafeCheckpointError("not a torch.save archive (not a zip file)")
    archive = zipfile.ZipFile(path)
    names = archive.namelist()
    pkls = [n for n in names if n.endswith("/data.pkl")]
    if len(pkls) != 1 or pkls[0].count("/") != 1:
        archive.close()
        raise UnsafeCheckpointError("not a torch.save archive (no single <name>/data.pkl)")
    prefix = pkls[0][: -len("data.pkl")]
    for info in archive.infolist():
        name = info.filename
        if not name.startswith(prefix) or ".." in name.split("/"):
            archive.close()
            raise UnsafeCheckpointError(f"unexpected member {clip(name)} outside {clip(prefix)}")
        if any(marker in "/" + name for marker in _CODE_MARKERS) or (name.endswith(".pkl") and name != pkls[0]):
            archive.close()
            raise UnsafeCheckpointError(
                f"holds code ({clip(name)}): a TorchScript archive or a zip with programs; only state dicts are read"
            )
        if info.compress_type != zipfile.ZIP_STORED or info.file_size > path.stat().st_size:
            archive.close()
            raise UnsafeCheckpointError(f"member {clip(name)} is compressed or larger than the file")
    if _overlapping(archive.infolist(), path.stat().st_size):
        archive.close()
        raise UnsafeCheckpointError("its members overlap or add up to more than the file; not a torch.save archive")
    if prefix + "byteorder" in names and archive.read(prefix + "byteorder").strip() != b"little":
        archive.close()
        raise UnsafeCheckpointError("big-endian checkpoint; re-save it on a little-endian machine")
    return archive, prefix


def safe_torch_load(path: str | Path) -> Any:
    """The object a ``torch.save`` archive holds, read without executing code from it."""
    path = Path(path)
    try:
        archive, prefix = _open_archive(path)
        with archive, archive.open(prefix + "data.pkl") as f:
            return Unpickler(f, archive, prefix).load()
    except UnsafeCheckpointError as e:
        raise UnsafeCheckpointError(f"{path}: {e}") from None
    except (
        pickle.UnpicklingError,
        EOFError,
        TypeError,
        ValueError,
        AttributeError,
        RuntimeError,
        zipfile.BadZipFile,
    ) as e:
        raise UnsafeCheckpointError(f"{path}: malformed checkpoint ({type(e).__name__}: {clip(str(e))})") from None


def to_state_dict(obj: Any, what: str) -> dict[str, torch.Tensor]:
    """A flat name -> tensor dict from a pickled module or a (nested) state dict."""
    if isinstance(obj, PickledModule):
        return obj.tensors()
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return {str(k): v.detach() for k, v in obj.items()}
    raise ValueError(f"{what} is neither a pickled module nor a state dict (got {type(obj).__name__})")
