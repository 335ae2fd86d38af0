"""``export_model``: one call from a checkpoint to validated artifacts with manifests."""

from __future__ import annotations

import time
from pathlib import Path

from baryir.checkpoints import file_sha256, load_model, resolve_model_path
from baryir.formats import FORMATS, Format, artifact_bytes, export_options, parse_request
from baryir.io.atomic import refuse_overwriting_inputs
from baryir.model.rewrites import DEPLOYMENT_REWRITES
from baryir.runtimes.compare import check_tolerance

from .common import (
    DEFAULT_SHAPES,
    ExportContext,
    atomic_artifact,
    export_versions,
    validate_runner,
    write_golden,
    write_manifest,
)


class ExportValidationError(RuntimeError):
    """An artifact missed its tolerance against PyTorch; it was not written."""


def _onnx(ctx: ExportContext, precision: str, tmp: Path, validate: bool, large: bool) -> dict:
    from .onnx_export import export_onnx, validate_onnx

    facts = export_onnx(ctx, precision, tmp / "model.onnx", analysis=tmp / "analyze.onnx")
    if validate:
        facts["validation"] = validate_onnx(ctx, precision, tmp / "model.onnx", large, tmp / "analyze.onnx")
    return {**facts, "libraries": export_versions("onnx", "onnxruntime", "onnxslim")}


def _openvino(ctx: ExportContext, precision: str, tmp: Path, validate: bool, large: bool) -> dict:
    from .openvino_export import export_openvino, validate_openvino

    facts = export_openvino(ctx, precision, tmp / "model.xml")
    if validate:
        facts["validation"] = validate_openvino(ctx, precision, tmp / "model.xml", large)
    return {**facts, "libraries": export_versions("openvino")}


def _not_validated_here(reason: str, instead: str) -> dict:
    """Manifest facts for an artifact whose runtime is not on this machine: no numbers under its name."""
    return {
        "validation": [],
        "validated_here": False,
        "validation_note": f"not validated here ({reason}); checked instead: {instead}. "
        "Run `baryir verify` on the target device.",
    }


def _coreml(ctx: ExportContext, precision: str, tmp: Path, validate: bool, large: bool) -> dict:
    from .coreml_export import export_coreml, spec_summary

    opts = ctx.options
    facts = export_coreml(
        ctx,
        precision,
        tmp / "model.mlpackage",
        io=opts["coreml_io"],
        flexible=opts["coreml_flexible"],
        weights=opts["coreml_weights"],
    )
    facts["spec"] = spec_summary(tmp / "model.mlpackage")
    facts["prediction_validated"] = False  # CoreML prediction runs on macOS only
    reason = FORMATS["coreml"].cannot_run_here()
    if reason:
        facts.update(_not_validated_here(reason, "the converted program's spec"))
    if validate and reason is None and facts["io"] == "tensor":
        from baryir.runtimes.compare import compare

        from .common import validation_image
        from .coreml_export import predict_coreml
        from .wrapper import reference_output

        h, w = ctx.shapes[0]
        image = validation_image(h, w)
        out = predict_coreml(tmp / "model.mlpackage", image.numpy())
        facts["validation"] = [{"size": [h, w], **compare(out, reference_output(ctx.model, image).numpy())}]
        facts["prediction_validated"] = True
    return {**facts, "libraries": export_versions("coremltools")}


def _tensorrt(ctx: ExportContext, precision: str, tmp: Path, validate: bool, large: bool) -> dict:
    from .onnx_export import export_onnx, validate_onnx
    from .tensorrt_export import (
        build_engine,
        check_onnx_for_tensorrt,
        profile_from_shapes,
        tensorrt_available,
        trtexec_command,
        validate_profile,
    )

    profile = profile_from_shapes(ctx.shapes, ctx.options["max_batch"])
    problems = validate_profile(profile)
    export_onnx(ctx, precision, tmp / "model.onnx")
    problems += check_onnx_for_tensorrt(tmp / "model.onnx")
    if problems:
        raise ExportValidationError(f"the ONNX for TensorRT fails static checks: {problems}")
    facts: dict = {"profile": profile.__dict__, "static_checks": "passed"}
    if validate:  # the graph TensorRT will run, checked in ONNX Runtime (never reported as TensorRT's)
        facts["onnx_validation"] = validate_onnx(ctx, precision, tmp / "model.onnx", large)
    command = trtexec_command("model.onnx", "model.engine", profile)
    (tmp / "build_engine.sh").write_text(f"#!/bin/sh\n# Build the engine on the target device.\nset -e\n{command}\n")
    reason = tensorrt_available()
    if reason is None:
        facts.update(
            build_engine(tmp / "model.onnx", tmp / "model.engine", [profile], timing_cache=tmp / "timing.cache")
        )
        facts["engine_built"] = True
        if validate:
            from baryir.runtimes.backends.tensorrt_runner import TensorRTRunner

            with TensorRTRunner(str(tmp / "model.engine"), None, precision) as runner:
                facts["validation"] = validate_runner(ctx, runner, list(ctx.shapes))
    else:
        facts.update(engine_built=False, reason=f"{reason}: run build_engine.sh on the target")
        facts.update(
            _not_validated_here(
                reason, "the same ONNX graph in ONNX Runtime (onnx_validation) and TensorRT's static ONNX checks"
            )
        )
    facts["trtexec"] = command
    return {**facts, "libraries": export_versions("onnx", "onnxruntime", "tensorrt")}


_EXPORTERS = {"onnx": _onnx, "openvino": _openvino, "coreml": _coreml, "tensorrt": _tensorrt}


def source_checkpoint(model: str | Path, precision: str) -> Path:
    """The checkpoint an export of ``model`` at ``precision`` reads: the float model, or for
    ``int8`` a quantized checkpoint (a shipped name gives its shipped INT8 version)."""
    if precision == "int8":
        from baryir.quantize.checkpoint import resolve_quantized

        return resolve_quantized(model)
    return resolve_model_path(model)


def export_model(
    model: str | Path,
    formats: str,
    precisions: str,
    out_dir: str | Path,
    shapes: tuple[tuple[int, int], ...] = DEFAULT_SHAPES,
    validate: bool = True,
    large: bool = False,
    rewrites: tuple[str, ...] = DEPLOYMENT_REWRITES,
    **options,
) -> list[dict]:
    """Export ``model`` to every (format, precision) asked for, each into
    ``out_dir/<format>-<precision>/`` with ``manifest.json`` and ``golden.npz``.

    ``options`` are the per-format options of :data:`baryir.formats.FORMATS` (one that no
    requested format takes is an error). ``rewrites`` are the exact graph rewrites of the float
    exports (``()`` exports the training graph as it is, for comparisons); an INT8 model carries
    the rewrites it was quantized with. Every combination is checked before any work; an
    artifact that misses its tolerance against PyTorch raises :class:`ExportValidationError`
    and is not written.
    """
    jobs: list[tuple[Format, str]] = parse_request(formats, precisions)
    options = export_options([f for f, _ in jobs], options)
    sources = [source_checkpoint(model, "int8" if p == "int8" else "fp32") for _, p in jobs]
    refuse_overwriting_inputs(sources, [Path(out_dir) / f"{fmt.name}-{p}" for fmt, p in jobs])
    contexts = {}
    if any(p != "int8" for _, p in jobs):
        path = source_checkpoint(model, "fp32")
        contexts["float"] = ExportContext(
            load_model(path), str(model), file_sha256(path), tuple(shapes), options, tuple(rewrites)
        )
    if any(p == "int8" for _, p in jobs):  # the quantized model: its fake-quantized output is the reference
        from baryir.quantize.checkpoint import load_quantized

        qpath = source_checkpoint(model, "int8")
        contexts["int8"] = ExportContext(load_quantized(qpath), str(qpath), file_sha256(qpath), tuple(shapes), options)
    results = []
    for fmt, precision in jobs:
        ctx = contexts["int8" if precision == "int8" else "float"]
        folder = Path(out_dir) / f"{fmt.name}-{precision}"
        start = time.perf_counter()
        with atomic_artifact(folder) as tmp:
            facts = _EXPORTERS[fmt.name](ctx, precision, tmp, validate, large)
            # a graph checked in another runtime (TensorRT's ONNX in ONNX Runtime) is judged too
            failures = check_tolerance(precision, facts.get("validation", []) + facts.get("onnx_validation", []))
            if failures:
                raise ExportValidationError(f"{fmt.name} {precision} missed its tolerance: {failures}")
            facts["golden"] = write_golden(tmp, ctx.model)
            facts["export_seconds"] = round(time.perf_counter() - start, 1)
            facts["artifact_bytes"] = artifact_bytes(tmp)
            write_manifest(tmp, ctx, fmt.name, precision, fmt.artifact, **facts)
        results.append({"format": fmt.name, "precision": precision, "folder": str(folder), **facts})
    return results
