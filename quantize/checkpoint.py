"""Quantized checkpoints: one safetensors file that reloads for export and evaluation.

Layout: the tensors are the NNCF-wrapped model's state dict (the BaryNet weights, fine-tuned
by QAT, plus every quantizer's scale and signedness); the header holds the BaryNet config
(``baryir.config``), NNCF's placement config (``baryir.nncf_config``: which quantizer sits
on which op), the scheme and the provenance. Reloading builds the BaryNet, re-inserts the
quantizers with ``nncf.torch.load_from_config`` (it only imports ``nncf.*`` classes) and
loads the tensors: no pickle anywhere.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from baryir.checkpoints import (
    CONFIG_KEY,
    FORMAT_KEY,
    QUANTIZED_KIND,
    read_safetensors,
    save_tensors,
    split_readout,
)
from baryir.formats import INT8_HAS_NO_READOUT, SHIPPED_INT8, SHIPPED_WEIGHTS
from baryir.model import BaryConfig, BaryNet
from baryir.model.rewrites import apply_rewrites

from .scheme import Int8Scheme, require_nncf

NNCF_KEY = "baryir.nncf_config"
SCHEME_KEY = "baryir.int8_scheme"
#: Shipped INT8 versions of shipped models: ``baryir/weights/int8/<name>.safetensors``.
SHIPPED_INT8_DIR = SHIPPED_WEIGHTS / SHIPPED_INT8


def save_quantized(
    model: BaryNet, path: str | Path, scheme: Int8Scheme, metadata: dict[str, Any] | None = None
) -> Path:
    """Atomically save an NNCF-quantized BaryNet (weights, quantizer state, configs), never with
    a degradation readout (:data:`baryir.formats.INT8_HAS_NO_READOUT`)."""
    nncf = require_nncf()

    meta = {
        CONFIG_KEY: json.dumps(model.config.to_dict()),
        NNCF_KEY: json.dumps(nncf.torch.get_config(model)),
        SCHEME_KEY: json.dumps(scheme.__dict__),
    }
    for key, value in (metadata or {}).items():
        meta[f"baryir.{key}"] = value if isinstance(value, str) else json.dumps(value)
    return save_tensors(model.state_dict(), path, QUANTIZED_KIND, meta)


def is_quantized(path: str | Path) -> bool:
    """True for a safetensors file written by :func:`save_quantized`."""
    path = Path(path)
    if path.suffix != ".safetensors" or not path.is_file():
        return False
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return (f.metadata() or {}).get(FORMAT_KEY) == QUANTIZED_KIND


def resolve_quantized(name_or_path: str | Path) -> Path:
    """A quantized checkpoint file, or the shipped INT8 version of a shipped model name."""
    path = Path(name_or_path)
    if is_quantized(path):
        return path
    shipped = SHIPPED_INT8_DIR / f"{name_or_path}.safetensors"
    if not path.exists() and shipped.is_file():
        return shipped
    raise FileNotFoundError(
        f"{name_or_path}: no INT8 model. int8 needs a quantized checkpoint: run "
        f"`baryir quantize --model {name_or_path} --method qat --data DIR... -o OUT` and pass "
        f"OUT/model-int8.safetensors (shipped INT8 models: "
        f"{sorted(p.stem for p in SHIPPED_INT8_DIR.glob('*.safetensors'))})"
    )


def read_header(path: str | Path) -> dict[str, Any]:
    """The decoded header of a quantized checkpoint (config, scheme, provenance)."""
    _, meta = read_safetensors(resolve_quantized(path))
    return {k.removeprefix("baryir."): _maybe_json(v) for k, v in meta.items() if k.startswith("baryir.")}


def _maybe_json(value: str) -> Any:
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value


def load_quantized(name_or_path: str | Path, device: str | torch.device = "cpu") -> BaryNet:
    """The NNCF-quantized BaryNet of a quantized checkpoint, in eval mode, without a degradation
    readout (``readout_refused`` says why; one stored by an earlier version is skipped)."""
    nncf = require_nncf()

    path = resolve_quantized(name_or_path)
    tensors, meta = read_safetensors(path)
    tensors, _ = split_readout(tensors, meta)  # one stored by an earlier version is not used
    model = BaryNet(BaryConfig.from_dict(json.loads(meta[CONFIG_KEY]))).eval()
    model = apply_rewrites(model, json.loads(meta[SCHEME_KEY]).get("rewrites", []))  # the graph it was quantized on
    model = nncf.torch.load_from_config(model, json.loads(meta[NNCF_KEY]))
    model.load_state_dict(tensors)
    model.readout_refused = f"{path}: {INT8_HAS_NO_READOUT}"
    return model.to(device).eval()
