"""BaryNet hyper-parameters and the named configurations, in one table."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


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
        if len(self.num_blocks) != 4 or len(self.heads) != 4:
            raise ValueError("num_blocks and heads need one entry per level (4)")

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
            if key in d:
                d[key] = tuple(int(v) for v in d[key])
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
