"""Model files: safetensors with the config in the metadata, foreign state dicts, names.

- ``save_model`` / ``load_model`` use safetensors (no pickle) with ``baryir.config`` (JSON)
  in the header; writes are atomic (temp file, then rename).
- ``load_model`` also takes a shipped name (``default``), a bare safetensors state dict or a
  ``.pth``/``.pt`` file (plain state dict or a published checkpoint, read through
  :mod:`baryir.safe_unpickle`); the config of a bare state dict is inferred from its shapes.
"""

from __future__ import annotations

import json
import logging
import math
import pickle
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from .formats import MAX_DEGRADATION_CLASSES, SHIPPED_WEIGHTS
from .io.atomic import atomic_write
from .io.text import clip
from .model import CONFIGS, UNUSED_PUBLISHED_PREFIXES, BaryConfig, BaryNet, DegradationReadout, Potentials
from .model.configs import config_from_spec, with_overrides
from .model.readout import (
    LATENTS,
    READABLE_VERSIONS,
    STATISTICS,
    VERSION1_STATISTICS,
    check_statistics,
    feature_count,
    weights_digest,
)
from .safe_unpickle import safe_torch_load, to_state_dict

log = logging.getLogger("baryir")


class ModelFileError(ValueError):
    """A model file that cannot be used; the message names the file and what to do."""


FORMAT_KEY = "baryir.format"
#: The ``FORMAT_KEY`` of an NNCF-quantized model file (written by :mod:`baryir.quantize`).
QUANTIZED_KIND = "quantized-model"
CONFIG_KEY = "baryir.config"
#: Metadata of the degradation readout stored beside the weights (tensors ``readout.*``).
READOUT_KEY = "baryir.readout"
READOUT_PREFIX = "readout."


def shipped_models() -> dict[str, Path]:
    """Names of the weights shipped inside the package (``default``, ...)."""
    return {p.stem: p for p in sorted(SHIPPED_WEIGHTS.glob("*.safetensors"))}


def build_model(config: str | BaryConfig = "mobile", **overrides: Any) -> BaryNet:
    """A freshly initialised BaryNet from a config (a name, a JSON file, see
    :func:`config_from_spec`, or an object), with field overrides."""
    if isinstance(config, str):
        config = config_from_spec(config)
    return BaryNet(with_overrides(config, **overrides))


def save_tensors(tensors: dict[str, torch.Tensor], path: str | Path, kind: str, metadata: dict[str, str]) -> Path:
    """Atomically write contiguous CPU copies of ``tensors`` as safetensors."""
    data = {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}
    if FORMAT_KEY in metadata:
        raise ValueError(f"metadata may not set {FORMAT_KEY}: the file's kind is {kind!r}")
    meta = {FORMAT_KEY: kind, **metadata}
    return atomic_write(path, lambda tmp: save_file(data, tmp, metadata=meta))


def save_model(model: BaryNet, path: str | Path, metadata: dict[str, Any] | None = None) -> Path:
    """Save weights and config (plus optional JSON-able metadata) as safetensors."""
    meta = {}
    for key, value in (metadata or {}).items():
        meta[f"baryir.{key}"] = value if isinstance(value, str) else json.dumps(value)
    reserved = sorted({CONFIG_KEY, FORMAT_KEY, READOUT_KEY} & set(meta))
    if reserved:
        raise ValueError(f"metadata may not set {', '.join(reserved)}: they describe the weights themselves")
    meta[CONFIG_KEY] = json.dumps(model.config.to_dict())
    tensors, meta = with_readout(model, model.state_dict(), meta, path)
    return save_tensors(tensors, path, "model", meta)


def with_readout(
    model: BaryNet, tensors: dict[str, torch.Tensor], meta: dict[str, str], path: str | Path
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """``tensors`` and ``meta`` of a model file plus the model's readout, if it has one fitted on
    exactly these tensors (a stale one is left out, with a warning: refit it)."""
    readout = model.readout
    if readout is None:
        return tensors, meta
    if readout.fitted_on != weights_digest(tensors):
        log.warning("%s: the degradation readout was fitted on other weights; saved without it (refit it)", path)
        return tensors, meta
    described = {
        "version": readout.version,
        "classes": list(readout.classes),
        "latents": list(readout.latents),
        "statistics": list(readout.statistics),
        "fitted_on": readout.fitted_on,
        "fit": readout.fit,
    }
    extra = {f"{READOUT_PREFIX}weight": readout.weight, f"{READOUT_PREFIX}bias": readout.bias}
    return {**tensors, **extra}, {**meta, READOUT_KEY: json.dumps(described)}


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


def clean_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Strip DataParallel ``module.`` prefixes and the published never-used tensors. Two entries
    that become one name (``module.x`` and ``x``) are refused, naming both: which one the file
    meant cannot be known."""
    out: dict[str, torch.Tensor] = {}
    original: dict[str, str] = {}
    for key, value in state.items():
        name = key.removeprefix("module.")
        if name.startswith(UNUSED_PUBLISHED_PREFIXES):
            continue
        if name in out:
            raise ValueError(f"two tensors for {clip(name)}: {clip(original[name])} and {clip(key)}; keep one of them")
        out[name], original[name] = value, key
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
    """Recover a BaryConfig from state-dict shapes (spandrel-style); an empty or malformed
    tensor among those it reads makes it a ValueError."""
    try:
        return _infer_config(state)
    except (ZeroDivisionError, IndexError, TypeError) as e:
        raise ValueError(f"not a BaryNet state dict: its shapes describe no BaryNet ({type(e).__name__})") from None


def _infer_config(state: dict[str, torch.Tensor]) -> BaryConfig:
    try:
        embed = state["patch_embed.proj.weight"]
        heads = tuple(
            state[f"{stack}.0.attn.temperature"].shape[0]
            for stack in ("encoder_level1", "encoder_level2", "encoder_level3", "latent")
        )
        out_channels = state["output.weight"].shape[0]
        widths = (embed.shape[0],) + tuple(
            state[f"{stack}.0.attn.project_out.weight"].shape[0]
            for stack in ("encoder_level2", "encoder_level3", "latent")
        )
    except KeyError as e:
        raise ValueError(f"not a BaryNet state dict: missing {e.args[0]!r}") from None
    if embed.dim() != 4:
        raise ValueError("not a BaryNet state dict: patch_embed.proj.weight is not a convolution weight")
    return BaryConfig(
        dim=embed.shape[0],
        inp_channels=embed.shape[1],
        out_channels=out_channels,
        num_blocks=tuple(_count(state, s) for s in ("encoder_level1", "encoder_level2", "encoder_level3", "latent")),
        num_refinement_blocks=_count(state, "refinement"),
        bary_blocks=_count(state, "barylatent"),
        heads=heads,
        widths=widths,
        ffn_expansion_factor=_ffn_factor(state),
        bias="output.bias" in state,
        norm_type="WithBias" if "encoder_level1.0.norm1.body.bias" in state else "BiasFree",
    )


def infer_potentials(state: dict[str, torch.Tensor]) -> tuple[int, int, int, int]:
    """(number of potentials, channels, pool, conv groups) from a Potentials state dict."""
    count = _count(state, "potentials")
    try:
        conv = state["potentials.0.0.weight"]
        channels, groups = conv.shape[0], conv.shape[0] // conv.shape[1]
        pool = math.isqrt(state["potentials.0.3.weight"].shape[1] // channels)
    except (KeyError, IndexError, ZeroDivisionError):
        raise ValueError("not a Potentials state dict (no potentials.0.0.weight / potentials.0.3.weight)") from None
    return count, channels, pool, groups


_SHAPE_FIELDS = (
    "dim",
    "widths",
    "inp_channels",
    "out_channels",
    "num_blocks",
    "num_refinement_blocks",
    "bary_blocks",
    "heads",
)


def check_config(config: BaryConfig, state: dict[str, torch.Tensor]) -> None:
    """Refuse a config that disagrees with the tensors before anything is built (a file that
    claims ``dim=4096`` must fail in milliseconds, not after allocating gigabytes)."""
    inferred = infer_config(state)
    wrong = [
        f"{k}={getattr(config, k)} but the tensors say {getattr(inferred, k)}"
        for k in _SHAPE_FIELDS
        if getattr(config, k) != getattr(inferred, k)
    ]
    if not wrong and int(config.dim * config.ffn_expansion_factor) != int(config.dim * inferred.ffn_expansion_factor):
        wrong.append(f"ffn_expansion_factor={config.ffn_expansion_factor} does not fit the FFN widths")
    if wrong:
        raise ValueError("config does not match the weights: " + "; ".join(wrong))


#: The most parameters a model file may claim (the published ``paper`` model has 53.8 M): shapes
#: are counted before anything is built, so a tiny file claiming a huge model fails at once.
MAX_PARAMETERS = 250_000_000


def _check_budget(state: dict[str, torch.Tensor]) -> None:
    """Refuse a state dict whose shapes claim more than :data:`MAX_PARAMETERS` (a stride-0 view
    or an empty tensor can claim any shape with a few bytes; building it would allocate them)."""
    claimed = sum(t.numel() for t in state.values())
    if claimed > MAX_PARAMETERS:
        raise ValueError(
            f"its tensors claim {claimed:,} parameters, more than any BaryNet ({MAX_PARAMETERS:,} at most); "
            "not a BaryNet checkpoint"
        )


def _build_matching(make: Callable[[], nn.Module], state: dict[str, torch.Tensor], what: str) -> nn.Module:
    """``make()`` after its shapes, built first on the meta device (nothing allocated), match
    ``state`` exactly; then the real module, whose weights are no larger than the file's tensors."""
    with torch.device("meta"):
        expected = make().state_dict()
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    shapes = [
        f"{k} is {clip(list(state[k].shape))}, expected {list(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    problems = [
        f"missing {', '.join(missing[:3])}" * bool(missing),
        f"unexpected {', '.join(clip(k) for k in extra[:3])}" * bool(extra),
    ]
    problems = [p for p in problems + shapes[:3] if p]
    if problems:
        raise ValueError(f"not a {what}: " + "; ".join(problems))
    module = make()
    module.load_state_dict(state, strict=True)
    return module


def model_from_state_dict(state: dict[str, torch.Tensor], config: BaryConfig | None = None) -> BaryNet:
    """Build a BaryNet for ``state`` (config inferred unless given, and checked against the
    shapes first) and load it strictly; missing, extra or wrong-shape keys are one error, found
    before anything the size of the model is allocated."""
    state = clean_state_dict(state)
    _check_budget(state)
    if config is None:
        config = infer_config(state)
    else:
        check_config(config, state)
    return _build_matching(lambda: BaryNet(config), state, "BaryNet state dict for this config")


def potentials_from_state_dict(state: dict[str, torch.Tensor]) -> Potentials:
    """Potentials with the layout found in ``state`` (published or native)."""
    _check_budget(state)
    layout = infer_potentials(state)
    return _build_matching(lambda: Potentials(*layout), state, "Potentials state dict")


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


def split_readout(
    tensors: dict[str, torch.Tensor], meta: dict[str, str]
) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    """(model tensors, the stored readout's tensors and metadata or None)."""
    stored = {k.removeprefix(READOUT_PREFIX): v for k, v in tensors.items() if k.startswith(READOUT_PREFIX)}
    if READOUT_KEY not in meta and not stored:
        return tensors, None
    state = {k: v for k, v in tensors.items() if not k.startswith(READOUT_PREFIX)}
    return state, {"tensors": stored, "meta": meta.get(READOUT_KEY)}


#: Class names a stored readout may use (a file is not trusted; their number: MAX_DEGRADATION_CLASSES).
_CLASS_NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")


def readout_from_file(stored: dict[str, Any], state: dict[str, torch.Tensor], config: BaryConfig) -> DegradationReadout:
    """The readout stored beside ``state``, checked: version, classes, shapes, and that it was
    fitted on exactly these weights. A ValueError says what is wrong and what to do."""
    try:
        meta = json.loads(stored["meta"]) if stored["meta"] is not None else None
    except json.JSONDecodeError:
        meta = None
    if not isinstance(meta, dict):
        raise ValueError(f"its {READOUT_KEY} metadata is missing or not a JSON object; refit the readout")
    version = meta.get("version")
    if version not in READABLE_VERSIONS or isinstance(version, bool):
        raise ValueError(
            f"its degradation readout has version {clip(version)}, this baryir reads "
            f"{' and '.join(map(str, READABLE_VERSIONS))}; refit it with `baryir fit-readout`"
        )
    classes = meta.get("classes")
    if (
        not isinstance(classes, list)
        or not 2 <= len(classes) <= MAX_DEGRADATION_CLASSES
        or not all(isinstance(c, str) and _CLASS_NAME.match(c) for c in classes)
        or len(set(classes)) != len(classes)
    ):
        raise ValueError(
            f"its readout classes {clip(classes)} are not 2-{MAX_DEGRADATION_CLASSES} distinct lower-case names"
        )
    latents = meta.get("latents")
    if (
        not isinstance(latents, list)
        or not latents
        or not all(isinstance(n, str) and n in LATENTS for n in latents)
        or len(set(latents)) != len(latents)
    ):
        raise ValueError(f"its readout latents {clip(latents)} are not distinct names from {LATENTS}")
    statistics = meta.get("statistics") if version > 1 else list(VERSION1_STATISTICS)
    if not isinstance(statistics, list) or not all(isinstance(n, str) for n in statistics):
        raise ValueError(f"its readout statistics {clip(statistics)} are not a list of names from {STATISTICS}")
    try:
        check_statistics(tuple(statistics))
    except ValueError as e:
        raise ValueError(f"its {e}") from None
    weight, bias = stored["tensors"].get("weight"), stored["tensors"].get("bias")
    features = feature_count(tuple(latents), config.level_widths, tuple(statistics))
    if weight is None or bias is None or set(stored["tensors"]) != {"weight", "bias"}:
        raise ValueError(f"its readout tensors are {sorted(stored['tensors'])}, expected ['bias', 'weight']")
    if tuple(weight.shape) != (len(classes), features) or tuple(bias.shape) != (len(classes),):
        raise ValueError(
            f"its readout weight {clip(list(weight.shape))} / bias {clip(list(bias.shape))} do not fit "
            f"{len(classes)} classes of {features} features"
        )
    if not weight.is_floating_point() or not bias.is_floating_point():
        raise ValueError("its readout tensors are not floating point")
    digest = weights_digest(state)
    if meta.get("fitted_on") != digest:
        raise ValueError(
            "its degradation readout was fitted on other weights (the weights changed after fitting); "
            "refit it with `baryir fit-readout`"
        )
    fit = meta.get("fit") if isinstance(meta.get("fit"), dict) else {}
    return DegradationReadout(
        weight.float(), bias.float(), digest, tuple(classes), tuple(latents), tuple(statistics), version, fit
    )


def read_model_file(path: Path) -> tuple[dict[str, torch.Tensor], BaryConfig | None]:
    """(state dict, config from the metadata or None) of a model file; errors name the file.
    A stored degradation readout is left out (:func:`load_model` reads it)."""
    state, config, _ = read_model_file_with_readout(path)
    return state, config


def read_model_file_with_readout(path: Path) -> tuple[dict[str, torch.Tensor], BaryConfig | None, dict | None]:
    """(state dict, config or None, stored readout or None) of a model file; errors name the file."""
    if path.is_dir():
        raise ModelFileError(f"{path}: is a folder, not a model file; give the .safetensors or .pth file inside it")
    try:
        if path.suffix == ".safetensors":
            tensors, meta = read_safetensors(path)
            if meta.get(FORMAT_KEY, "model") == QUANTIZED_KIND:
                raise ValueError(
                    "it holds an INT8 (NNCF-quantized) model, which this command does not take; give the float "
                    "model it was made from, or export the INT8 one (`baryir export --model FILE --precision int8`)"
                )
            if meta.get(FORMAT_KEY, "model") != "model":
                raise ValueError(f"it holds {clip(meta[FORMAT_KEY])}, not a BaryNet model")
            tensors, readout = split_readout(tensors, meta)
            if CONFIG_KEY not in meta:
                return tensors, None, readout
            try:
                config_dict = json.loads(meta[CONFIG_KEY])
            except json.JSONDecodeError as e:
                raise ValueError(f"its {CONFIG_KEY} metadata is not valid JSON ({e})") from None
            if not isinstance(config_dict, dict):
                raise ValueError(f"its {CONFIG_KEY} metadata is not a JSON object")
            return tensors, BaryConfig.from_dict(config_dict), readout
        if path.suffix in (".pth", ".pt", ".ckpt"):
            return read_official(path)[0], None, None
    except SafetensorError as e:
        raise ModelFileError(f"{path}: not a valid safetensors file ({e}); re-download or re-save it") from None
    except (ValueError, TypeError, pickle.UnpicklingError) as e:
        raise ModelFileError(str(e) if str(e).startswith(str(path)) else f"{path}: {e}") from None
    raise ModelFileError(f"{path}: unknown model format {path.suffix!r}; use .safetensors, .pth or .pt")


def model_config(name_or_path: str | Path = "default") -> BaryConfig:
    """The config of a model file without building the model: from a safetensors header (or
    its tensors' shapes, read without their data), or from a ``.pth``'s shapes."""
    path = resolve_model_path(name_or_path)
    if path.suffix == ".safetensors":
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                if CONFIG_KEY in meta and meta.get(FORMAT_KEY, "model") == "model":
                    return BaryConfig.from_dict(json.loads(meta[CONFIG_KEY]))
                shapes = {k: torch.empty(f.get_slice(k).get_shape(), device="meta") for k in f.keys()}
        except (SafetensorError, ValueError, TypeError) as e:
            raise ModelFileError(f"{path}: not a readable model file ({clip(str(e))})") from None
        return infer_config(clean_state_dict(shapes))
    return load_model(path).config


def load_model(name_or_path: str | Path = "default", device: str | torch.device = "cpu") -> BaryNet:
    """Load a BaryNet in eval mode from a shipped name, safetensors or a .pth/.pt state dict,
    with its degradation readout when one is stored and was fitted on these weights (else the
    reason it was refused is kept in ``model.readout_refused``; restoring is unaffected)."""
    path = resolve_model_path(name_or_path)
    state, config, stored = read_model_file_with_readout(path)
    try:
        model = model_from_state_dict(state, config)
    except ValueError as e:
        raise ModelFileError(f"{path}: {e}") from None
    if stored is not None:
        try:
            model.readout = readout_from_file(stored, clean_state_dict(state), model.config)
        except ValueError as e:
            model.readout_refused = f"{path}: {e}"
    return model.to(device).eval()
