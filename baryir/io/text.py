"""Values from untrusted files, read and shown in messages at a bounded cost (torch-free)."""

from __future__ import annotations

import json
import re
import reprlib
import stat
from pathlib import Path

#: The largest JSON file read (manifests, configs, the verification cache are a few kB).
MAX_JSON_BYTES = 4 << 20


class _Bounded(reprlib.Repr):
    """reprlib with every limit small, and huge integers described instead of converted."""

    def __init__(self) -> None:
        super().__init__()
        self.maxlevel = 2
        self.maxstring = self.maxother = 80
        self.maxlong = 40
        self.maxlist = self.maxtuple = self.maxdict = self.maxset = self.maxfrozenset = 6

    def repr_int(self, x: int, level: int) -> str:
        if x.bit_length() > 128:
            return f"<an integer of {x.bit_length()} bits>"
        return super().repr_int(x, level)


_REPR = _Bounded()


def clip(value: object) -> str:
    """A short repr of ``value`` whose cost is bounded whatever it is: long strings and numbers
    are cut, containers show a few items and two levels (a nested structure that references itself
    thousands of times is never expanded)."""
    return _REPR.repr(value)


def read_bounded(path: str | Path, max_bytes: int) -> bytes:
    """The bytes of the regular file ``path``, refused (``ValueError``) from its metadata if it is
    a pipe, socket or device (they may block or never end) or larger than ``max_bytes``; exactly
    its size is allocated."""
    path = Path(path)
    st = path.stat()
    if not stat.S_ISREG(st.st_mode):
        raise ValueError(f"{path}: not a regular file (a pipe, socket or device); save it to a file first")
    if st.st_size > max_bytes:
        raise ValueError(f"{path}: larger than {max_bytes:,} bytes ({st.st_size:,}), more than such a file holds")
    with open(path, "rb") as f:
        data = f.read(st.st_size)
        if f.read(1):
            raise ValueError(f"{path}: it grew while it was read; try again once it is written")
    return data


def read_json(path: str | Path, max_bytes: int = MAX_JSON_BYTES) -> object:
    """The JSON value in ``path`` (:func:`read_bounded`: a file over ``max_bytes`` is refused
    before it is read); nesting too deep to parse is a ``ValueError``."""
    path = Path(path)
    data = read_bounded(path, max_bytes)
    try:
        return json.loads(data)
    except RecursionError:
        raise ValueError(f"{path}: JSON nested too deep to read; re-create it") from None


#: Source locations runtimes put before their message (OpenVINO: "Exception from src/x.cpp:84:",
#: "Check 'false' failed at src/y.cpp:47:").
_SOURCE_LOCATION = re.compile(r"(Exception from|Check '[^']*' failed at) \S+:\d+:")


def one_line(message: str, limit: int = 500) -> str:
    """A library's error message as one line: source locations dropped, whitespace and line
    breaks collapsed, at most ``limit`` characters."""
    text = " ".join(_SOURCE_LOCATION.sub(" ", message).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
