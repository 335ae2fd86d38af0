"""TensorRT engines (Jetson and data-centre GPUs) from the ONNX export.

Written against the TensorRT 10 Python API (``tensorrt.Builder``, ``OnnxParser``,
``IBuilderConfig``). Engines are built *strongly typed*: the ONNX of the requested
precision decides every tensor's type (FP32 graph with TF32 disabled; FP16 graph with its
float32 islands; INT8 from explicit Q/DQ), so TensorRT runs exactly the graph that ONNX
Runtime was validated on. ``trtexec_command`` gives the same build for users who build on
the device. What runs without TensorRT (operator coverage, Q/DQ zero points, profiles) is
checked by :func:`check_onnx_for_tensorrt` and :func:`validate_profile`.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from pathlib import Path

from baryir.formats import INPUT_NAME, PAD_MULTIPLE
from baryir.runtimes.backends.tensorrt_runner import TensorRTRunner

from .common import ExportContext, ExportValidationError, export_versions, not_validated_here, validate_runner
from .onnx_export import export_onnx, validate_onnx

OPS_FILE = Path(__file__).with_name("tensorrt_onnx_ops.json")


def supported_ops() -> frozenset[str]:
    """ONNX operators TensorRT 10's parser supports (data file, with its source)."""
    return frozenset(json.loads(OPS_FILE.read_text())["supported"])


@dataclass(frozen=True)
class Profile:
    """One optimisation profile for ``image``: (N, H, W) at min, opt and max."""

    min: tuple[int, int, int]
    opt: tuple[int, int, int]
    max: tuple[int, int, int]

    def nchw(self, which: str) -> tuple[int, int, int, int]:
        n, h, w = getattr(self, which)
        return (n, 3, h, w)


def profile_from_shapes(shapes: tuple[tuple[int, int], ...], max_batch: int = 1) -> Profile:
    """min/max cover every (H, W) in ``shapes``; opt is the first one (the common case)."""
    hs, ws = [s[0] for s in shapes], [s[1] for s in shapes]
    return Profile(min=(1, min(hs), min(ws)), opt=(1, *shapes[0]), max=(max_batch, max(hs), max(ws)))


def validate_profile(p: Profile) -> list[str]:
    """Problems with a profile (empty when TensorRT would accept it and BaryNet can run it)."""
    problems = []
    for which in ("min", "opt", "max"):
        n, h, w = getattr(p, which)
        if n < 1:
            problems.append(f"{which} batch must be >= 1, got {n}")
        if h % PAD_MULTIPLE or w % PAD_MULTIPLE or h < PAD_MULTIPLE or w < PAD_MULTIPLE:
            problems.append(f"{which} {h}x{w} must be positive multiples of {PAD_MULTIPLE}")
    for i, axis in enumerate(("batch", "height", "width")):
        if not p.min[i] <= p.opt[i] <= p.max[i]:
            problems.append(f"{axis}: need min <= opt <= max, got {p.min[i]}, {p.opt[i]}, {p.max[i]}")
    return problems


def check_onnx_for_tensorrt(path: Path) -> list[str]:
    """Static checks of an ONNX graph against TensorRT's parser: every operator supported,
    every Q/DQ with an initializer scale and an int8 zero point of 0 (symmetric)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    init = {t.name: t for t in model.graph.initializer}
    consts = {n.output[0]: n.attribute[0].t for n in model.graph.node if n.op_type == "Constant" and n.attribute}
    ok = supported_ops()
    problems = sorted(
        {
            f"operator {n.op_type} is not supported by TensorRT's ONNX parser"
            for n in model.graph.node
            if n.domain in ("", "ai.onnx") and n.op_type not in ok
        }
    )
    problems += [
        f"operator {n.domain}::{n.op_type} is outside the ONNX domain"
        for n in model.graph.node
        if n.domain not in ("", "ai.onnx")
    ]
    for n in model.graph.node:
        if n.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        if n.input[1] not in init and n.input[1] not in consts:
            problems.append(f"{n.name}: scale must be an initializer")
        zp_name = n.input[2] if len(n.input) > 2 else ""
        zp = init.get(zp_name) or consts.get(zp_name)
        if zp is None:
            problems.append(f"{n.name}: no zero point (defaults to UINT8, which TensorRT rejects)")
            continue
        if zp.data_type != onnx.TensorProto.INT8:
            problems.append(f"{n.name}: zero point is {onnx.TensorProto.DataType.Name(zp.data_type)}, not INT8")
        if numpy_helper.to_array(zp).any():
            problems.append(f"{n.name}: non-zero zero point (TensorRT quantization is symmetric)")
    return problems


def trtexec_command(
    onnx_path: str,
    engine_path: str,
    profile: Profile,
    workspace_mb: int = 4096,
    opt_level: int = 3,
    timing_cache: str = "timing.cache",
) -> str:
    """The equivalent ``trtexec`` build for Jetson users who build on the device."""

    def dims(which: str) -> str:
        return f"{INPUT_NAME}:" + "x".join(str(v) for v in profile.nchw(which))

    args = [
        "trtexec",
        f"--onnx={onnx_path}",
        f"--saveEngine={engine_path}",
        "--stronglyTyped",
        f"--minShapes={dims('min')}",
        f"--optShapes={dims('opt')}",
        f"--maxShapes={dims('max')}",
        f"--memPoolSize=workspace:{workspace_mb}M",
        f"--builderOptimizationLevel={opt_level}",
        f"--timingCacheFile={timing_cache}",
        "--noTF32",
    ]
    return " ".join(shlex.quote(a) for a in args)


def tensorrt_available() -> str | None:
    """None when TensorRT and a CUDA GPU can build engines here, else the reason why not."""
    return TensorRTRunner.unavailable_here()


def build_engine(
    onnx_path: Path,
    engine_path: Path,
    profiles: list[Profile],
    workspace_mb: int = 4096,
    opt_level: int = 3,
    timing_cache: Path | None = None,
) -> dict:
    """Parse the ONNX and build a strongly typed engine with the given profiles."""
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise RuntimeError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb << 20)
    config.builder_optimization_level = opt_level
    config.clear_flag(trt.BuilderFlag.TF32)  # FP32 means FP32: parity with PyTorch at 1e-4
    for p in profiles:
        problems = validate_profile(p)
        if problems:
            raise ValueError(f"invalid TensorRT profile: {problems}")
        profile = builder.create_optimization_profile()
        profile.set_shape(INPUT_NAME, p.nchw("min"), p.nchw("opt"), p.nchw("max"))
        config.add_optimization_profile(profile)
    cache_bytes = timing_cache.read_bytes() if timing_cache and timing_cache.exists() else b""
    cache = config.create_timing_cache(cache_bytes)
    config.set_timing_cache(cache, ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build an engine from {onnx_path} (see the log above)")
    engine_path.write_bytes(bytes(serialized))
    if timing_cache:
        timing_cache.write_bytes(bytes(config.get_timing_cache().serialize()))
    return {"tensorrt": trt.__version__, "profiles": [p.__dict__ for p in profiles]}


def export_artifact(ctx: ExportContext, precision: str, folder: Path, validate: bool, large: bool) -> dict:
    """The TensorRT artifact in ``folder``: the ONNX of the precision (static checks, validated in
    ONNX Runtime as ``onnx_validation``), ``build_engine.sh``, and the engine with its own
    validation where TensorRT and a GPU are here; the manifest's facts."""
    profile = profile_from_shapes(ctx.shapes, ctx.options["max_batch"])
    problems = validate_profile(profile)
    export_onnx(ctx, precision, folder / "model.onnx")
    problems += check_onnx_for_tensorrt(folder / "model.onnx")
    if problems:
        raise ExportValidationError(f"the ONNX for TensorRT fails static checks: {problems}")
    facts: dict = {"profile": profile.__dict__, "static_checks": "passed"}
    if validate:  # the graph TensorRT will run, checked in ONNX Runtime (never reported as TensorRT's)
        facts["onnx_validation"] = validate_onnx(ctx, precision, folder / "model.onnx", large)
    command = trtexec_command("model.onnx", "model.engine", profile)
    (folder / "build_engine.sh").write_text(f"#!/bin/sh\n# Build the engine on the target device.\nset -e\n{command}\n")
    reason = tensorrt_available()
    if reason is None:
        engine = folder / "model.engine"
        facts.update(build_engine(folder / "model.onnx", engine, [profile], timing_cache=folder / "timing.cache"))
        facts["engine_built"] = True
        if validate:
            with TensorRTRunner(str(engine), None, precision) as runner:
                facts["validation"] = validate_runner(ctx, runner, list(ctx.shapes))
    else:
        facts.update(engine_built=False, reason=f"{reason}: run build_engine.sh on the target")
        facts.update(
            not_validated_here(
                reason, "the same ONNX graph in ONNX Runtime (onnx_validation) and TensorRT's static ONNX checks"
            )
        )
    facts["trtexec"] = command
    return {**facts, "libraries": export_versions("onnx", "onnxruntime", "tensorrt")}
