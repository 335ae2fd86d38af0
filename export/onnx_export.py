"""ONNX export: opset 17, one input ``image``, the output ``restored`` (and ``degradation``
when the model has a readout), dynamic N/H/W.

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

from baryir.formats import DEGRADATION_NAME, INPUT_NAME, OUTPUT_NAME, PAD_MULTIPLE, needs_extra
from baryir.model.rewrites import pending_rewrites
from baryir.runtimes.backends.onnxruntime_runner import OnnxRuntimeRunner

from .common import ExportContext, export_versions, validate_runner, validation_sizes
from .onnx_qdq import fold_weight_quantizers, qdq_export_mode
from .wrapper import AnalysisModel, DeploymentModel

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


def export_onnx(ctx: ExportContext, precision: str, path: Path, analysis: Path | None = None) -> dict:
    """Trace, simplify, check and save the deployment graph; returns facts for the manifest.
    With ``analysis`` and a model with a readout, also the encoder-only graph that computes
    ``degradation`` alone (ONNX Runtime runs every node of a graph whatever outputs are asked)."""
    _require()
    if precision not in _DTYPES:
        raise ValueError(f"ONNX precision must be one of {sorted(_DTYPES)}, not {precision!r}")
    # an INT8 model was rewritten before it was quantized (its quantizers sit on that graph);
    # what it was not rewritten with yet is applied here
    rewrites = pending_rewrites(ctx.model, ctx.rewrites)
    # the formats of one export that run the same graph (ONNX, TensorRT's ONNX, OpenVINO INT8's
    # Q/DQ source) trace it once: the same model, precision and rewrites give the same file
    key = ("onnx", precision, rewrites)
    cached = ctx.shared.get((*key, True)) or (ctx.shared.get((*key, False)) if analysis is None else None)
    if cached:
        (graph, analysis_graph), facts = cached
        path.write_bytes(graph)
        if analysis is not None and analysis_graph is not None:
            analysis.write_bytes(analysis_graph)
        else:
            facts = {k: v for k, v in facts.items() if not k.startswith("analysis_")}
        return dict(facts)
    wrapper = DeploymentModel(ctx.model, compute_dtype=_DTYPES[precision], rewrites=rewrites)
    # Q/DQ export mode on the quantizers of the module traced: a rewrite or a cast works on a copy,
    # whose quantizers are its own (set on ctx.model, a copy traced NNCF's FakeQuantize op instead)
    export_mode = qdq_export_mode(wrapper.model) if precision == "int8" else contextlib.nullcontext()
    dynamic = {0: "batch", 2: "height", 3: "width"}
    outputs = [OUTPUT_NAME, DEGRADATION_NAME] if wrapper.analyzes else [OUTPUT_NAME]
    axes = {INPUT_NAME: dynamic, OUTPUT_NAME: dynamic, DEGRADATION_NAME: {0: "batch"}}
    with export_mode:  # an INT8 model's quantizers trace to Q/DQ pairs in both graphs
        _trace(wrapper, path, outputs, axes)
        if analysis is not None and wrapper.analyzes:
            _trace(AnalysisModel(wrapper), analysis, [DEGRADATION_NAME], axes)
    facts = {"opset": OPSET, "nodes": _finish(ctx, precision, path), "rewrites": list(wrapper.model.rewrites)}
    if analysis is not None and wrapper.analyzes:
        facts["analysis_artifact"] = analysis.name
        facts["analysis_nodes"] = _finish(ctx, precision, analysis)
    graphs = (path.read_bytes(), analysis.read_bytes() if "analysis_artifact" in facts else None)
    ctx.shared[(*key, analysis is not None)] = graphs, dict(facts)
    return facts


def _trace(module: torch.nn.Module, path: Path, outputs: list[str], axes: dict) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notices
        torch.onnx.export(
            module,
            (torch.rand(1, 3, 64, 64),),
            str(path),
            dynamo=False,
            opset_version=OPSET,
            input_names=[INPUT_NAME],
            output_names=outputs,
            dynamic_axes={name: axes[name] for name in (INPUT_NAME, *outputs)},
            do_constant_folding=True,
        )


def _finish(ctx: ExportContext, precision: str, path: Path) -> int:
    """Fold, simplify, check and label a traced graph in place; its node count."""
    onnx, _, onnxslim = _require()
    graph = onnx.load(str(path))
    if precision == "int8":
        graph = fold_weight_quantizers(graph)
    # ONNX's shape inference (C++) gives onnxslim the types it needs; its own symbolic one (Python)
    # was ~70 % of an export and finds the same graph (node for node, on fp32, fp16 and int8)
    graph = onnxslim.slim(onnx.shape_inference.infer_shapes(graph, data_prop=True), no_shape_infer=True)
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
    return len(graph.graph.node)


def validate_onnx(
    ctx: ExportContext, precision: str, path: Path, large: bool = False, analysis: Path | None = None
) -> list[dict]:
    """Compare ONNX Runtime (CPU) with PyTorch FP32 at several sizes; one row per size. With an
    ``analysis`` graph, a row's ``degradation_max_abs`` is the larger of the two graphs'."""
    sizes = validation_sizes(large)
    with OnnxRuntimeRunner(str(path), "cpu", precision) as runner:
        if analysis is None or not analysis.exists():
            return validate_runner(ctx, runner, sizes)
        with OnnxRuntimeRunner(str(path), "cpu", precision, analysis=str(analysis)) as analysing:
            return validate_runner(ctx, runner, sizes, analysing)


def export_artifact(ctx: ExportContext, precision: str, folder: Path, validate: bool, large: bool) -> dict:
    """The ONNX artifact in ``folder``: ``model.onnx`` (and ``analyze.onnx`` with a readout),
    validated in ONNX Runtime; the manifest's facts."""
    facts = export_onnx(ctx, precision, folder / "model.onnx", analysis=folder / "analyze.onnx")
    if validate:
        facts["validation"] = validate_onnx(ctx, precision, folder / "model.onnx", large, folder / "analyze.onnx")
    return {**facts, "libraries": export_versions("onnx", "onnxruntime", "onnxslim")}
