"""ONNX export: opset 17, one input ``image``, one output ``restored``, dynamic N/H/W.

FP16 graphs are traced from a half copy of the network, so the float32 islands written in
the model code (LayerNorm statistics, MDTA's L2 normalisation over H x W) appear as explicit
Cast nodes: every runtime that honours the graph's types (ONNX Runtime, TensorRT strongly
typed) keeps them in float32. Input and output stay float32.
"""

from __future__ import annotations

import contextlib
import json
import warnings
from pathlib import Path

import torch

from baryir.formats import INPUT_NAME, OUTPUT_NAME, PAD_MULTIPLE, needs_extra

from .common import ExportContext, validate_runner, validation_sizes
from .wrapper import DeploymentModel

OPSET = 17
_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "int8": torch.float32}


def _require():
    try:
        import onnx
        import onnxruntime
        import onnxslim
    except ImportError as e:
        raise ImportError(needs_extra("ONNX export", "onnx", f" ({e.name} is missing)")) from e
    return onnx, onnxruntime, onnxslim


def export_onnx(ctx: ExportContext, precision: str, path: Path) -> dict:
    """Trace, simplify, check and save the deployment graph; returns facts for the manifest."""
    onnx, _, onnxslim = _require()
    if precision not in _DTYPES:
        raise ValueError(f"ONNX precision must be one of {sorted(_DTYPES)}, not {precision!r}")
    if precision == "int8":
        from baryir.quantize.onnx_qdq import qdq_export_mode

        export_mode = qdq_export_mode(ctx.model)
    else:
        export_mode = contextlib.nullcontext()
    # an INT8 model was rewritten before it was quantized (its quantizers sit on that graph)
    rewrites = () if precision == "int8" else ctx.rewrites
    wrapper = DeploymentModel(ctx.model, compute_dtype=_DTYPES[precision], rewrites=rewrites)
    example = torch.rand(1, 3, 64, 64)
    dynamic = {0: "batch", 2: "height", 3: "width"}
    with warnings.catch_warnings(), export_mode:
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notices
        torch.onnx.export(
            wrapper,
            (example,),
            str(path),
            dynamo=False,
            opset_version=OPSET,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: dynamic, OUTPUT_NAME: dynamic},
            do_constant_folding=True,
        )
    graph = onnx.load(str(path))
    if precision == "int8":
        from baryir.quantize.onnx_qdq import fold_weight_quantizers

        graph = fold_weight_quantizers(graph)
    graph = onnxslim.slim(graph)
    graph = onnx.shape_inference.infer_shapes(graph, strict_mode=True)
    onnx.checker.check_model(graph, full_check=True)
    meta = {
        "baryir.config": json.dumps(ctx.model.config.to_dict()),
        "baryir.precision": precision,
        "baryir.pad_multiple": str(PAD_MULTIPLE),
        "baryir.layout": "NCHW RGB float32 [0,1]",
        "baryir.source_sha256": ctx.source_sha256,
    }
    del graph.metadata_props[:]
    for key, value in meta.items():
        graph.metadata_props.add(key=key, value=value)
    onnx.save(graph, str(path))
    return {"opset": OPSET, "nodes": len(graph.graph.node), "rewrites": list(wrapper.model.rewrites)}


def validate_onnx(ctx: ExportContext, precision: str, path: Path, large: bool = False) -> list[dict]:
    """Compare ONNX Runtime (CPU) with PyTorch FP32 at several sizes; one row per size."""
    from baryir.runtimes.backends.onnxruntime_runner import OnnxRuntimeRunner

    with OnnxRuntimeRunner(str(path), "cpu", precision) as runner:
        return validate_runner(ctx, runner, validation_sizes(large))
