"""OpenVINO IR export (xml + bin) with dynamic batch, height and width.

``fp32`` keeps float32 weights; ``fp16`` compresses weights to float16 (the CPU plugin
decompresses them and computes at its inference precision). Validation forces the CPU
plugin to ``f32``: on CPUs with AMX/AVX512-BF16 it silently computes in bf16 otherwise.
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

import numpy as np
import torch

from baryir.formats import DEGRADATION_NAME, INPUT_NAME, OUTPUT_NAME, needs_extra
from baryir.runtimes.backends.openvino_runner import compile_openvino
from baryir.runtimes.compare import compare, compare_degradation

from .common import ExportContext, export_versions, validation_image, validation_sizes
from .onnx_export import export_onnx
from .onnx_qdq import CPU_WEIGHT_LEVELS, halve_weight_range
from .wrapper import DeploymentModel, reference_outputs


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
        model, halved = _int8_from_qdq(ctx, ov)
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
        return {"weights": weights, "weight_levels": [low, high], "rewrites": list(ctx.model.rewrites)}
    return {"weights": {"fp32": "float32", "fp16": "float16"}[precision], "rewrites": list(ctx.rewrites)}


def _int8_from_qdq(ctx: ExportContext, ov) -> tuple[object, int]:
    """The INT8 IR from the model's Q/DQ ONNX (so ONNX and OpenVINO share one set of int8
    weights), its weights requantized to 7 bits; returns (model, tensors requantized)."""
    import onnx

    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "model-qdq.onnx"
        export_onnx(ctx, "int8", source)
        graph = onnx.load(str(source))
        halved = halve_weight_range(graph)
        onnx.save(graph, str(source))
        return ov.convert_model(str(source)), halved


def validate_openvino(ctx: ExportContext, precision: str, path: Path, large: bool = False) -> list[dict]:
    """Max abs error against PyTorch FP32 at f32 inference precision and, for contrast, at
    the CPU plugin's default precision."""
    core = _require().Core()
    model = core.read_model(str(path))
    cache: dict = {}

    def compiled(hint: str | None, shape: tuple[int, ...] | None):
        """``hint`` None leaves the plugin's default precision (bf16 on AMX CPUs)."""
        if (hint, shape) not in cache:
            config = {"INFERENCE_PRECISION_HINT": hint} if hint else {}
            cache[hint, shape] = compile_openvino(core, model, "CPU", config, shape)
        return cache[hint, shape]

    rows = []
    for h, w in validation_sizes(large):
        image = validation_image(h, w)
        shape = tuple(image.shape) if precision == "int8" else None  # dynamic shapes: wrong INT8 on CPU
        restored, degradation = reference_outputs(ctx.model, image)
        ref = restored.numpy()
        outputs = compiled("f32", shape)(image.numpy())
        row = {"size": [h, w], **compare(np.asarray(outputs[0]), ref)}
        if degradation is not None:
            row.update(compare_degradation(np.asarray(outputs[DEGRADATION_NAME]), degradation.numpy()))
        try:  # the contrast row; a plugin whose default kernels are missing here (a capped ISA) says so
            default = compiled(None, shape)
            default_precision = default.get_property("INFERENCE_PRECISION_HINT").get_type_name()
            plugin = compare(np.asarray(default(image.numpy())[0]), ref)
            row["plugin_default"] = {"precision": default_precision, **{k: plugin[k] for k in ("max_abs", "psnr")}}
        except RuntimeError as e:
            row["plugin_default"] = {"error": str(e).strip().splitlines()[-1][:200]}
        rows.append(row)
    return rows


def export_artifact(ctx: ExportContext, precision: str, folder: Path, validate: bool, large: bool) -> dict:
    """The OpenVINO artifact in ``folder`` (``model.xml`` + ``model.bin``), validated on the CPU
    plugin; the manifest's facts."""
    facts = export_openvino(ctx, precision, folder / "model.xml")
    if validate:
        facts["validation"] = validate_openvino(ctx, precision, folder / "model.xml", large)
    return {**facts, "libraries": export_versions("openvino")}
