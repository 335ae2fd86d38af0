"""Post-training quantization with NNCF (the baseline QAT starts from)."""

from __future__ import annotations

import copy

import torch

from baryir.model import BaryNet
from baryir.model.rewrites import apply_rewrites

from .scheme import Int8Scheme, force_signed, nncf_quantize_kwargs, require_nncf


def quantize_ptq(model: BaryNet, batches: list[torch.Tensor], scheme: Int8Scheme | None = None) -> BaryNet:
    """An NNCF-quantized copy of ``model`` after the scheme's exact rewrites (fake-quantized in
    PyTorch, exportable to Q/DQ), with activation ranges from ``batches`` of degraded images,
    every quantizer signed."""
    nncf = require_nncf()
    scheme = scheme or Int8Scheme()
    if not batches:
        raise ValueError("PTQ needs calibration batches")
    fp32 = apply_rewrites(copy.deepcopy(model).cpu().eval(), scheme.rewrites)
    fp32.readout = None  # INT8 models carry none (baryir.formats.INT8_HAS_NO_READOUT)
    with torch.no_grad():
        quantized = nncf.quantize(fp32, nncf.Dataset(batches), **nncf_quantize_kwargs(scheme, len(batches)))
    force_signed(quantized)
    return quantized.eval()
