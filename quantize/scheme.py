"""The one INT8 scheme every backend gets, and the NNCF parameters that produce it.

- Weights: symmetric, signed, per output channel, narrow range [-127, 127].
- Activations: symmetric, signed, per tensor, [-128, 127]. Every zero point is 0 and of
  type int8 — TensorRT's ONNX parser rejects UINT8 QuantizeLinear and non-zero zero points.
  NNCF (3.4) picks unsigned quantizers for non-negative activations and refuses
  ``signedness_to_force`` on activations under every hardware config, so
  :func:`force_signed` flips those quantizers to signed after range initialisation (their
  scale is kept; a non-negative tensor then uses 128 of the 256 levels). QAT starts from
  there, so it trains with the levels that deploy.
- Preset PERFORMANCE (symmetric activations; MIXED would make them asymmetric).
- Overflow fix: DISABLED in NNCF. Its fix halves the weight range (7-bit weights) for every
  target, to avoid the saturating int16 pair sums of x86 CPUs without VNNI. GPUs and the Neural
  Engine do not saturate, so the quantized model keeps 8-bit weights and only the OpenVINO
  export, which must be right on every CPU class, requantizes them to 7 bits
  (:func:`baryir.export.onnx_qdq.halve_weight_range`, docs/int8-cpus.md).
- Ignored scopes (kept in floating point on every backend), see :data:`IGNORED_SCOPES`;
  the default was chosen by the scope ablation in docs/quantization.md and INT8 report (``scripts/int8_report.py``
  over PTQ/QAT checkpoints made with each ``baryir quantize --ignored``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from baryir.formats import DEPLOYMENT_REWRITES, needs_extra

#: Regular expressions over NNCF node names (``<module path>/<op>/<call index>``).
_NORMS = r".*(norm\d|LN)/body/.*"
_ATTENTION = r".*/attn/(square|sum|clamp_min|sqrt|div|matmul|mul|softmax|__matmul__|__mul__)/\d+"
_OUTPUT = r"(output|refinement/\d+/.*)/.*"
#: The transformer blocks' residual adds (x + attn(...), x + ffn(...)): quantizing the residual
#: stream is what costs low-noise denoising most; the adds are elementwise, so keeping them in
#: float costs the int8 convolutions nothing.
_RESIDUAL = r".*/\d+/add/\d+"
#: The full-resolution (level-1) gated FFNs after their input projection: the depthwise conv,
#: GELU gate and output projection see the finest image detail, which per-tensor int8
#: activations round away (low-noise denoising loses most). ``project_in`` stays int8.
_FFN_LEVEL1 = (
    r"(encoder_level1|decoder_level1|refinement)/\d+/ffn/"
    r"(dwconv/conv2d|(gate|value)/1/conv2d|gelu|mul|project_out/conv2d)/\d+"
)

#: name -> regex patterns of nodes left in floating point.
IGNORED_SCOPES: dict[str, tuple[str, ...]] = {
    "none": (),
    "norms": (_NORMS,),
    "norms+attention": (_NORMS, _ATTENTION),
    "norms+attention+output": (_NORMS, _ATTENTION, _OUTPUT),
    "norms+attention+residual": (_NORMS, _ATTENTION, _RESIDUAL),
    "norms+attention+residual+ffn1": (_NORMS, _ATTENTION, _RESIDUAL, _FFN_LEVEL1),
}
DEFAULT_IGNORED = "norms+attention+residual+ffn1"

#: NNCF's placement options (``nncf.quantize``'s ``model_type`` and ``target_device``): where it
#: may put quantizers. ``transformer`` leaves the inputs of adds, means, powers and divisions in
#: float (what :data:`IGNORED_SCOPES` does by name) and uses the MIXED preset unless told;
#: a device picks that device's hardware config. Measured in docs/quantization.md.
MODEL_TYPES = ("default", "transformer")
TARGET_DEVICES = ("any", "cpu", "cpu_spr", "gpu", "npu")


@dataclass(frozen=True)
class Int8Scheme:
    """What a quantized checkpoint records about how it was quantized."""

    ignored: str = DEFAULT_IGNORED
    model_type: str = "default"
    target_device: str = "any"
    preset: str = "performance"
    overflow_fix: str = "disable"
    activations: str = "symmetric signed per-tensor int8"
    weights: str = "symmetric signed per-channel int8 (narrow range)"
    #: Exact rewrites applied before quantizing (:mod:`baryir.model.rewrites`); checkpoints made
    #: before rewrites existed record none.
    rewrites: tuple[str, ...] = DEPLOYMENT_REWRITES

    def __post_init__(self) -> None:
        if self.ignored not in IGNORED_SCOPES:
            raise ValueError(f"ignored scope must be one of {sorted(IGNORED_SCOPES)}, not {self.ignored!r}")
        if self.model_type not in MODEL_TYPES:
            raise ValueError(f"model type must be one of {list(MODEL_TYPES)}, not {self.model_type!r}")
        if self.target_device not in TARGET_DEVICES:
            raise ValueError(f"target device must be one of {list(TARGET_DEVICES)}, not {self.target_device!r}")


def require_nncf():
    """The ``nncf`` module, or an ImportError that names the extra to install."""
    # NNCF compiles a small C++ extension on first use (about a minute on 2 cores). Its default
    # 60 s timeout fails on a busy machine; give it room unless the user set a limit.
    os.environ.setdefault("NNCF_EXTENSION_LOAD_TIMEOUT", "900")
    try:
        import nncf
        import nncf.torch  # noqa: F401
    except ImportError as e:
        raise ImportError(needs_extra("INT8 quantization (NNCF)", "quantize")) from e
    return nncf


def nncf_quantize_kwargs(scheme: Int8Scheme, subset_size: int) -> dict:
    """Keyword arguments for ``nncf.quantize`` that implement ``scheme``."""
    nncf = require_nncf()
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix

    patterns = list(IGNORED_SCOPES[scheme.ignored])
    return {
        "preset": nncf.QuantizationPreset.PERFORMANCE,  # also for transformer: symmetric activations
        "target_device": nncf.TargetDevice[scheme.target_device.upper()],
        "model_type": nncf.ModelType.TRANSFORMER if scheme.model_type == "transformer" else None,
        "subset_size": subset_size,
        "fast_bias_correction": True,
        "ignored_scope": nncf.IgnoredScope(patterns=patterns, validate=False) if patterns else None,
        "advanced_parameters": AdvancedQuantizationParameters(overflow_fix=OverflowFix.DISABLE),
    }


def quantizers(model) -> list[tuple[str, object]]:
    """(name, NNCF quantizer module) pairs of a quantized model."""
    from nncf.torch.quantization.layers import BaseQuantizer

    return [(n, m) for n, m in model.named_modules() if isinstance(m, BaseQuantizer)]


def force_signed(model) -> int:
    """Make every quantizer signed (int8 zero point 0); returns how many were flipped."""
    flipped = 0
    for _, q in quantizers(model):
        if not q.signed:
            q.signed = True
            flipped += 1
    return flipped
