"""OpenVINO IR export (xml + bin) with dynamic batch, height and width.

``fp32`` keeps float32 weights; ``fp16`` compresses weights to float16 (the CPU plugin
decompresses them and computes at its inference precision). Validation runs the artifact
through its runner at ``f32`` (on CPUs with AMX/AVX512-BF16 the plugin silently computes in
bf16 otherwise) and reports bf16 beside it.
``int8`` reads the Q/DQ ONNX of the quantized model (FakeQuantize in the IR) with its weights
requantized to 7 bits (:func:`.onnx_qdq.halve_weight_range`): CPUs without VNNI
(AVX2 only) saturate int16 pair sums with full-range 8-bit weights, and one artifact must be
right on every CPU class. Its float parts (the ignored scope) compute at the inference
precision the runner sets (f32 unless asked otherwise).
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import torch

from baryir.formats import DEGRADATION_NAME, INPUT_NAME, OUTPUT_NAME, needs_extra
from baryir.runtimes.backends.openvino_runner import OpenVINORunner

from .common import ExportContext, export_versions, validate_runner, validation_sizes
from .onnx_export import export_onnx
from .onnx_qdq import CPU_WEIGHT_LEVELS, halve_weight_range, weights_not_7bit
from .wrapper import DeploymentModel


def _require():
    try:
        import openvino as ov
    except ImportError as e:
        raise ImportError(needs_extra("OpenVINO export", "openvino")) from e
    return ov


def export_openvino(ctx: ExportContext, precision: str, path: Path) -> dict:
    """Convert the PyTorch deployment graph to IR at ``path`` (model.xml + model.bin)."""
    ov = _require()
    if precision not in ("fp32", "fp16", "int8"):
        raise ValueError(f"OpenVINO precision must be fp32, fp16 or int8, not {precision!r}")
    if precision == "int8":
        model, halved, rewrites = _int8_from_qdq(ctx, ov)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = ov.convert_model(
                DeploymentModel(ctx.model, rewrites=ctx.rewrites),
                example_input=torch.rand(1, 3, 64, 64),
                input=[ov.PartialShape([-1, 3, -1, -1])],
            )
    model.inputs[0].get_tensor().set_names({INPUT_NAME})
    model.outputs[0].get_tensor().set_names({OUTPUT_NAME})
    if len(model.outputs) > 1:
        model.outputs[1].get_tensor().set_names({DEGRADATION_NAME})
    ov.save_model(model, str(path), compress_to_fp16=precision == "fp16")
    if precision == "int8":
        low, high = CPU_WEIGHT_LEVELS
        weights = f"int8 weights in [{low}, {high}] ({halved} tensors; right without VNNI), FakeQuantize from Q/DQ"
        return {"weights": weights, "weight_levels": [low, high], "rewrites": rewrites}
    return {"weights": {"fp32": "float32", "fp16": "float16"}[precision], "rewrites": list(ctx.rewrites)}


def _int8_from_qdq(ctx: ExportContext, ov) -> tuple[object, int, list[str]]:
    """The INT8 IR from the model's Q/DQ ONNX (so ONNX and OpenVINO share one set of int8
    weights), its weights requantized to 7 bits; returns (model, tensors requantized, rewrites)."""
    import onnx

    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "model-qdq.onnx"
        rewrites = export_onnx(ctx, "int8", source)["rewrites"]
        graph = onnx.load(str(source))
        halved = halve_weight_range(graph)
        wrong = weights_not_7bit(graph)
        if wrong or not halved:
            what = "; ".join(wrong[:3]) or "no int8 weights in Q/DQ form"
            raise ValueError(
                f"{ctx.source}: its INT8 graph would be wrong on CPUs without VNNI (weights not requantized "
                f"to 7 bits: {what}); this is an export bug, please report it"
            )
        onnx.save(graph, str(source))
        return ov.convert_model(str(source)), halved, rewrites


def validate_openvino(ctx: ExportContext, precision: str, path: Path, large: bool = False) -> list[dict]:
    """The IR through :class:`OpenVINORunner` on the CPU plugin at f32 float precision, against
    PyTorch FP32; beside each row, for contrast, the same IR at bf16 (what the plugin computes by
    default on CPUs with bf16; f32 where this CPU has none, and the runner's label says so)."""
    quantized = precision == "int8"
    with OpenVINORunner(str(path), "CPU", "int8" if quantized else "fp32", quantized=quantized) as runner:
        try:
            contrast = OpenVINORunner(str(path), "CPU", "int8+bf16" if quantized else "bf16", quantized=quantized)
        except RuntimeError as e:  # a plugin whose bf16 kernels are missing here says so in the rows
            return validate_runner(ctx, runner, validation_sizes(large), contrast=str(e).strip().splitlines()[-1][:200])
        with contrast:
            return validate_runner(ctx, runner, validation_sizes(large), contrast=contrast)


def export_artifact(ctx: ExportContext, precision: str, folder: Path, validate: bool, large: bool) -> dict:
    """The OpenVINO artifact in ``folder`` (``model.xml`` + ``model.bin``), validated on the CPU
    plugin; the manifest's facts."""
    facts = export_openvino(ctx, precision, folder / "model.xml")
    if validate:
        facts["validation"] = validate_openvino(ctx, precision, folder / "model.xml", large)
    return {**facts, "libraries": export_versions("openvino")}
