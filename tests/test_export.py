"""Exports: the format table, ONNX, OpenVINO, CoreML (conversion and spec), TensorRT (static)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from baryir import save_model
from baryir.cpu import bf16_native
from baryir.export.api import export_model
from baryir.export.common import ExportContext, atomic_artifact, validation_image
from baryir.export.tensorrt_export import (
    Profile,
    check_onnx_for_tensorrt,
    profile_from_shapes,
    tensorrt_available,
    trtexec_command,
    validate_profile,
)
from baryir.formats import FORMATS, export_options, parse_request
from baryir.runtimes.environment import onednn_hides_bf16


@pytest.fixture(scope="module")
def nano_path(tmp_path_factory):
    from baryir import build_model

    torch.manual_seed(0)
    model = build_model("nano")
    # perturb the output conv so the network is not close to identity and errors are meaningful
    with torch.no_grad():
        model.output.weight.mul_(20)
    return save_model(model, tmp_path_factory.mktemp("model") / "nano.safetensors")


@pytest.fixture(scope="module")
def exported(nano_path, tmp_path_factory):
    out = tmp_path_factory.mktemp("export")
    results = export_model(nano_path, "onnx,openvino,tensorrt", "fp32,fp16", out, shapes=((64, 64), (96, 128)))
    return out, {(r["format"], r["precision"]): r for r in results}


def test_one_export_computes_each_pytorch_reference_once():
    """Every artifact of one export is checked against the same PyTorch outputs: computed once per
    image, shared by the contexts the formats copy, and never served for another image."""
    import dataclasses

    from baryir import build_model

    torch.manual_seed(0)
    model = build_model("nano").eval()
    calls = []
    model.register_forward_hook(lambda *_: calls.append(1))
    ctx = ExportContext(model, "nano", "0" * 64)
    first = ctx.reference(validation_image(64, 96))
    again = dataclasses.replace(ctx, rewrites=()).reference(validation_image(64, 96))
    assert len(calls) == 1 and again[0] is first[0]
    other = ctx.reference(validation_image(64, 96).flip(-1))
    assert len(calls) == 2 and not torch.equal(other[0], first[0])


def test_format_table_refuses_bad_requests_before_work():
    assert [(f.name, p) for f, p in parse_request("onnx,coreml", "fp32,fp16")] == [
        ("onnx", "fp32"),
        ("onnx", "fp16"),
        ("coreml", "fp32"),
        ("coreml", "fp16"),
    ]
    assert len(parse_request("all", "fp32")) == 4
    # a name given twice is one job, not two exports into one folder
    assert [(f.name, p) for f, p in parse_request("onnx,onnx", "fp32, fp32")] == [("onnx", "fp32")]
    with pytest.raises(ValueError, match="coreml does not support int8"):
        parse_request("coreml", "int8")
    with pytest.raises(ValueError, match="unknown format 'tflite'.*unknown precision 'fp8'"):
        parse_request("tflite", "fp8")


def test_format_options_are_checked_against_the_requested_formats(tmp_path):
    onnx, coreml = FORMATS["onnx"], FORMATS["coreml"]
    assert export_options([coreml], {"coreml_weights": "pal4"})["coreml_weights"] == "pal4"
    assert export_options([onnx, coreml], {})["coreml_io"] == "image"  # defaults come from the table
    with pytest.raises(ValueError, match="--coreml-weights applies to coreml only"):
        export_options([onnx], {"coreml_weights": "pal4"})
    # the CLI: one line, exit 2, nothing exported
    args = ["export", "--model", "default", "--format", "onnx", "--coreml-weights", "pal4", "-o", str(tmp_path / "out")]
    run = subprocess.run([sys.executable, "-m", "baryir.cli", *args], capture_output=True, text=True)
    assert run.returncode == 2 and run.stderr.count("\n") == 1
    assert "--coreml-weights applies to coreml only" in run.stderr and not (tmp_path / "out").exists()


@pytest.mark.slow
def test_onnx_graph_contract_and_validation(exported):
    out, results = exported
    model = onnx.load(str(out / "onnx-fp32" / "model.onnx"))
    assert model.opset_import[0].version >= 17
    assert [i.name for i in model.graph.input] == ["image"] and [o.name for o in model.graph.output] == ["restored"]
    dims = [d.dim_param for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims[0] and dims[2] and dims[3] and dims[1] == ""  # dynamic N, H, W; 3 channels fixed
    meta = {p.key: p.value for p in model.metadata_props}
    assert json.loads(meta["baryir.config"])["dim"] == 8 and meta["baryir.pad_multiple"] == "8"
    rows = results[("onnx", "fp32")]["validation"]
    assert len(rows) >= 4 and any(max(r["size"]) >= 1024 for r in rows)
    assert len({r["size"][0] / r["size"][1] for r in rows}) >= 3  # several aspect ratios
    assert all(r["max_abs"] <= 1e-4 for r in rows)
    manifest = json.loads((out / "onnx-fp32" / "manifest.json").read_text())
    assert manifest["inputs"][0]["layout"] == "NCHW" and manifest["source"]["sha256"]
    # the deployment graph has no channel split: one (1x1, depthwise) pair per chunk instead;
    # what Slices remain cut shape vectors (for reshapes), never activations
    # ONNX Runtime's and OpenVINO's float exports also take their LayerNorms' channel means as
    # 1x1 convolutions (measured on both; TensorRT's ONNX, unmeasured here, keeps the reductions);
    # ONNX Runtime's takes the pixel-(un)shuffles as one-hot convolutions (measured on it only)
    assert manifest["rewrites"] == ["split_channel_chunks", "conv_mean_norms", "conv_pixel_shuffles"]
    ov_manifest = json.loads((out / "openvino-fp32" / "manifest.json").read_text())
    assert ov_manifest["rewrites"] == ["split_channel_chunks", "conv_mean_norms"]
    assert not [n for n in model.graph.node if n.op_type == "ReduceMean" and _in_layernorm(n.name)]
    ops = {n.op_type for n in model.graph.node}
    assert "ConvTranspose" in ops and "DepthToSpace" not in ops
    assert "Cast" not in ops  # simplified with its types known: no float-to-float casts are left
    trt = onnx.load(str(out / "tensorrt-fp32" / "model.onnx"))
    assert any(n.op_type == "ReduceMean" and _in_layernorm(n.name) for n in trt.graph.node)
    assert "DepthToSpace" in {n.op_type for n in trt.graph.node}
    producer = {out: n.op_type for n in model.graph.node for out in n.output}
    assert "Split" not in {n.op_type for n in model.graph.node}
    assert {producer.get(n.input[0]) for n in model.graph.node if n.op_type == "Slice"} <= {"Shape"}
    assert {"torch", "onnx", "onnxruntime"} <= set(manifest["libraries"])


def _in_layernorm(node_name: str) -> bool:
    """Whether an ONNX node belongs to a channel LayerNorm (the blocks' norm1/norm2, the latent's LN)."""
    return re.search(r"/(norm\d|LN)/body(_\d+)?/", node_name) is not None


@pytest.mark.parametrize("config", ["nano", "mobile"])
def test_rewrites_are_exact_and_leave_the_model_alone(config):
    from baryir import build_model
    from baryir.model.rewrites import apply_rewrites, pending_rewrites

    torch.manual_seed(1)
    model = build_model(config).eval()
    with torch.no_grad():
        for p in model.parameters():  # away from the initialisation's zeros and ones
            p.add_(0.05 * torch.randn_like(p))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    all_rewrites = ("split_channel_chunks", "conv_mean_norms", "conv_pixel_shuffles", "token_attention")
    rewritten = apply_rewrites(model, all_rewrites)
    x = torch.rand(2, 3, 40, 56)
    with torch.no_grad():
        reference, output = model(x), rewritten(x)
        # moving pixels by one-hot convolutions is bit for bit the shuffle
        assert torch.equal(apply_rewrites(model, ("conv_pixel_shuffles",))(x), reference)
        half = rewritten.half()(x.half()) if config == "nano" else None  # statistics stay float32
    assert (reference - output).abs().max() < 1e-5
    if half is not None:
        assert half.dtype == torch.float16 and (half.float() - reference).abs().max() < 0.05
    assert sum(p.numel() for p in rewritten.parameters()) == sum(p.numel() for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the original is untouched
    names = {type(m).__name__ for m in rewritten.modules()}
    assert {"SplitFeedForward", "TokenAttention", "ConvMeanLayerNorm", "ConvPixelShuffle"} <= names
    replaced = {"FeedForward", "Attention", "SplitAttention", "WithBiasLayerNorm", "PixelShuffle", "PixelUnshuffle"}
    assert not replaced & names
    assert rewritten.rewrites == all_rewrites
    # several heads in one token map (the mask) at the lower levels, one head at full resolution
    assert {m.num_heads for m in rewritten.modules() if type(m).__name__ == "TokenAttention"} >= {1, 2}
    with pytest.raises(ValueError, match="apply split_channel_chunks first"):
        apply_rewrites(model, ("token_attention",))
    # what an export applies on top of a model's own rewrites: an INT8 model quantized on the
    # training graph (no split) keeps its attention; one quantized on the split graph takes tokens
    split = apply_rewrites(model, ("split_channel_chunks",))
    assert pending_rewrites(model, ("token_attention",)) == ()
    assert pending_rewrites(split, ("split_channel_chunks", "token_attention")) == ("token_attention",)
    assert pending_rewrites(model, all_rewrites) == all_rewrites


@pytest.mark.slow
def test_onnx_fp16_keeps_reductions_in_float32(exported):
    out, results = exported
    model = onnx.shape_inference.infer_shapes(onnx.load(str(out / "onnx-fp16" / "model.onnx")))
    types = {v.name: v.type.tensor_type.elem_type for v in list(model.graph.value_info) + list(model.graph.input)}
    reductions = [n for n in model.graph.node if n.op_type in ("ReduceSum", "ReduceMean")]
    assert "ReduceSum" in {n.op_type for n in reductions}  # MDTA's L2 norm
    assert all(types[n.input[0]] == onnx.TensorProto.FLOAT for n in reductions)
    norm_means = [n for n in model.graph.node if n.op_type == "Conv" and _in_layernorm(n.name)]  # its means
    assert norm_means and all(types[n.input[0]] == onnx.TensorProto.FLOAT for n in norm_means)
    convs = [n for n in model.graph.node if n.op_type == "Conv" and n not in norm_means]
    assert all(types.get(n.output[0]) == onnx.TensorProto.FLOAT16 for n in convs), [
        n.name for n in convs if types.get(n.output[0]) != onnx.TensorProto.FLOAT16
    ]
    assert all(r["finite"] and r["psnr"] >= 40 for r in results[("onnx", "fp16")]["validation"])


@pytest.mark.slow
def test_golden_file_validates_the_artifact_without_pytorch(exported):
    import onnxruntime as ort

    out, _ = exported
    golden = np.load(out / "onnx-fp32" / "golden.npz")
    session = ort.InferenceSession(str(out / "onnx-fp32" / "model.onnx"), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"image": golden["input"]})[0], golden["output"], atol=1e-4)


@pytest.mark.slow
def test_openvino_ir_is_dynamic_and_f32_exact(exported):
    import openvino as ov

    out, results = exported
    model = ov.Core().read_model(str(out / "openvino-fp32" / "model.xml"))
    shape = model.inputs[0].get_partial_shape()
    assert shape[0].is_dynamic and shape[2].is_dynamic and shape[3].is_dynamic and shape[1].get_length() == 3
    rows = results[("openvino", "fp32")]["validation"]
    assert all(r["max_abs"] <= 1e-4 for r in rows)
    # bf16 (the plugin's default where the CPU has it) is reported next to the f32 result, under the
    # precision the runner really ran
    expected = "bf16" if bf16_native() and not onednn_hides_bf16() else "fp32"
    assert all(r["contrast"]["precision"] == expected for r in rows)
    if expected == "bf16":  # really computed at another precision than the f32 rows
        assert all(r["contrast"]["max_abs"] > 1e-4 for r in rows)
    fp16 = ov.Core().read_model(str(out / "openvino-fp16" / "model.xml"))
    assert any(op.get_type_name() == "Convert" for op in fp16.get_ops())  # fp16 weights, decompressed


@pytest.mark.slow
def test_tensorrt_static_checks(exported):
    out, results = exported
    assert check_onnx_for_tensorrt(out / "tensorrt-fp32" / "model.onnx") == []
    assert check_onnx_for_tensorrt(out / "tensorrt-fp16" / "model.onnx") == []
    r = results[("tensorrt", "fp32")]
    assert r["profile"]["min"] == (1, 64, 64) and r["profile"]["max"] == (1, 96, 128)
    script = (out / "tensorrt-fp32" / "build_engine.sh").read_text()
    assert "--stronglyTyped" in script and "--minShapes=image:1x3x64x64" in script
    # the engine is built again on each device (one GPU, one TensorRT): its digest is not recorded
    files = json.loads((out / "tensorrt-fp32" / "manifest.json").read_text())["files"]
    assert {"model.onnx", "build_engine.sh", "golden.npz"} <= set(files)
    assert not {"model.engine", "timing.cache", "manifest.json"} & set(files)
    if tensorrt_available() is not None:
        assert r["engine_built"] is False and "build_engine.sh" in r["reason"]
        # no TensorRT here: the manifest says so and keeps ONNX Runtime's numbers under their own name
        manifest = json.loads((out / "tensorrt-fp32" / "manifest.json").read_text())
        assert manifest["validated_here"] is False and manifest["validation"] == []
        assert "not validated here" in manifest["validation_note"]
        assert manifest["onnx_validation"] and all(v["max_abs"] <= 1e-4 for v in manifest["onnx_validation"])


def _qdq_model(zero_point: np.ndarray | None, op: str = "Relu") -> onnx.ModelProto:
    from onnx import helper, numpy_helper

    inits = [numpy_helper.from_array(np.array(0.1, dtype=np.float32), "scale")]
    q_inputs = ["x", "scale"]
    if zero_point is not None:
        inits.append(numpy_helper.from_array(zero_point, "zp"))
        q_inputs.append("zp")
    nodes = [
        helper.make_node("QuantizeLinear", q_inputs, ["q"], name="q"),
        helper.make_node("DequantizeLinear", ["q", *q_inputs[1:]], ["dq"], name="dq"),
        helper.make_node(op, ["dq"], ["y"], name="op"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 4])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize(
    "zp, op, problem",
    [
        (np.array(0, dtype=np.int8), "Relu", None),
        (np.array(3, dtype=np.int8), "Relu", "non-zero zero point"),
        (np.array(0, dtype=np.uint8), "Relu", "not INT8"),
        (None, "Relu", "defaults to UINT8"),
        (np.array(0, dtype=np.int8), "StringNormalizer", "not supported by TensorRT"),
    ],
)
def test_tensorrt_checks_flag_asymmetric_and_unsupported_graphs(tmp_path, zp, op, problem):
    path = tmp_path / "m.onnx"
    onnx.save(_qdq_model(zp, op), str(path))
    problems = check_onnx_for_tensorrt(path)
    if problem is None:
        assert problems == []
    else:
        assert any(problem in p for p in problems), problems


def test_tensorrt_profiles_are_validated():
    p = profile_from_shapes(((720, 1280), (256, 256), (1080, 1920)))
    assert validate_profile(p) == [] and p.opt == (1, 720, 1280)
    assert any("multiples of 8" in e for e in validate_profile(Profile((1, 60, 64), (1, 64, 64), (1, 64, 64))))
    assert any("min <= opt <= max" in e for e in validate_profile(Profile((1, 64, 64), (1, 128, 64), (1, 96, 64))))
    cmd = trtexec_command("m.onnx", "m.engine", p)
    assert "--maxShapes=image:1x3x1080x1920" in cmd and "--builderOptimizationLevel=3" in cmd


@pytest.mark.gpu
@pytest.mark.skipif(tensorrt_available() is not None, reason=f"needs TensorRT and a GPU: {tensorrt_available()}")
def test_tensorrt_engine_builds_and_matches_onnx(nano_path, tmp_path):
    results = export_model(nano_path, "tensorrt", "fp16", tmp_path, shapes=((64, 64), (128, 128)))
    assert results[0]["engine_built"] and (tmp_path / "tensorrt-fp16" / "model.engine").stat().st_size > 0
    # validated by TensorRT itself at the profile's shapes, against PyTorch
    assert [v["size"] for v in results[0]["validation"]] == [[64, 64], [128, 128]]
    assert all(v["psnr"] >= 40 for v in results[0]["validation"])


@pytest.mark.slow
def test_coreml_conversion_and_spec(nano_path, tmp_path):
    pytest.importorskip("coremltools")
    from baryir.export.coreml_export import spec_summary

    results = export_model(nano_path, "coreml", "fp16", tmp_path, shapes=((64, 64), (96, 128)), coreml_io="image")
    spec = spec_summary(tmp_path / "coreml-fp16" / "model.mlpackage")
    assert spec["type"] == "mlProgram" and spec["specification_version"] >= 7  # iOS 16
    assert spec["inputs"][0] == {
        "name": "image",
        "type": "imageType",
        "enumerated": [[64, 64], [96, 128]],
        "range": False,
    }
    assert spec["outputs"][0]["type"] == "imageType"
    assert spec["author"] and json.loads(spec["metadata"]["baryir.config"])["dim"] == 8
    assert spec["metadata"]["baryir.precision"] == "fp16"
    assert results[0]["prediction_validated"] is False  # image I/O is checked by spec; prediction needs macOS
    files = json.loads((tmp_path / "coreml-fp16" / "manifest.json").read_text())["files"]
    package = sorted(
        p.relative_to(tmp_path / "coreml-fp16").as_posix()
        for p in (tmp_path / "coreml-fp16" / "model.mlpackage").rglob("*")
        if p.is_file()
    )
    assert package and set(package) <= set(files)  # a package folder is recorded file by file


def test_coreml_with_one_size_is_a_fixed_shape_model(nano_path, tmp_path):
    """One enumerated size is a fixed-shape input: coremltools refuses
    EnumeratedShapes of fewer than two, which `--shapes 64x64` used to pass it."""
    ct = pytest.importorskip("coremltools")
    from baryir.export.coreml_export import spec_summary

    export_model(nano_path, "coreml", "fp16", tmp_path, shapes=((64, 64),), validate=False)
    package = tmp_path / "coreml-fp16" / "model.mlpackage"
    assert spec_summary(package)["inputs"][0]["enumerated"] == [] and not spec_summary(package)["inputs"][0]["range"]
    image = ct.models.MLModel(str(package), skip_model_load=True).get_spec().description.input[0].type.imageType
    assert (image.height, image.width) == (64, 64)


@pytest.mark.slow
def test_coreml_fp16_program_keeps_reductions_in_float32(nano_path, tmp_path):
    pytest.importorskip("coremltools")
    results = export_model(
        nano_path, "coreml", "fp16", tmp_path, shapes=((64, 64),), coreml_io="tensor", coreml_flexible="range"
    )
    from baryir.export.coreml_export import spec_summary

    spec = spec_summary(tmp_path / "coreml-fp16" / "model.mlpackage")
    assert spec["inputs"][0]["type"] == "multiArrayType" and spec["inputs"][0]["range"]
    dtypes = results[0]["op_dtypes"]
    assert "reduce_sum" in dtypes and "sqrt" in dtypes, dtypes  # MDTA's L2 norm over H x W
    for op in ("reduce_sum", "sqrt", "reduce_mean", "layer_norm", "rsqrt", "real_div"):
        assert dtypes.get(op, ["fp32"]) == ["fp32"], (op, dtypes)
    assert dtypes["conv"] == ["fp16"], dtypes


@pytest.mark.macos
def test_coreml_prediction_matches_pytorch(nano_path, tmp_path):
    results = export_model(nano_path, "coreml", "fp32", tmp_path, shapes=((64, 64),), coreml_io="tensor")
    assert results[0]["prediction_validated"] and results[0]["validation"][0]["max_abs"] <= 1e-3


def test_atomic_artifact_leaves_no_partial_files(tmp_path):
    folder = tmp_path / "onnx-fp32"
    with pytest.raises(RuntimeError):
        with atomic_artifact(folder) as tmp:
            (tmp / "model.onnx").write_bytes(b"half")
            raise RuntimeError("validation failed")
    assert list(folder.iterdir()) == []
    assert [p.name for p in tmp_path.iterdir()] == ["onnx-fp32"]
    shutil.rmtree(folder)


def test_readme_format_table_is_the_generated_one():
    from baryir.formats import markdown_table

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    block = readme.split("<!-- formats:start", 1)[1].split("<!-- formats:end -->", 1)[0]
    assert markdown_table() in block, "regenerate the README table with baryir.formats.markdown_table()"
