"""Model files: safetensors with the config in the metadata, foreign state dicts, names.

- ``save_model`` / ``load_model`` use safetensors (no pickle) with ``baryir.config`` (JSON)
  in the header; writes are atomic (temp file, then rename).
- ``load_model`` also takes a shipped name (``default``), a bare safetensors state dict or a
  ``.pth``/``.pt`` file (plain state dict or a published checkpoint, read through
  :mod:`baryir.safe_unpickle`); the config of a bare state dict is inferred from its shapes.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .model import CONFIGS, UNUSED_PUBLISHED_PREFIXES, BaryConfig, BaryNet, Potentials, get_config
from .safe_unpickle import safe_torch_load, to_state_dict

WEIGHTS_DIR = Path(__file__).parent / "weights"
FORMAT_KEY = "baryir.format"
CONFIG_KEY = "baryir.config"


def shipped_models() -> dict[str, Path]:
    """Names of the weights shipped inside the package (``default``, ...)."""
    return {p.stem: p for p in sorted(WEIGHTS_DIR.glob("*.safetensors"))}


def build_model(config: str | BaryConfig = "mobile", **overrides: Any) -> BaryNet:
    """A freshly initialised BaryNet from a config name or object, with field overrides."""
    if isinstance(config, str):
        config = get_config(config, **overrides)
    elif overrides:
        config = BaryConfig.from_dict({**config.to_dict(), **overrides})
    return BaryNet(config)


def atomic_write(path: str | Path, write: Any) -> Path:
    """Call ``write(tmp_path)`` then rename onto ``path``; no half-written file on failure."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the usual file mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def save_tensors(tensors: dict[str, torch.Tensor], path: str | Path, kind: str, metadata: dict[str, str]) -> Path:
    """Atomically write contiguous CPU copies of ``tensors`` as safetensors."""
    data = {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}
    meta = {FORMAT_KEY: kind, **metadata}
    return atomic_write(path, lambda tmp: save_file(data, tmp, metadata=meta))


def save_model(model: BaryNet, path: str | Path, metadata: dict[str, Any] | None = None) -> Path:
    """Save weights and config (plus optional JSON-able metadata) as safetensors."""
    meta = {CONFIG_KEY: json.dumps(model.config.to_dict())}
    for key, value in (metadata or {}).items():
        meta[f"baryir.{key}"] = value if isinstance(value, str) else json.dumps(value)
    return save_tensors(model.state_dict(), path, "model", meta)


def save_potentials(potentials: Potentials, path: str | Path) -> Path:
    """Save the Kantorovich potentials as safetensors."""
    return save_tensors(potentials.state_dict(), path, "potentials", {})


def read_safetensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and header metadata of a safetensors file."""
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        return {k: f.get_tensor(k) for k in f.keys()}, meta


def resolve_model_path(name_or_path: str | Path) -> Path:
    """A shipped model name or an existing path; the error lists what would work."""
    path = Path(name_or_path)
    if path.exists():
        return path
    shipped = shipped_models()
    if str(name_or_path) in shipped:
        return shipped[str(name_or_path)]
    hint = f"shipped names: {sorted(shipped)}" if shipped else "no weights are shipped in this install"
    if str(name_or_path) in CONFIGS:
        hint += f"; for an untrained {name_or_path!r} model use baryir.build_model({str(name_or_path)!r})"
    raise FileNotFoundError(f"model {str(name_or_path)!r} is neither a file nor a shipped name ({hint})")


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file (used to tie exported artifacts to their checkpoint)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def clean_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Strip DataParallel ``module.`` prefixes and the published never-used tensors."""
    out = {}
    for key, value in state.items():
        key = key.removeprefix("module.")
        if not key.startswith(UNUSED_PUBLISHED_PREFIXES):
            out[key] = value
    return out


def _count(state: dict[str, torch.Tensor], stack: str) -> int:
    pattern = re.compile(rf"^{re.escape(stack)}\.(\d+)\.")
    return len({int(m.group(1)) for k in state if (m := pattern.match(k))})


def _ffn_factor(state: dict[str, torch.Tensor]) -> float:
    """The FFN expansion factor f with int(width * f) == hidden for every FFN in ``state``."""
    lo, hi = 0.0, math.inf
    for key, w in state.items():
        if key.endswith("ffn.project_out.weight"):
            width, hidden = w.shape[0], w.shape[1]
            lo, hi = max(lo, hidden / width), min(hi, (hidden + 1) / width)
    if not lo < hi:
        raise ValueError("FFN widths are inconsistent with a single expansion factor")
    for decimals in range(1, 6):  # the shortest decimal in [lo, hi): 2.66, not 2.6458...
        candidate = math.ceil(lo * 10**decimals) / 10**decimals
        if candidate < hi:
            return candidate
    return lo


def infer_config(state: dict[str, torch.Tensor]) -> BaryConfig:
    """Recover a BaryConfig from state-dict shapes (spandrel-style)."""
    try:
        embed = state["patch_embed.proj.weight"]
        heads = tuple(
            state[f"{stack}.0.attn.temperature"].shape[0]
            for stack in ("encoder_level1", "encoder_level2", "encoder_level3", "latent")
        )
    except KeyError as e:
        raise ValueError(f"not a BaryNet state dict: missing {e.args[0]!r}") from None
    return BaryConfig(
        dim=embed.shape[0],
        inp_channels=embed.shape[1],
        out_channels=state["output.weight"].shape[0],
        num_blocks=tuple(_count(state, s) for s in ("encoder_level1", "encoder_level2", "encoder_level3", "latent")),
        num_refinement_blocks=_count(state, "refinement"),
        bary_blocks=_count(state, "barylatent"),
        heads=heads,
        ffn_expansion_factor=_ffn_factor(state),
        bias="output.bias" in state,
        norm_type="WithBias" if "encoder_level1.0.norm1.body.bias" in state else "BiasFree",
    )


def infer_potentials(state: dict[str, torch.Tensor]) -> tuple[int, int, int, int]:
    """(number of potentials, channels, pool, conv groups) from a Potentials state dict."""
    count = _count(state, "potentials")
    conv = state["potentials.0.0.weight"]
    channels, groups = conv.shape[0], conv.shape[0] // conv.shape[1]
    pool = math.isqrt(state["potentials.0.3.weight"].shape[1] // channels)
    return count, channels, pool, groups


def model_from_state_dict(state: dict[str, torch.Tensor], config: BaryConfig | None = None) -> BaryNet:
    """Build a BaryNet for ``state`` (config inferred unless given) and load it strictly."""
    state = clean_state_dict(state)
    model = BaryNet(config or infer_config(state))
    model.load_state_dict(state, strict=True)
    return model


def potentials_from_state_dict(state: dict[str, torch.Tensor]) -> Potentials:
    """Potentials with the layout found in ``state`` (published or native)."""
    pots = Potentials(*infer_potentials(state))
    pots.load_state_dict(state, strict=True)
    return pots


def read_official(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor] | None, dict]:
    """(model state, potentials state or None, other entries) of a published/plain checkpoint.

    Accepts ``{"epoch", "BaryIR", "Pots"}`` with pickled modules or state dicts, a
    ``{"state_dict"|"model"|"params": ...}`` wrapper, or a bare state dict.
    """
    obj = safe_torch_load(path)
    if isinstance(obj, dict) and "BaryIR" in obj:
        model = to_state_dict(obj["BaryIR"], f"{path}: 'BaryIR'")
        pots = to_state_dict(obj["Pots"], f"{path}: 'Pots'") if obj.get("Pots") is not None else None
        extra = {k: v for k, v in obj.items() if k not in ("BaryIR", "Pots") and isinstance(v, (int, float, str))}
        return model, pots, extra
    for key in ("state_dict", "model", "params", "params_ema"):
        if isinstance(obj, dict) and key in obj:
            return to_state_dict(obj[key], f"{path}: {key!r}"), None, {}
    return to_state_dict(obj, str(path)), None, {}


def load_model(name_or_path: str | Path = "default", device: str | torch.device = "cpu") -> BaryNet:
    """Load a BaryNet in eval mode from a shipped name, safetensors or a .pth/.pt state dict."""
    path = resolve_model_path(name_or_path)
    if path.suffix == ".safetensors":
        tensors, meta = read_safetensors(path)
        if meta.get(FORMAT_KEY, "model") != "model":
            raise ValueError(f"{path} holds {meta[FORMAT_KEY]}, not a BaryNet model")
        config = BaryConfig.from_dict(json.loads(meta[CONFIG_KEY])) if CONFIG_KEY in meta else None
        model = model_from_state_dict(tensors, config)
    elif path.suffix in (".pth", ".pt", ".ckpt"):
        model = model_from_state_dict(read_official(path)[0])
    else:
        raise ValueError(f"{path}: unknown model format {path.suffix!r}; use .safetensors, .pth or .pt")
    return model.to(device).eval()
