"""BaryNet hyper-parameters and the named configurations, in one table."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..io.text import read_json


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class BaryConfig:
    """Everything that fixes BaryNet's architecture (and so its state-dict shapes).

    ``bary_blocks`` is the depth of the barycenter map; the published model uses
    ``num_blocks[3]``. ``num_sources`` and ``potential_pool`` describe the Kantorovich
    potentials used in training (one per degradation source; the published ones see a
    ``potential_pool`` x ``potential_pool`` grid, 4 for 128-pixel patches).

    ``widths`` sets the channels of the four encoder levels; ``None`` is the published
    doubling (``dim``, 2·``dim``, 4·``dim``, 8·``dim``). Given, its first entry must equal
    ``dim``. The decoder mirrors the encoder (level-1 decoder and refinement: 2·widths[0]).
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
    widths: tuple[int, int, int, int] | None = None
    name: str = field(default="custom", compare=False)

    def __post_init__(self) -> None:
        if self.norm_type not in ("WithBias", "BiasFree"):
            raise ValueError(f"norm_type must be 'WithBias' or 'BiasFree', not {self.norm_type!r}")
        if not isinstance(self.bias, bool):
            raise ValueError(f"bias must be true or false, not {self.bias!r}")
        for key in ("num_blocks", "heads", "widths"):
            value = getattr(self, key)
            if key == "widths" and value is None:
                continue
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
        if self.widths is not None and self.widths[0] != self.dim:
            raise ValueError(f"widths[0] must equal dim ({self.dim}), not {self.widths[0]}")
        if self.widths == tuple(self.dim * k for k in (1, 2, 4, 8)):
            object.__setattr__(self, "widths", None)  # the published doubling has one spelling
        w = self.level_widths
        if any(width % 4 for width in w[1:]):
            raise ValueError(f"widths of levels 2-4 must be multiples of 4 (pixel-unshuffle), not {list(w)}")
        h = self.heads
        # Every attention block BaryNet builds: where, channels, heads.
        attention = (
            ("level 1", w[0], h[0]),
            ("the level-1 decoder", 2 * w[0], h[0]),
            ("level 2", w[1], h[1]),
            ("the level-2 barycenter-stream block", w[1], h[2]),
            ("level 3", w[2], h[2]),
            ("level 4", w[3], h[3]),
            ("the level-4 barycenter-stream block", 2 * w[3], h[2]),
        )
        for where, width, heads in attention:
            if width % heads:
                raise ValueError(f"{where}: {heads} heads do not divide its {width} channels")

    @property
    def level_widths(self) -> tuple[int, int, int, int]:
        """Channels of the four encoder levels (full, 1/2, 1/4 and 1/8 resolution)."""
        d = self.dim
        return self.widths if self.widths is not None else (d, 2 * d, 4 * d, 8 * d)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (lists, not tuples)."""
        d = dataclasses.asdict(self)
        d["num_blocks"] = list(self.num_blocks)
        d["heads"] = list(self.heads)
        if self.widths is None:
            del d["widths"]  # files of the published topology stay as they were
        else:
            d["widths"] = list(self.widths)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BaryConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error naming them."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown BaryConfig keys: {unknown}")
        d = dict(d)
        for key in ("num_blocks", "heads", "widths"):
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
    """A named configuration with optional field overrides (see :func:`with_overrides`)."""
    try:
        base = CONFIGS[name]
    except KeyError:
        raise ValueError(f"unknown config {name!r}; choose one of {sorted(CONFIGS)}") from None
    return with_overrides(base, **overrides)


def with_overrides(config: BaryConfig, **overrides: Any) -> BaryConfig:
    """``config`` with some fields replaced (``widths`` alone also sets ``dim``)."""
    if not overrides:
        return config
    unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(BaryConfig)})
    if unknown:
        raise ValueError(f"unknown BaryConfig keys: {unknown}")
    if overrides.get("widths") and "dim" not in overrides:
        overrides["dim"] = overrides["widths"][0]
    return dataclasses.replace(config, **overrides)


def config_from_spec(spec: str) -> BaryConfig:
    """A named configuration, or one read from a JSON file: ``{"base": "mobile", ...}`` with
    field overrides (lists for the per-level fields), or every field without ``base``."""
    if spec in CONFIGS or not spec.endswith(".json"):
        return get_config(spec)
    path = Path(spec)
    try:
        d = read_json(path)
        if not isinstance(d, dict):
            raise ValueError("it must hold a JSON object")
        d = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
        base = d.pop("base", None)
        d.setdefault("name", path.stem)
        if base is None:
            return BaryConfig.from_dict(d)
        return with_overrides(get_config(base), **d)
    except OSError as e:
        raise ValueError(f"{path}: cannot read the config ({e.strerror}); give a config name or a JSON file") from None
    except (json.JSONDecodeError, TypeError, ValueError) as e:
        raise ValueError(f"{path}: not a valid BaryNet config ({e})") from None
