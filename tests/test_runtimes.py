"""Runners, shared processing, `baryir restore`, parity and bench on the CPU backends."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageCms

from baryir import save_model
from baryir.cli import main
from baryir.io.images import from_float, to_float
from baryir.runtimes import Tiling, load_runner
from baryir.runtimes.processing import pad_to_multiple, run_tiled, tile_starts


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    from baryir import build_model

    torch.manual_seed(0)
    return save_model(build_model("nano"), tmp_path_factory.mktemp("m") / "nano.safetensors")


def test_dtype_round_trips():
    for dtype, top in ((np.uint8, 255), (np.uint16, 65535)):
        img = np.arange(0, top, max(1, top // 97), dtype=dtype)[:96].reshape(4, 8, 3)
        x, back = to_float(img)
        assert x.dtype == np.float32 and back == dtype and x.max() <= 1
        np.testing.assert_array_equal(from_float(x, back), img)
    with pytest.raises(TypeError, match="unsupported image dtype"):
        to_float(np.zeros((2, 2, 3), dtype=np.int64))


def test_padding_reflects_to_the_multiple():
    x = np.random.rand(1, 3, 13, 21).astype(np.float32)
    p = pad_to_multiple(x)
    assert p.shape == (1, 3, 16, 24)
    np.testing.assert_array_equal(p[..., :13, :21], x)
    np.testing.assert_array_equal(p[..., 13, :21], x[..., 11, :])  # reflect, not zeros


def test_tiles_cover_and_blend_exactly():
    assert tile_starts(100, 64, 16) == [0, 36]
    assert tile_starts(64, 64, 16) == [0]
    x = np.random.rand(1, 3, 150, 97).astype(np.float32)
    np.testing.assert_allclose(run_tiled(lambda b: b * 2, x, Tiling(64, 16), batch=3), 2 * x, atol=1e-6)
    with pytest.raises(ValueError):
        Tiling(60, 16)


@pytest.fixture(scope="module")
def fp32_exports(model_path, tmp_path_factory):
    """ONNX and OpenVINO FP32 exports of the nano model, shared by the tests that only run them."""
    from baryir.export.api import export_model

    folder = tmp_path_factory.mktemp("exports")
    export_model(model_path, "onnx,openvino", "fp32", folder, validate=False, shapes=((64, 64),))
    return folder


@pytest.mark.slow
def test_backends_agree_on_one_image(model_path, fp32_exports):
    tmp_path = fp32_exports
    img = (np.random.default_rng(1).random((45, 70, 3)) * 255).astype(np.uint8)
    outs = {}
    for artifact in (model_path, tmp_path / "onnx-fp32", tmp_path / "openvino-fp32"):
        runner = load_runner(artifact)
        outs[runner.info.backend] = runner.restore(img.astype(np.float32) / 255)
        assert runner.info.precision == "fp32"
        assert runner.restore(img).dtype == np.uint8
    assert set(outs) == {"torch", "onnxruntime", "openvino"}
    for name in ("onnxruntime", "openvino"):
        np.testing.assert_allclose(outs[name], outs["torch"], atol=1e-4)


@pytest.mark.slow
def test_openvino_runner_states_its_real_precision(fp32_exports):
    from baryir.runtimes.environment import cpu_features

    tmp_path = fp32_exports
    assert load_runner(tmp_path / "openvino-fp32").info.precision == "fp32"
    # asked for bf16, the runner reports what the plugin really runs: bf16 only where the CPU has it
    expected = "bf16" if cpu_features().get("bf16") else "fp32"
    assert load_runner(tmp_path / "openvino-fp32", precision="bf16").info.precision == expected


@pytest.mark.slow
def test_a_runtime_runs_another_formats_artifact_only_where_its_row_says(fp32_exports):
    img = np.random.default_rng(2).random((64, 64, 3)).astype(np.float32)
    onnx_on_openvino = load_runner(fp32_exports / "onnx-fp32", backend="openvino")  # OpenVINO reads ONNX
    assert onnx_on_openvino.info.backend == "openvino"
    reference = load_runner(fp32_exports / "onnx-fp32").restore(img)
    np.testing.assert_allclose(onnx_on_openvino.restore(img), reference, atol=1e-4)
    with pytest.raises(ValueError, match="is an artifact for openvino; it cannot run on onnxruntime"):
        load_runner(fp32_exports / "openvino-fp32", backend="onnxruntime")


@pytest.mark.parametrize("artifact", ["torch", "onnx-fp32", "openvino-fp32"])
def test_every_cpu_backend_profiles_its_operations(model_path, fp32_exports, artifact):
    from baryir.comparison.profile import summarise

    runner = load_runner(model_path if artifact == "torch" else fp32_exports / artifact)
    x = np.random.default_rng(0).random((1, 3, 64, 64), dtype=np.float32)
    ops = runner.profile(x, runs=2)
    assert ops and all(op.ms >= 0 and op.op and op.kernel for op in ops)
    summary = summarise(ops, top=5)
    assert len(summary["by_type"]) <= 5 and summary["total_ms"] > 0
    assert summary["by_type"] == sorted(summary["by_type"], key=lambda t: -t["ms"])
    # convolutions are most of this network's work on every backend
    conv = {"torch": "convolution", "onnxruntime": "Conv", "openvino": "Convolution"}[runner.info.backend]
    assert any(conv in t["op"] for t in summary["by_type"])
    if runner.info.backend == "openvino":  # the kernel each layer ran, as the plugin names it
        assert any(k.startswith(("jit", "brgconv", "ref", "gemm", "reorder")) for op in ops for k in [op.kernel])


def test_missing_or_mismatched_backends_are_clear_errors(model_path, tmp_path):
    with pytest.raises(ValueError, match=r"cannot run on onnxruntime: export it first \(baryir export .*--format onnx"):
        load_runner(model_path, backend="onnxruntime")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="manifest.json"):
        load_runner(tmp_path / "empty")


def _write(path, array, **params):
    Image.fromarray(array).save(path, **params)
    return path


def test_restore_keeps_formats_and_reports_bad_inputs(model_path, tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    rng = np.random.default_rng(0)
    rgb = (rng.random((40, 52, 3)) * 255).astype(np.uint8)
    _write(src / "photo.png", rgb)
    _write(src / "photo2.jpg", rgb, quality=90)
    gray16 = (rng.random((33, 41)) * 65535).astype(np.uint16)
    Image.fromarray(gray16).save(src / "gray16.png")
    rgba = np.dstack([rgb, np.full((40, 52), 77, np.uint8)])
    _write(src / "alpha.png", rgba)
    Image.fromarray(rgb).convert("P").save(src / "palette.png")
    Image.fromarray(rgb).convert("L").save(src / "gray.png")
    Image.fromarray(rgb).save(src / "photo3.webp")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    Image.fromarray(rgb).save(src / "rotated.jpg", exif=exif.tobytes())
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()  # an RGB profile survives untouched
    Image.fromarray(rgb).save(src / "icc.png", icc_profile=icc)
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    (src / "truncated.png").write_bytes(buf.getvalue()[:200])
    (src / "empty.png").write_bytes(b"")
    (src / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    code = main(
        ["restore", str(src), str(src / "notes.txt"), "-o", str(out), "--model", str(model_path), "--no-progress"]
    )
    err = capsys.readouterr().err
    assert code == 1
    for bad in ("broken.png", "truncated.png", "empty.png", "notes.txt"):
        assert bad in err
    assert "restored 9 of 13" in err
    assert Image.open(out / "photo.png").size == (52, 40)
    assert Image.open(out / "photo2.jpg").format == "JPEG"
    g = Image.open(out / "gray16.png")
    assert g.mode.startswith("I") and np.asarray(g).max() > 255
    a = Image.open(out / "alpha.png")
    assert a.mode == "RGBA" and np.all(np.asarray(a)[..., 3] == 77)
    assert Image.open(out / "gray.png").mode == "L"
    assert Image.open(out / "photo3.webp").format == "WEBP"
    assert Image.open(out / "rotated.jpg").size == (40, 52)  # EXIF orientation applied
    assert Image.open(out / "icc.png").info.get("icc_profile") == icc
    assert not list(out.glob(".*.tmp"))


def test_restore_never_overwrites_inputs_and_tiles(model_path, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    _write(src / "a.png", (np.random.default_rng(2).random((90, 130, 3)) * 255).astype(np.uint8))
    before = (src / "a.png").read_bytes()
    assert main(["restore", str(src / "a.png"), "-o", str(src), "--model", str(model_path), "--no-progress"]) == 1
    assert (src / "a.png").read_bytes() == before
    assert (
        main(
            [
                "restore",
                str(src / "*.png"),
                "-o",
                str(tmp_path / "t"),
                "--model",
                str(model_path),
                "--tile",
                "64",
                "--overlap",
                "16",
                "--no-progress",
            ]
        )
        == 0
    )
    assert Image.open(tmp_path / "t" / "a.png").size == (130, 90)


@pytest.fixture(scope="module")
def artifact_cache(tmp_path_factory):
    """The ``--cache`` of parity and eval: exports of ``model_path`` made once, reused by both."""
    return tmp_path_factory.mktemp("cache")


@pytest.mark.slow
def test_parity_cli_runs_cpu_backends(model_path, artifact_cache, tmp_path, photo_dir):
    report = tmp_path / "parity.json"
    code = main(
        [
            "parity",
            "--model",
            str(model_path),
            "--clean",
            str(photo_dir),
            "--tasks",
            "denoise_25",
            "--limit",
            "2",
            "--backends",
            "torch",
            "onnxruntime",
            "openvino",
            "--precisions",
            "fp32",
            "--cache",
            str(artifact_cache),
            "--json",
            str(report),
        ]
    )
    data = json.loads(report.read_text())
    assert data["reference"] == "torch-fp32"
    rows = {(r["backend"], r["precision"]): r for r in data["rows"]}
    assert set(rows) == {("torch", "fp32"), ("onnxruntime", "fp32"), ("openvino", "fp32")}
    for r in data["rows"]:
        assert {
            "backend",
            "precision",
            "device",
            "psnr_vs_reference",
            "max_abs",
            "psnr_vs_target",
            "ssim_vs_target",
            "passed",
        } <= set(r)
        assert r["psnr_vs_reference"] >= 50 and r["passed"]
    assert code == 0  # the skipped file is said (stderr and JSON), not a failed row
    assert [s.split(": ")[0] for s in data["skipped"]] == [str(photo_dir / "broken.png")]
    assert len(data["images"]) == 3 and any("@1032x776" in name for name in data["images"])


@pytest.mark.slow
def test_eval_cli_on_onnx_runtime_matches_torch(model_path, artifact_cache, tmp_path, photo_dir):
    """`eval --backend onnxruntime` exports the checkpoint, runs it in ONNX Runtime, says so, and
    scores what PyTorch scores on the same draws."""
    reports = {}
    for backend in ("torch", "onnxruntime"):
        reports[backend] = tmp_path / f"{backend}.json"
        args = ["eval", "--model", str(model_path), "--clean", str(photo_dir), "--tasks", "denoise_25", "dehaze"]
        args += ["--backend", backend, "--cache", str(artifact_cache), "--json", str(reports[backend])]
        assert main([*args, "--no-progress"]) == 1  # both ran; exit 1 says the fixture's broken.png was skipped
    ref, ort = (json.loads(reports[b].read_text()) for b in ("torch", "onnxruntime"))
    assert (ort["backend"], ort["device"], ort["runs_at"]) == ("onnxruntime", "CPU", "fp32")
    scored = Path(ort["artifact"])
    assert scored.is_relative_to(artifact_cache) and scored.name == "model.onnx" and scored.is_file()
    assert Path(ref["artifact"]).samefile(model_path)
    for r, o in zip(ref["results"], ort["results"]):
        assert (r["task"], r["n"]) == (o["task"], o["n"])
        assert o["input_psnr"] == r["input_psnr"]
        assert abs(o["psnr"] - r["psnr"]) < 1e-3 and abs(o["ssim"] - r["ssim"]) < 1e-4


@pytest.mark.gpu
def test_parity_cli_torch_cuda_rows(model_path, tmp_path, photo_dir):
    report = tmp_path / "parity.json"
    args = ["parity", "--model", str(model_path), "--clean", str(photo_dir), "--limit", "1", "--backends", "torch"]
    args += ["--precisions", "fp32", "fp16", "--torch-device", "cuda", "--json", str(report)]
    code = main(args)
    rows = json.loads(report.read_text())["rows"]
    assert [(r["precision"], r["device"].split()[0]) for r in rows] == [
        ("fp32", "cpu"),
        ("fp32", "cuda"),
        ("fp16", "cuda"),
    ]
    assert code == 0 and all(r["passed"] for r in rows)


@pytest.mark.slow
def test_bench_cli_rows(model_path, tmp_path, capsys):
    report = tmp_path / "bench.json"
    assert (
        main(
            [
                "bench",
                "--model",
                str(model_path),
                "--backends",
                "torch",
                "onnxruntime",
                "coreml",
                "--size",
                "64x64",
                "--repeats",
                "2",
                "--warmup",
                "1",
                "--cache",
                str(tmp_path / "c"),
                "--json",
                str(report),
                "--plot",
                str(tmp_path / "b.png"),
            ]
        )
        == 0
    )
    data = json.loads(report.read_text())
    assert {r["backend"] for r in data["rows"]} == {"torch", "onnxruntime"}
    assert any(s["backend"] == "coreml" for s in data["skipped"])  # not macOS: skipped with a note
    for r in data["rows"]:
        assert r["p50_ms"] > 0 and r["p90_ms"] >= r["p50_ms"] and r["peak_rss_mb"] > 0
        assert (r["height"], r["width"]) == (64, 64)
    assert (tmp_path / "b.png").stat().st_size > 0
    fastest = min(data["rows"], key=lambda r: r["p50_ms"])
    assert f"fastest here: {fastest['backend']} {fastest['precision']}" in capsys.readouterr().out


def test_restore_refuses_decompression_bombs_before_decoding(model_path, tmp_path, capsys):
    bomb = tmp_path / "bomb.png"
    Image.new("1", (12_000, 12_000)).save(bomb)  # 144 MP, a few kB on disk
    code = main(["restore", str(bomb), "-o", str(tmp_path / "out"), "--model", str(model_path), "--no-progress"])
    assert code == 1 and "decompression bomb" in capsys.readouterr().err
    assert not (tmp_path / "out" / "bomb.png").exists()


@pytest.mark.slow
def test_parity_cache_never_serves_another_checkpoints_export(model_path, tmp_path):
    from baryir import build_model
    from baryir.comparison.parity import artifact_for
    from baryir.io.digest import file_sha256

    torch.manual_seed(1)  # same architecture, other weights (a retrained model saved elsewhere)
    retrained = save_model(build_model("nano"), tmp_path / "retrained.safetensors")
    cache = tmp_path / "cache"
    first = artifact_for(str(model_path), "onnxruntime", "fp32", cache)
    second = artifact_for(str(retrained), "onnxruntime", "fp32", cache)
    assert first != second
    manifest = json.loads((Path(second) / "manifest.json").read_text())
    assert manifest["source"]["sha256"] == file_sha256(retrained)
    assert artifact_for(str(model_path), "onnxruntime", "fp32", cache) == first  # reused, not re-exported


@pytest.mark.slow
def test_restore_and_verify_run_without_torch(fp32_exports, tmp_path, run_without_torch):
    """A device that only runs artifacts needs numpy, Pillow and the backend, not PyTorch."""
    shutil.copytree(fp32_exports / "onnx-fp32", tmp_path / "onnx-fp32")
    _write(tmp_path / "photo.png", (np.random.default_rng(3).random((40, 56, 3)) * 255).astype(np.uint8))
    run = run_without_torch

    restore = run(
        "restore", str(tmp_path / "photo.png"), "-o", str(tmp_path / "out"), "--model", str(tmp_path / "onnx-fp32")
    )
    assert restore.returncode == 0, restore.stderr[-2000:]
    assert Image.open(tmp_path / "out" / "photo.png").size == (56, 40)
    verify = run("verify", str(tmp_path / "onnx-fp32"))
    assert verify.returncode == 0 and "| pass |" in verify.stdout, verify.stdout + verify.stderr[-2000:]
    train = run("train", "--data", str(tmp_path), "-o", str(tmp_path / "run"))
    assert (
        train.returncode == 2
        and "baryir train (PyTorch) needs the torch extra: pip install 'baryir[torch]'" in train.stderr
    )


def test_openvino_names_a_device_it_does_not_have_and_refuses_auto(fp32_exports):
    """A device OpenVINO cannot see (a GPU on a CPU-only machine) is named with the ones it has,
    not reported as an artifact to re-export; AUTO/HETERO pick the device (and so the precision)
    themselves, which a runner that states its precision cannot do."""
    pytest.importorskip("openvino")
    import openvino as ov

    folder = fp32_exports / "openvino-fp32"
    available = ov.Core().available_devices
    missing = next(d for d in ("GPU", "NPU", "FPGA") if d not in {a.split(".")[0] for a in available})
    with pytest.raises(ValueError, match=f"OpenVINO sees no {missing} device here"):
        load_runner(folder, device=missing, verify=False)
    with pytest.raises(ValueError, match="AUTO picks the device itself"):
        load_runner(folder, device="AUTO", verify=False)
