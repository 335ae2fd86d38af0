"""CoreML weight compression with ``coremltools.optimize.coreml`` (on the converted mlprogram).

Modes (``baryir export --format coreml --coreml-weights MODE``):

- ``int8``: linear symmetric int8 weights, per output channel (``constexpr_affine_dequantize``);
- ``pal6`` / ``pal4``: 6- / 4-bit k-means palettised weights, per tensor (``constexpr_lut_to_dense``).

These shrink the app bundle (4x / ~5x / 8x vs FP32 weights) but, per Apple's documentation,
weight-only compression brings no Neural Engine speed-up: weights are decompressed to FP16
before compute. W8A8 (``linear_quantize_activations``, about 2x on the Neural Engine of A17 Pro /
M4 and later) calibrates by running the model, which coremltools can only do on macOS;
:func:`quantize_activations_w8a8` does that there and refuses elsewhere. A camera app on
those chips should ship W8A8 (after checking its PSNR on device); on older chips, int8 weights.
"""

from __future__ import annotations

import platform
from pathlib import Path

import numpy as np

WEIGHT_MODES = ("float", "int8", "pal6", "pal4")


def _config(mode: str):
    import coremltools.optimize.coreml as cto

    if mode == "int8":
        op = cto.OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int8", granularity="per_channel")
    elif mode in ("pal6", "pal4"):
        op = cto.OpPalettizerConfig(mode="kmeans", nbits=int(mode[-1]), granularity="per_tensor")
    else:
        raise ValueError(f"CoreML weight mode must be one of {WEIGHT_MODES}, not {mode!r}")
    return cto.OptimizationConfig(global_config=op)


def compress_weights(mlmodel, mode: str):
    """A copy of ``mlmodel`` (an mlprogram ``MLModel``) with compressed weights."""
    import coremltools.optimize.coreml as cto

    if mode == "float":
        return mlmodel
    if mode == "int8":
        return cto.linear_quantize_weights(mlmodel, _config(mode))
    return cto.palettize_weights(mlmodel, _config(mode))


def quantize_activations_w8a8(mlmodel, samples: list[np.ndarray], input_name: str = "image"):
    """W8A8: int8 activations calibrated on ``samples`` (then int8 weights). macOS only."""
    if platform.system() != "Darwin":
        raise RuntimeError("CoreML W8A8 calibration runs the model, which coremltools can only do on macOS")
    import coremltools.optimize.coreml as cto
    from coremltools.optimize.coreml.experimental import OpActivationLinearQuantizerConfig, linear_quantize_activations

    config = cto.OptimizationConfig(global_config=OpActivationLinearQuantizerConfig(mode="linear_symmetric"))
    activations = linear_quantize_activations(mlmodel, config, [{input_name: s} for s in samples])
    return compress_weights(activations, "int8")


def compressed_ops(path: Path) -> list[str]:
    """The decompression ops (``constexpr_*``) in a saved mlpackage's program."""
    import coremltools as ct

    spec = ct.models.MLModel(str(path), skip_model_load=True).get_spec()
    ops = set()
    for function in spec.mlProgram.functions.values():
        for block in function.block_specializations.values():
            ops.update(op.type for op in block.operations if op.type.startswith("constexpr"))
    return sorted(ops)
