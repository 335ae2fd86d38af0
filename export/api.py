"""``export_model``: one call from a checkpoint to validated artifacts with manifests."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import time
from collections.abc import Callable
from pathlib import Path

import torch

import baryir.formats as formats_table
import baryir.model as model_code
import baryir.quantize as quantize_code
from baryir.checkpoints import load_model, resolve_model_path
from baryir.formats import Format, artifact_bytes, export_options, parse_request
from baryir.io.atomic import refuse_overwriting_inputs
from baryir.io.digest import file_sha256
from baryir.model.rewrites import DEPLOYMENT_REWRITES
from baryir.quantize.checkpoint import load_quantized, resolve_quantized
from baryir.runtimes.compare import check_tolerance

from .common import (
    DEFAULT_SHAPES,
    ExportContext,
    ExportValidationError,
    atomic_artifact,
    write_golden,
    write_manifest,
)

__all__ = ["ExportValidationError", "export_code_fingerprint", "export_model", "exporter_of", "source_checkpoint"]


def exporter_of(fmt: Format) -> Callable[[ExportContext, str, Path, bool, bool], dict]:
    """The format's exporter, named by the format table and imported only now (its library is
    needed only by whoever exports that format): ``(ctx, precision, folder, validate, large) -> facts``."""
    module, _, name = fmt.exporter.partition(":")
    return getattr(importlib.import_module(module), name)


def source_checkpoint(model: str | Path, precision: str) -> Path:
    """The checkpoint an export of ``model`` at ``precision`` reads: the float model, or for
    ``int8`` a quantized checkpoint (a shipped name gives its shipped INT8 version)."""
    if precision == "int8":
        return resolve_quantized(model)
    return resolve_model_path(model)


def export_code_fingerprint() -> str:
    """A hash of what turns a checkpoint into a graph: this project's model, quantization and
    export code, the format table (which rewrites each format's exports apply) and the installed
    PyTorch. A cache of exports keyed by it never serves an artifact made by other code (an export
    bug fixed, a rewrite changed)."""
    digest = hashlib.sha256(torch.__version__.encode() + Path(formats_table.__file__).read_bytes())
    for root in (Path(model_code.__file__).parent, Path(quantize_code.__file__).parent, Path(__file__).parent):
        for path in sorted(root.rglob("*")):
            if path.suffix in (".py", ".json"):
                digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


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
        qpath = source_checkpoint(model, "int8")
        contexts["int8"] = ExportContext(load_quantized(qpath), str(qpath), file_sha256(qpath), tuple(shapes), options)
    results = []
    for fmt, precision in jobs:
        if precision == "int8":  # quantized on the rewrites its checkpoint records, then the format's own
            ctx = dataclasses.replace(contexts["int8"], rewrites=fmt.int8_rewrites)
        else:  # the common rewrites, then the format's own
            ctx = dataclasses.replace(contexts["float"], rewrites=fmt.rewrites(contexts["float"].rewrites))
        folder = Path(out_dir) / f"{fmt.name}-{precision}"
        start = time.perf_counter()
        with atomic_artifact(folder) as tmp:
            facts = exporter_of(fmt)(ctx, precision, tmp, validate, large)
            # a graph checked in another runtime (TensorRT's ONNX in ONNX Runtime) is judged too
            failures = check_tolerance(precision, facts.get("validation", []) + facts.get("onnx_validation", []))
            if failures:
                raise ExportValidationError(f"{fmt.name} {precision} missed its tolerance: {failures}")
            facts["golden"] = write_golden(tmp, ctx)
            facts["export_seconds"] = round(time.perf_counter() - start, 1)
            facts["artifact_bytes"] = artifact_bytes(tmp)
            write_manifest(tmp, ctx, fmt.name, precision, fmt.artifact, **facts)
        results.append({"format": fmt.name, "precision": precision, "folder": str(folder), **facts})
    return results
