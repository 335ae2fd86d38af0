"""Artifacts check themselves: `baryir verify`, the runners' check at load, and INT8 on CPUs
without VNNI (oneDNN capped to AVX2, which is what such a CPU runs)."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys

import numpy as np
import onnx
import pytest
import torch
from onnx import helper, numpy_helper

from baryir import build_model, save_model
from baryir.cli import main
from baryir.export.api import export_model
from baryir.runtimes import load_runner
from baryir.runtimes.environment import int8_saturates
from baryir.runtimes.verify import ArtifactCheckError, check_on_load, likely_cause


@pytest.fixture(scope="module")
def onnx_artifacts(tmp_path_factory, restamp):
    """A good ONNX FP32 export of the nano model and a copy whose weights were tampered with, its
    manifest's digests recorded again (a wrong artifact that only its output gives away)."""
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("art")
    model = save_model(build_model("nano"), root / "nano.safetensors")
    export_model(model, "onnx", "fp32", root, validate=False, shapes=((64, 64),))
    good, broken = root / "onnx-fp32", root / "broken"
    shutil.copytree(good, broken)
    graph = onnx.load(str(broken / "model.onnx"))
    weight = next(t for t in graph.graph.initializer if len(t.dims) == 4)
    weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight) * 1.5, weight.name))
    onnx.save(graph, str(broken / "model.onnx"))
    restamp(broken)
    return good, broken


def test_verify_passes_a_good_artifact_and_fails_a_broken_one(onnx_artifacts, capsys):
    good, broken = onnx_artifacts
    assert main(["verify", str(good)]) == 0
    assert "| pass |" in capsys.readouterr().out
    assert main(["verify", str(good), str(broken)]) == 1
    out = capsys.readouterr().out
    assert "FAILED" in out and "max abs error" in out and "re-export" in out


def test_verify_of_an_export_output_folder_checks_every_artifact_in_it(onnx_artifacts, capsys):
    """`baryir verify OUT` (the folder `baryir export -o OUT` wrote) checks each export folder in it."""
    good, broken = onnx_artifacts
    assert main(["verify", str(good.parent)]) == 1
    out = capsys.readouterr().out
    assert f"| {good} |" in out and f"| {broken} |" in out and "| pass |" in out and "FAILED" in out


def test_runners_check_at_load_and_cache_the_pass(onnx_artifacts, tmp_path, monkeypatch, capsys):
    good, broken = onnx_artifacts
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with pytest.raises(ArtifactCheckError, match="broken: its output here misses its golden reference"):
        load_runner(broken)
    runner = load_runner(good, verify=False)
    assert check_on_load(runner, good)["passed"]  # first time: measured
    assert check_on_load(runner, good) is None  # then cached for this artifact, runtime and machine
    from PIL import Image

    Image.fromarray(np.zeros((24, 24, 3), np.uint8)).save(tmp_path / "a.png")
    args = ["restore", str(tmp_path / "a.png"), "-o", str(tmp_path / "out"), "--model", str(broken), "--no-progress"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "misses its golden reference" in err
    assert not (tmp_path / "out" / "a.png").exists()
    assert main([*args, "--no-verify"]) == 0  # the user's explicit opt-out


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_artifact_checks_cannot_be_talked_out_of(onnx_artifacts, tmp_path, monkeypatch, capsys):
    import json

    good, broken = onnx_artifacts
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    # a manifest may tighten its tolerance, never loosen it
    loose = _copy(broken, tmp_path / "loose")
    manifest = json.loads((loose / "manifest.json").read_text())
    for tolerance in ({"max_abs": 1e9}, {"psnr": -1}, {"max_abs": float("nan")}, "none"):
        (loose / "manifest.json").write_text(json.dumps({**manifest, "tolerance": tolerance}))
        with pytest.raises(ArtifactCheckError, match="misses its golden reference"):
            load_runner(loose)
    # no golden: refused unless the user says --no-verify
    bare = _copy(good, tmp_path / "bare")
    (bare / "golden.npz").unlink()
    with pytest.raises(ArtifactCheckError, match="cannot be checked.*--no-verify"):
        load_runner(bare / "model.onnx")
    assert load_runner(bare / "model.onnx", verify=False).info.backend == "onnxruntime"
    # the artifact a manifest names lies inside its folder
    (tmp_path / "other").mkdir()
    shutil.copy(broken / "model.onnx", tmp_path / "other" / "model.onnx")
    outside = _copy(good, tmp_path / "outside")
    for name in ("../other/model.onnx", str(tmp_path / "other" / "model.onnx")):
        (outside / "manifest.json").write_text(json.dumps({**manifest, "artifact": name}))
        with pytest.raises(ValueError, match="not a file name inside"):
            load_runner(outside)
    linked = _copy(good, tmp_path / "linked")
    (linked / "model.onnx").unlink()
    (linked / "model.onnx").symlink_to(tmp_path / "other" / "model.onnx")
    with pytest.raises(ValueError, match="leads out of"):
        load_runner(linked)
    # the pass is cached by content: a same-size swap with the old mtime is checked again (an
    # export that recorded no digests, made before they were, is checked by its output alone)
    swapped = _copy(good, tmp_path / "swapped")
    old_export = json.loads((swapped / "manifest.json").read_text())
    del old_export["files"]
    (swapped / "manifest.json").write_text(json.dumps(old_export))
    assert load_runner(swapped).info.backend == "onnxruntime"
    stat = (swapped / "model.onnx").stat()
    shutil.copy(broken / "model.onnx", swapped / "model.onnx")
    assert (swapped / "model.onnx").stat().st_size == stat.st_size
    os.utime(swapped / "model.onnx", ns=(stat.st_atime_ns, stat.st_mtime_ns))
    with pytest.raises(ArtifactCheckError, match="misses its golden reference"):
        load_runner(swapped)


def test_a_damaged_or_changed_file_is_refused_before_its_runtime_reads_it(
    onnx_artifacts, tmp_path, monkeypatch, capsys
):
    """The manifest records every file's SHA-256: one changed bit in the weights, too small for
    the output check to see, is refused, and so is a missing file or a graph its runtime would
    refuse, with a one-line error naming the file, before the runtime parses anything."""
    import json

    from baryir.io.digest import folder_digests

    good, _ = onnx_artifacts
    manifest = json.loads((good / "manifest.json").read_text())
    assert manifest["files"] == folder_digests(good, ("manifest.json",))
    assert set(manifest["files"]) >= {"model.onnx", "golden.npz"}
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    damaged = _copy(good, tmp_path / "damaged")
    graph = onnx.load(str(damaged / "model.onnx"))
    weight = next(t for t in graph.graph.initializer if len(t.dims) == 4)
    values = numpy_helper.to_array(weight).copy()
    values.flat[0] = np.nextafter(values.flat[0], np.float32(np.inf))  # one bit of one weight
    weight.CopyFrom(numpy_helper.from_array(values, weight.name))
    onnx.save(graph, str(damaged / "model.onnx"))
    with pytest.raises(ArtifactCheckError, match=r"damaged/model.onnx: not the file its export wrote"):
        load_runner(damaged)
    unrecorded = _copy(damaged, tmp_path / "unrecorded")  # the same file, checked by its output alone
    (unrecorded / "manifest.json").write_text(json.dumps({k: v for k, v in manifest.items() if k != "files"}))
    assert main(["verify", str(unrecorded)]) == 0  # which cannot see it
    garbage = _copy(good, tmp_path / "garbage")
    (garbage / "model.onnx").write_bytes(b"not a protobuf")
    missing = _copy(good, tmp_path / "missing")
    (missing / "model.onnx").unlink()
    capsys.readouterr()
    assert main(["verify", str(damaged), str(garbage), str(missing), str(good)]) == 1
    captured = capsys.readouterr()
    assert captured.out.count("| pass |") == 1 and captured.out.count("FAILED") == 3
    err = captured.err.splitlines()
    assert len(err) == 3 and "cannot load it" not in captured.err  # the runtime never saw them
    assert f"{garbage / 'model.onnx'}: not the file its export wrote" in err[1]
    assert f"{missing / 'model.onnx'}: missing" in err[2]
    with pytest.raises(ArtifactCheckError, match="missing"):
        load_runner(missing)
    # what a manifest lists is bounded and lies inside its folder
    for i, (files, error) in enumerate(
        (
            ({"../other/model.onnx": "0" * 64}, "not a file name inside"),
            ({"model.onnx": "not a digest"}, "names with SHA-256 digests"),
            ([["model.onnx", "0" * 64]], "names with SHA-256 digests"),
            ({f"f{i}": "0" * 64 for i in range(1001)}, "up to 1000 names"),
        )
    ):
        edited = _copy(good, tmp_path / f"edited{i}")
        (edited / "manifest.json").write_text(json.dumps({**manifest, "files": files}))
        with pytest.raises(ArtifactCheckError, match=error):
            load_runner(edited)


def test_a_manifest_is_checked_field_by_field_before_it_is_used(onnx_artifacts, tmp_path, capsys):
    """Every field the runtime acts on, damaged or edited, is a one-line error naming the
    manifest and the field (not a TypeError from deep in a runner), in the Python API and in
    `verify`, which goes on to the next artifact."""
    import json

    good, _ = onnx_artifacts
    manifest = json.loads((good / "manifest.json").read_text())
    edits = {
        "format": ["onnx"],
        "artifact": 3,
        "precision": {"int8": True},
        "model_config": {"dim": 10**12},
        "outputs": "restored",
        "analysis_artifact": ["analyze.onnx"],
        "weight_levels": 5,
        "io": "camera",
    }
    folders = []
    for field, value in edits.items():
        folder = _copy(good, tmp_path / field)
        (folder / "manifest.json").write_text(json.dumps({**manifest, field: value}))
        with pytest.raises(ValueError, match=rf"{folder / 'manifest.json'}: its {field} .* is not .*re-export"):
            load_runner(folder)
        folders.append(folder)
    dimless = _copy(good, tmp_path / "dimless")
    (dimless / "manifest.json").write_text(json.dumps({k: v for k, v in manifest.items() if k != "model_config"}))
    with pytest.raises(ValueError, match="has no model_config"):
        load_runner(dimless / "model.onnx")  # the artifact's file, its manifest beside it
    assert main(["verify", *map(str, folders), str(good)]) == 1
    captured = capsys.readouterr()
    assert captured.out.count("| pass |") == 1 and "Traceback" not in captured.err
    assert all(f"its {field} " in line for field, line in zip(edits, captured.err.splitlines(), strict=True))


def test_verify_bounds_its_golden_and_goes_on_after_a_bad_one(onnx_artifacts, tmp_path, capsys, restamp):
    good, _ = onnx_artifacts
    huge = _copy(good, tmp_path / "huge")
    big = np.zeros((1, 3, 4096, 4096), np.float16)  # 100 MB of float16; a check would need gigabytes
    np.savez(huge / "golden.npz", input=big, output=big)
    garbage = _copy(good, tmp_path / "garbage")
    (garbage / "golden.npz").write_bytes(b"PK\x03\x04 not a zip")
    for folder in (huge, garbage):  # digests that agree: the golden file's own bounds are what is tested
        restamp(folder)
    big_manifest = _copy(good, tmp_path / "big_manifest")
    with open(big_manifest / "manifest.json", "r+b") as f:  # a sparse 64 MB file: never read whole
        f.truncate(64 << 20)
    deep = _copy(good, tmp_path / "deep")
    (deep / "manifest.json").write_text("[" * 200_000 + "]" * 200_000)
    assert main(["verify", str(huge), str(garbage), str(big_manifest), str(deep), str(good)]) == 1
    captured = capsys.readouterr()
    assert "larger than checks run" in captured.err and "not a readable golden file" in captured.err
    assert "manifest.json: larger than" in captured.err and "nested too deep" in captured.err
    assert captured.out.count("| pass |") == 1  # the good one after four bad ones
    for bad in (big_manifest, deep):  # loading a runner reads the manifest through the same bound
        with pytest.raises(ValueError, match="manifest.json"):
            load_runner(bad)


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_a_graph_its_runtime_refuses_fails_alone_in_one_line(onnx_artifacts, tmp_path, capsys, backend, restamp):
    """A corrupt graph and one whose weights point outside its folder (external data: an absolute
    path, a ``..`` path) are each one failed row naming the file; the good artifact is still checked.
    Their manifests record them as they are: whoever can edit a file can edit its manifest too."""
    pytest.importorskip(backend)
    good, _ = onnx_artifacts
    garbage = _copy(good, tmp_path / "garbage")
    (garbage / "model.onnx").write_bytes(b"not a protobuf")
    escaping = []
    for name, location in (("absolute", "/etc/hostname"), ("dotdot", "../../../../../../etc/hostname")):
        folder = _copy(good, tmp_path / name)
        graph = onnx.load(str(folder / "model.onnx"))
        weight = next(t for t in graph.graph.initializer if len(t.dims) == 4)
        weight.ClearField("raw_data")
        weight.data_location = onnx.TensorProto.EXTERNAL
        entry = weight.external_data.add()
        entry.key, entry.value = "location", location
        onnx.save(graph, str(folder / "model.onnx"))
        escaping.append(folder)
    bad = [garbage, *escaping]
    for folder in bad:
        restamp(folder)
    assert main(["verify", *map(str, bad), str(good), "--backend", backend]) == 1
    captured = capsys.readouterr()
    rows = [line for line in captured.out.splitlines() if line.startswith(f"| {tmp_path}") or "| pass |" in line]
    assert len(rows) == 4 and rows[-1].endswith("| pass |")
    errors = captured.err.splitlines()
    for folder in bad:
        line = next(e for e in errors if e.startswith(f"error: {folder}:"))
        assert f"{folder / 'model.onnx'}: {backend} cannot load it" in line and "re-export" in line
        with pytest.raises(ValueError, match="cannot load it"):  # the same one-line error from the Python API
            load_runner(folder, backend=backend)


def _conv_qdq(weights: np.ndarray) -> onnx.ModelProto:
    """x -> Q/DQ (int8) -> Conv with int8 weights behind a DequantizeLinear."""
    c = weights.shape[0]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"]),
        helper.make_node("DequantizeLinear", ["w", "ws", "wz"], ["wd"], axis=0),
        helper.make_node("Conv", ["xd", "wd"], ["y"], pads=[1, 1, 1, 1]),
    ]
    inits = [
        numpy_helper.from_array(np.array(1 / 127, np.float32), "xs"),
        numpy_helper.from_array(np.array(0, np.int8), "xz"),
        numpy_helper.from_array(weights, "w"),
        numpy_helper.from_array(np.full(c, 1 / 127, np.float32), "ws"),
        numpy_helper.from_array(np.zeros(c, np.int8), "wz"),
    ]
    io = [helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, [1, c, 16, 16]) for n in ("x", "y")]
    graph = helper.make_graph(nodes, "conv", io[:1], io[1:], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


_AVX2_SCRIPT = """
import sys, numpy as np, onnx, onnxruntime as ort, openvino as ov
from baryir.export.onnx_qdq import halve_weight_range
x = np.random.default_rng(1).choice([-1.0, 1.0], size=(1, 32, 16, 16)).astype(np.float32)
for name in ("full", "halved"):
    model = onnx.load(sys.argv[1])
    if name == "halved":
        assert halve_weight_range(model) == 1
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # Q/DQ evaluated in float
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    ref = session.run(None, {"x": x})[0]
    core = ov.Core()
    ir = core.read_model(model.SerializeToString(), b"")
    out = core.compile_model(ir, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})(x)[0]
    print(name, float(np.abs(out - ref).max()))
"""


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="oneDNN's x86 int8 kernels only")
@pytest.mark.slow
def test_without_vnni_full_range_weights_saturate_and_7_bit_weights_do_not(tmp_path):
    pytest.importorskip("openvino")
    weights = np.where(np.random.default_rng(0).random((32, 32, 3, 3)) > 0.5, 127, -127).astype(np.int8)
    onnx.save(_conv_qdq(weights), str(tmp_path / "conv.onnx"))
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2"}  # what a CPU without VNNI runs
    run = subprocess.run(
        [sys.executable, "-c", _AVX2_SCRIPT, str(tmp_path / "conv.onnx")], capture_output=True, text=True, env=env
    )
    assert run.returncode == 0, run.stderr[-2000:]
    errors = dict(line.split() for line in run.stdout.split("\n") if line)
    assert float(errors["full"]) > 1.0  # int16 saturation: wrong by whole output units
    assert float(errors["halved"]) < 1e-3  # the same real weights in 7 bits: exact


def test_weights_not_7bit_names_what_a_cpu_without_vnni_would_get_wrong():
    from baryir.export.onnx_qdq import halve_weight_range, weights_not_7bit

    model = _conv_qdq(np.where(np.random.default_rng(0).random((8, 8, 3, 3)) > 0.5, 127, -127).astype(np.int8))
    assert weights_not_7bit(model) == ["w: int8 weights in [-127, 127]"]
    assert halve_weight_range(model) == 1 and weights_not_7bit(model) == []
    # a graph traced with NNCF's own FakeQuantize op instead of Q/DQ pairs: nothing to requantize
    model.graph.node.append(helper.make_node("FakeQuantize", ["y", "xs", "xs", "xs", "xs"], ["z"], name="fq"))
    assert weights_not_7bit(model) == ["fq: a FakeQuantize op"]


def test_a_miss_is_explained_by_the_backend_that_knows_its_cause(tmp_path, monkeypatch):
    ov = pytest.importorskip("openvino")
    from baryir.runtimes.backends.openvino_runner import OpenVINORunner

    onnx.save(_conv_qdq(np.ones((8, 8, 3, 3), np.int8)), str(tmp_path / "conv.onnx"))
    ov.save_model(ov.convert_model(str(tmp_path / "conv.onnx")), str(tmp_path / "model.xml"))
    with OpenVINORunner(str(tmp_path / "model.xml"), "CPU", "int8", quantized=True) as runner:
        full = {"precision": "int8", "weight_levels": [-127, 127]}
        seven_bit = {"precision": "int8", "weight_levels": [-64, 64]}
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")  # int8 kernels that saturate
        assert "7-bit weights" in likely_cause(full, runner)
        assert "still miss" in likely_cause(seven_bit, runner)
        assert "does not reproduce the export" in likely_cause({"precision": "fp32"}, runner)
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "ALL")
        if not int8_saturates():  # VNNI/AMX here: the int8 diagnosis does not apply
            assert "does not reproduce the export" in likely_cause(full, runner)


def test_an_fp16_ir_computed_at_a_finer_precision_keeps_its_own_budget(tmp_path, monkeypatch, capsys):
    """OpenVINO computes an FP16 IR (weights stored in fp16) in f32 unless asked otherwise: the
    output carries the weights' fp16 rounding, so it is held to the fp16 budget, not f32's
    (``restore`` refused every FP16 IR before); asked for a coarser precision it gets that one's."""
    pytest.importorskip("openvino")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    torch.manual_seed(0)
    model = save_model(build_model("nano"), tmp_path / "nano.safetensors")
    export_model(model, "openvino", "fp16", tmp_path, shapes=((64, 64),))
    folder = tmp_path / "openvino-fp16"
    runner = load_runner(folder, verify=False)
    assert runner.info.precision == "fp32"
    result = check_on_load(runner, folder)
    assert result["passed"] and result["precision"] == "fp16", result
    assert "psnr" in result["tolerance"] and "max_abs" not in result["tolerance"]  # fp16's budget, not f32's
    assert "degradation_max_abs" not in result["tolerance"]  # no readout, no second output to bound
    assert main(["verify", str(folder)]) == 0 and "| pass |" in capsys.readouterr().out
    from baryir.runtimes.compare import budget_precision

    assert budget_precision("fp16", "fp32") == "fp16" and budget_precision("fp32", "bf16") == "bf16"
    assert budget_precision("fp32", "int8") == "int8" and budget_precision("fp16", "bf16") == "fp16"
