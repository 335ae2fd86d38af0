"""OpenVINO IR export (xml + bin) with dynamic batch, height and width.

``fp32`` keeps float32 weights; ``fp16`` compresses weights to float16 (the CPU plugin
decompresses them and computes at its inference precision). Validation forces the CPU
plugin to ``f32``: on CPUs with AMX/AVX512-BF16 it silently computes in bf16 otherwise.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from .common import ExportContext, compare, validation_image, validation_sizes
from .wrapper import INPUT_NAME, OUTPUT_NAME, DeploymentModel, reference_output


def _require():
    try:
        import openvino as ov
    except ImportError as e:
        raise ImportError("OpenVINO export needs the openvino extra: pip install 'baryir[openvino]'") from e
    return ov


def export_openvino(ctx: ExportContext, precision: str, path: Path) -> dict:
    """Convert the PyTorch deployment graph to IR at ``path`` (model.xml + model.bin)."""
    ov = _require()
    if precision not in ("fp32", "fp16"):
        raise ValueError("OpenVINO int8 comes from `baryir quantize` (INT8 IR), not from a float export")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = ov.convert_model(
            DeploymentModel(ctx.model), example_input=torch.rand(1, 3, 64, 64), input=[ov.PartialShape([-1, 3, -1, -1])]
        )
    model.inputs[0].get_tensor().set_names({INPUT_NAME})
    model.outputs[0].get_tensor().set_names({OUTPUT_NAME})
    ov.save_model(model, str(path), compress_to_fp16=precision == "fp16")
    return {"weights": "float16" if precision == "fp16" else "float32"}


def compile_ir(path: Path, device: str = "CPU", inference_precision: str | None = "f32"):
    """Compile an IR; ``inference_precision`` None leaves the plugin's default (bf16 on AMX)."""
    ov = _require()
    config = {"INFERENCE_PRECISION_HINT": inference_precision} if inference_precision else {}
    return ov.Core().compile_model(str(path), device, config)


def validate_openvino(ctx: ExportContext, precision: str, path: Path, large: bool = False) -> list[dict]:
    """Max abs error against PyTorch FP32 at f32 inference precision and, for contrast, at
    the CPU plugin's default precision."""
    compiled = {
        "f32": compile_ir(path, inference_precision="f32"),
        "default": compile_ir(path, inference_precision=None),
    }
    default_precision = compiled["default"].get_property("INFERENCE_PRECISION_HINT").get_type_name()
    rows = []
    for h, w in validation_sizes(large):
        image = validation_image(h, w)
        ref = reference_output(ctx.model, image).numpy()
        row = {"size": [h, w], **compare(np.asarray(compiled["f32"](image.numpy())[0]), ref)}
        default = compare(np.asarray(compiled["default"](image.numpy())[0]), ref)
        row["plugin_default"] = {"precision": default_precision, "max_abs": default["max_abs"], "psnr": default["psnr"]}
        rows.append(row)
    return rows
