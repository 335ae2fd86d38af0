"""CoreML export: an ``mlprogram`` for iOS 16+, for camera apps or tensor pipelines.

- ``io="image"`` (default): ``ImageType`` RGB input with scale 1/255 and an ``ImageType``
  RGB output (the graph clamps and scales to 0-255): CVPixelBuffer in, CVPixelBuffer out.
- ``io="tensor"``: float32 ``TensorType`` in [0, 1] both ways, like the other formats.
- Shapes: ``EnumeratedShapes`` of camera/preview sizes by default (the Neural Engine runs
  those); ``flexible="range"`` gives ``RangeDim`` height/width (runs on GPU/CPU).
- ``fp16`` computes in float16 except the ops listed in :data:`FP32_OPS` and squaring
  multiplications (the LayerNorm variance and MDTA's L2 norm over H x W: squares, two
  ``reduce_sum``, ``sqrt``), which stay float32.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import torch

from baryir.formats import DEGRADATION_NAME, FORMATS, INPUT_NAME, OUTPUT_NAME, PAD_MULTIPLE, needs_extra
from baryir.runtimes.backends.coreml_runner import CoreMLRunner

from .common import ExportContext, export_versions, not_validated_here, validate_runner
from .coreml_compression import compress_weights
from .wrapper import DeploymentModel

#: MIL ops kept in float32 under FP16 compute precision (reductions and what feeds off them).
FP32_OPS = frozenset({"layer_norm", "reduce_mean", "reduce_sum", "sqrt", "rsqrt", "maximum", "real_div"})
RANGE_BOUNDS = (64, 4096)


def _require():
    try:
        import coremltools as ct
    except ImportError as e:
        raise ImportError(needs_extra("CoreML export", "coreml")) from e
    return ct


def keep_fp32(op) -> bool:
    """``op_selector`` for FP16ComputePrecision: False keeps the op in float32."""
    if op.op_type in FP32_OPS:
        return False
    if op.op_type == "mul" and getattr(op, "x", None) is not None and op.x is op.y:
        return False  # x * x feeding a variance
    return True


def _shape(ct, shapes: tuple[tuple[int, int], ...], flexible: str):
    """The input shape: enumerated sizes (one size: a fixed shape, which coremltools requires), or
    a range of sizes."""
    if flexible == "enumerated":
        sizes = list(dict.fromkeys(tuple(s) for s in shapes))
        if len(sizes) == 1:
            return ct.Shape(shape=(1, 3, *sizes[0]))
        return ct.EnumeratedShapes(shapes=[[1, 3, h, w] for h, w in sizes], default=[1, 3, *sizes[0]])
    if flexible == "range":
        lo, hi = RANGE_BOUNDS
        h0, w0 = shapes[0]
        return ct.Shape(shape=(1, 3, ct.RangeDim(lo, hi, default=h0), ct.RangeDim(lo, hi, default=w0)))
    raise ValueError(f"flexible must be 'enumerated' or 'range', not {flexible!r}")


def export_coreml(
    ctx: ExportContext,
    precision: str,
    path: Path,
    io: str = "image",
    flexible: str = "enumerated",
    weights: str = "float",
) -> dict:
    """Convert the deployment graph and save ``model.mlpackage`` at ``path``; ``weights``
    compresses the weights (int8, pal6, pal4: see :mod:`.coreml_compression`)."""
    ct = _require()
    if io not in ("image", "tensor"):
        raise ValueError(f"io must be 'image' or 'tensor', not {io!r}")
    bad = [s for s in ctx.shapes if s[0] % PAD_MULTIPLE or s[1] % PAD_MULTIPLE]
    if bad:
        raise ValueError(f"CoreML shapes must be multiples of {PAD_MULTIPLE}: {bad}")
    wrapper = DeploymentModel(ctx.model, output_scale=255.0 if io == "image" else 1.0).eval()
    example = torch.rand(1, 3, *ctx.shapes[0])
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(wrapper, example)
    shape = _shape(ct, ctx.shapes, flexible)
    if io == "image":
        inputs = [ct.ImageType(name=INPUT_NAME, shape=shape, scale=1 / 255.0, color_layout=ct.colorlayout.RGB)]
        outputs = [ct.ImageType(name=OUTPUT_NAME, color_layout=ct.colorlayout.RGB)]
    else:
        inputs = [ct.TensorType(name=INPUT_NAME, shape=shape, dtype=np.float32)]
        outputs = [ct.TensorType(name=OUTPUT_NAME, dtype=np.float32)]
    if wrapper.analyzes:
        outputs.append(ct.TensorType(name=DEGRADATION_NAME, dtype=np.float32))
    compute = ct.transform.FP16ComputePrecision(op_selector=keep_fp32) if precision == "fp16" else ct.precision.FLOAT32
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mlmodel = ct.convert(
            traced,
            inputs=inputs,
            outputs=outputs,
            convert_to="mlprogram",
            minimum_deployment_target=ct.target.iOS16,
            compute_precision=compute,
            compute_units=ct.ComputeUnit.ALL,
        )
    cfg = ctx.model.config
    mlmodel.author = "BaryIR edge toolkit"
    mlmodel.license = "MIT (this export); see the BaryIR paper and code for the model"
    mlmodel.short_description = f"BaryIR all-in-one restoration ({cfg.name} config): removes noise, rain and haze. " + (
        "RGB image in, restored RGB image out." if io == "image" else "RGB float tensor in [0,1], NCHW."
    )
    mlmodel.version = ctx.source_sha256[:12]
    mlmodel.user_defined_metadata.update(
        {
            "baryir.config": json.dumps(cfg.to_dict()),
            "baryir.precision": precision,
            "baryir.io": io,
            "baryir.shapes": json.dumps([list(s) for s in ctx.shapes]),
        }
    )
    if weights != "float":
        mlmodel = compress_weights(mlmodel, weights)
        mlmodel.user_defined_metadata["baryir.weights"] = weights
    dtypes = op_dtypes(mlmodel)
    mlmodel.save(str(path))
    return {"io": io, "flexible": flexible, "deployment_target": "iOS16", "op_dtypes": dtypes, "weights": weights}


def op_dtypes(mlmodel) -> dict[str, list[str]]:
    """For each MIL op type in the converted program, the dtypes its outputs are computed in."""
    from coremltools.converters.mil.mil import types

    found: dict[str, set[str]] = {}
    for function in mlmodel._mil_program.functions.values():
        for op in function.operations:
            if op.outputs and types.is_tensor(op.outputs[0].sym_type):
                found.setdefault(op.op_type, set()).add(types.builtin_to_string(op.outputs[0].dtype))
    return {k: sorted(v) for k, v in sorted(found.items())}


def spec_summary(path: Path) -> dict:
    """Inputs, outputs, flexible sizes and metadata read back from a saved mlpackage."""
    ct = _require()
    spec = ct.models.MLModel(str(path), skip_model_load=True).get_spec()
    summary = {
        "specification_version": spec.specificationVersion,
        "type": spec.WhichOneof("Type"),
        "metadata": dict(spec.description.metadata.userDefined),
        "author": spec.description.metadata.author,
    }
    for kind, feats in (("inputs", spec.description.input), ("outputs", spec.description.output)):
        summary[kind] = []
        for f in feats:
            t = f.type.WhichOneof("Type")
            entry = {"name": f.name, "type": t}
            if t == "imageType":
                it = f.type.imageType
                entry["enumerated"] = [[s.height, s.width] for s in it.enumeratedSizes.sizes]
                entry["range"] = bool(it.HasField("imageSizeRange"))
            elif t == "multiArrayType":
                mt = f.type.multiArrayType
                entry["enumerated"] = [list(s.shape) for s in mt.enumeratedShapes.shapes]
                entry["range"] = bool(mt.HasField("shapeRange"))
            summary[kind].append(entry)
    return summary


def export_artifact(ctx: ExportContext, precision: str, folder: Path, validate: bool, large: bool) -> dict:
    """The CoreML artifact in ``folder`` (``model.mlpackage``) with its spec read back; its
    prediction is validated through the CoreML runner on macOS (tensor I/O: image I/O rounds to
    8 bits, which the spec check covers instead)."""
    opts = ctx.options
    path = folder / "model.mlpackage"
    facts = export_coreml(
        ctx, precision, path, io=opts["coreml_io"], flexible=opts["coreml_flexible"], weights=opts["coreml_weights"]
    )
    facts["spec"] = spec_summary(path)
    facts["prediction_validated"] = False
    reason = FORMATS["coreml"].cannot_run_here()
    if reason:
        facts.update(not_validated_here(reason, "the converted program's spec"))
    if validate and reason is None and facts["io"] == "tensor":
        with CoreMLRunner(str(path), None, precision, "tensor") as runner:
            facts["validation"] = validate_runner(ctx, runner, [ctx.shapes[0]])
        facts["prediction_validated"] = True
    return {**facts, "libraries": export_versions("coremltools")}
