"""Values from untrusted files, shown in messages at a bounded cost (torch-free)."""

from __future__ import annotations

import reprlib


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
