"""BaryNet hyper-parameters and the named configurations, in one table."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class BaryConfig:
    """Everything that fixes BaryNet's architecture (and so its state-dict shapes).

    ``bary_blocks`` is the depth of the barycenter map; the published model uses
    ``num_blocks[3]``. ``num_sources`` and ``potential_pool`` describe the Kantorovich
    potentials used in training (one per degradation source; the published ones see a
    ``potential_pool`` x ``potential_pool`` grid, 4 for 128-pixel patches).
    """

    dim: int = 48
    num_blocks: tuple[int, int, int, int] = (4, 6, 6, 8)
    num_refinement_blocks: int = 4
    heads: tuple[int, int, int, int] = (1, 2, 4, 8)
    ffn_expansion_factor: float = 2.66
    bias: bool = False
    norm_type: str = "WithBias"
    bary_blocks: int = 8
    inp_channels: int = 3
    out_channels: int = 3
    num_sources: int = 3
    potential_pool: int = 4
    name: str = field(default="custom", compare=False)

    def __post_init__(self) -> None:
        if self.norm_type not in ("WithBias", "BiasFree"):
            raise ValueError(f"norm_type must be 'WithBias' or 'BiasFree', not {self.norm_type!r}")
        if not isinstance(self.bias, bool):
            raise ValueError(f"bias must be true or false, not {self.bias!r}")
        for key in ("num_blocks", "heads"):
            value = getattr(self, key)
            if not isinstance(value, tuple) or len(value) != 4 or not all(_is_int(v) for v in value):
                raise ValueError(f"{key} needs four integers (one per level), not {value!r}")
        counts = {"dim": 1, "num_refinement_blocks": 0, "bary_blocks": 1, "inp_channels": 1, "out_channels": 1}
        for key, low in {**counts, "num_sources": 1, "potential_pool": 1}.items():
            if not _is_int(getattr(self, key)) or getattr(self, key) < low:
                raise ValueError(f"{key} must be an integer >= {low}, not {getattr(self, key)!r}")
        if min(self.num_blocks) < 1 or min(self.heads) < 1:
            raise ValueError(f"num_blocks and heads must be >= 1, not {self.num_blocks} / {self.heads}")
        if isinstance(self.ffn_expansion_factor, bool) or not isinstance(self.ffn_expansion_factor, (int, float)):
            raise ValueError(f"ffn_expansion_factor must be a number, not {self.ffn_expansion_factor!r}")
        if not 0 < self.ffn_expansion_factor <= 16 or int(self.dim * self.ffn_expansion_factor) < 1:
            raise ValueError(f"ffn_expansion_factor must be in (0, 16], not {self.ffn_expansion_factor!r}")
        widths = (self.dim, 2 * self.dim, 4 * self.dim, 8 * self.dim)
        for level, (width, heads) in enumerate(zip(widths, self.heads), 1):
            if width % heads:
                raise ValueError(f"level {level}: {heads} heads do not divide its {width} channels")

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (lists, not tuples)."""
        d = dataclasses.asdict(self)
        d["num_blocks"] = list(self.num_blocks)
        d["heads"] = list(self.heads)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BaryConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error naming them."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown BaryConfig keys: {unknown}")
        d = dict(d)
        for key in ("num_blocks", "heads"):
            if isinstance(d.get(key), list):
                d[key] = tuple(d[key])
        return cls(**d)


CONFIGS: dict[str, BaryConfig] = {
    # The published model (BaryNet(decoder=True) in model_bary.py).
    "paper": BaryConfig(name="paper"),
    # Edge configurations: narrower and shallower; the block design (WithBias LayerNorm, no
    # conv bias) stays the paper's so that one code path and one set of tests serve all.
    "small": BaryConfig(
        dim=32,
        num_blocks=(2, 3, 3, 4),
        num_refinement_blocks=2,
        heads=(1, 2, 4, 8),
        ffn_expansion_factor=2.0,
        bary_blocks=2,
        name="small",
    ),
    "mobile": BaryConfig(
        dim=16,
        num_blocks=(2, 2, 2, 1),
        num_refinement_blocks=1,
        heads=(1, 2, 4, 8),
        ffn_expansion_factor=1.5,
        bary_blocks=1,
        name="mobile",
    ),
    "nano": BaryConfig(
        dim=8,
        num_blocks=(1, 1, 1, 1),
        num_refinement_blocks=1,
        heads=(1, 1, 2, 4),
        ffn_expansion_factor=2.0,
        bary_blocks=1,
        name="nano",
    ),
}


def get_config(name: str, **overrides: Any) -> BaryConfig:
    """A named configuration with optional field overrides."""
    try:
        base = CONFIGS[name]
    except KeyError:
        raise ValueError(f"unknown config {name!r}; choose one of {sorted(CONFIGS)}") from None
    if not overrides:
        return base
    return dataclasses.replace(base, **overrides)
