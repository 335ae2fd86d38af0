"""The degradation readout: fitting, storage tied to the weights, the second output of the
exports, ``runner.analyze``, ``baryir analyze`` and ``restore --skip-clean``."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from baryir import build_model
from baryir.analysis import fit_linear, fit_readout
from baryir.checkpoints import READOUT_KEY, load_model, read_safetensors, save_model, save_tensors
from baryir.cli import main
from baryir.model import DEGRADATION_CLASSES, DegradationReadout
from baryir.model.readout import DEFAULT_LATENTS, feature_count, pooled_statistics, weights_digest
from baryir.runtimes import load_runner


def readout_for(model, favour: str | None = None, seed: int = 0) -> DegradationReadout:
    """A readout tied to ``model``'s weights: random, or one whose bias makes ``favour`` win."""
    k, features = len(DEGRADATION_CLASSES), feature_count(DEFAULT_LATENTS, model.config.level_widths)
    weight = 0.05 * torch.randn(k, features, generator=torch.Generator().manual_seed(seed))
    bias = torch.zeros(k)
    if favour is not None:
        weight.zero_()
        bias[DEGRADATION_CLASSES.index(favour)] = 10.0
    return DegradationReadout(weight, bias, weights_digest(model.state_dict()))


@pytest.fixture(scope="module")
def analysing_model(tmp_path_factory):
    torch.manual_seed(0)
    model = build_model("nano").eval()
    model.readout = readout_for(model)
    return save_model(model, tmp_path_factory.mktemp("readout") / "nano-readout.safetensors")


def test_pooled_statistics_are_fp32_channel_statistics_at_any_size():
    """Mean, deviation and the mean absolute neighbour differences (over H x W, the padded edge
    adding zero), in FP32 from FP16 latents, at any size including one-pixel rows and columns."""
    for h, w in ((3, 5), (8, 8), (1, 12), (7, 1)):
        z = torch.randn(2, 6, h, w, dtype=torch.float64)
        feats = pooled_statistics(z.half())
        assert feats.dtype == torch.float32 and feats.shape == (2, 24)
        zd = z.half().double()
        dx = (zd[..., 1:] - zd[..., :-1]).abs().sum((2, 3)) / (h * w)
        dy = (zd[..., 1:, :] - zd[..., :-1, :]).abs().sum((2, 3)) / (h * w)
        ref = torch.cat([zd.mean((2, 3)), zd.std((2, 3), unbiased=False), dx, dy], 1)
        torch.testing.assert_close(feats.double(), ref, atol=1e-5, rtol=1e-4)
        only = pooled_statistics(z.half(), ("mean", "dy"))
        torch.testing.assert_close(only.double(), torch.cat([ref[:, :6], ref[:, 18:]], 1), atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="in that order"):
        DegradationReadout(torch.zeros(4, 8), torch.zeros(4), "x", latents=("enc2",), statistics=("std", "mean"))


def test_oriented_differences_tell_streaks_from_their_transpose():
    """Vertical streaks change along x, not along y: dx sees them, dy does not (and the reverse)."""
    z = torch.zeros(1, 1, 16, 16)
    z[..., ::4] = 1.0
    dx, dy = pooled_statistics(z, ("dx", "dy"))[0]
    assert dx > 0.4 and dy == 0
    dx_t, dy_t = pooled_statistics(z.transpose(2, 3), ("dx", "dy"))[0]
    assert dx_t == 0 and dy_t == dx


def test_weights_digest_sees_every_value_and_name(nano_model):
    state = nano_model.state_dict()
    digest = weights_digest(state)
    assert digest == weights_digest(dict(reversed(list(state.items()))))  # order-independent
    name = next(iter(state))
    changed = {**state, name: state[name].clone()}
    changed[name].view(-1)[0] += 1e-6
    assert weights_digest(changed) != digest
    renamed = {(f"x.{k}" if k == name else k): v for k, v in state.items()}
    assert weights_digest(renamed) != digest


def test_fit_linear_separates_separable_classes():
    gen = torch.Generator().manual_seed(0)
    centres = 4 * torch.randn(4, 10, generator=gen)
    labels = torch.arange(4).repeat_interleave(50)
    features = centres[labels] + torch.randn(200, 10, generator=gen) + 100  # offset: standardisation is folded in
    weight, bias = fit_linear(features, labels, 4)
    assert ((features @ weight.T + bias).argmax(1) == labels).float().mean() == 1.0


def test_fitted_readout_is_stored_with_the_weights_and_reloaded(nano_model, photo_dir, tmp_path):
    for bad in photo_dir.glob("broken*"):
        bad.unlink()
    readout = fit_readout(nano_model, [photo_dir], per_task=2, size=64, progress=False)
    assert readout.fit["samples"] == 2 * 6 and 0 <= readout.fit["fit_accuracy"] <= 1
    nano_model.readout = readout
    path = save_model(nano_model, tmp_path / "m.safetensors")
    _, meta = read_safetensors(path)
    assert json.loads(meta[READOUT_KEY])["fitted_on"] == weights_digest(nano_model.state_dict())
    loaded = load_model(path)
    assert loaded.readout is not None and loaded.readout_refused is None
    torch.testing.assert_close(loaded.readout.weight, readout.weight)
    x = torch.rand(2, 3, 48, 64)
    probs = loaded.analyze(x)
    assert probs.shape == (2, 4)
    torch.testing.assert_close(probs.sum(1), torch.ones(2))
    torch.testing.assert_close(probs, nano_model.analyze(x))


def test_a_readout_for_other_weights_is_refused_not_the_model(analysing_model, tmp_path):
    tensors, meta = read_safetensors(analysing_model)
    name = next(k for k in tensors if not k.startswith("readout."))
    tensors[name] = tensors[name] + 1e-3  # the weights changed after the readout was fitted
    meta = {k: v for k, v in meta.items() if k != "baryir.format"}
    save_tensors(tensors, tmp_path / "changed.safetensors", "model", meta)
    model = load_model(tmp_path / "changed.safetensors")
    assert model.readout is None and "fitted on other weights" in model.readout_refused
    with pytest.raises(ValueError, match="changed.safetensors: .*refit it with `baryir fit-readout`"):
        model.analyze(torch.rand(1, 3, 32, 32))
    assert model(torch.rand(1, 3, 32, 32)).shape == (1, 3, 32, 32)  # restoring is unaffected
    with pytest.raises(ValueError, match="degradation must be none, also, only, latents"):
        model(torch.rand(1, 3, 32, 32), degradation="al")  # a mistyped mode is refused, not a silent restore


def test_saving_changed_weights_drops_the_stale_readout(tmp_path, caplog):
    model = load_model(build_and_save(tmp_path))
    with torch.no_grad():
        next(model.parameters()).add_(0.01)
    path = save_model(model, tmp_path / "tuned.safetensors")
    assert "fitted on other weights" in caplog.text
    assert load_model(path).readout is None and load_model(path).readout_refused is None


def build_and_save(tmp_path):
    torch.manual_seed(1)
    model = build_model("nano").eval()
    model.readout = readout_for(model)
    return save_model(model, tmp_path / "with-readout.safetensors")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda m: {**m, "version": 99}, "version 99"),
        (lambda m: {**m, "classes": ["clean"] * 4}, "distinct"),
        (lambda m: {**m, "classes": [f"c{i}" for i in range(40)]}, "2-16"),
        (lambda m: {**m, "version": True}, "version True"),
        (lambda m: {**m, "latents": ["decoder"]}, "latents"),
        (lambda m: {**m, "statistics": ["mean", "kurtosis"]}, "statistics"),
        (lambda m: {**m, "statistics": "mean"}, "statistics"),
        (lambda m: {k: v for k, v in m.items() if k != "statistics"}, "statistics"),
        (lambda m: {**m, "statistics": ["mean", "std"]}, "do not fit 4 classes"),  # a v2 head on fewer features
        (lambda m: "not json {", "not a JSON object"),
    ],
)
def test_hostile_readout_metadata_is_refused(analysing_model, tmp_path, edit, message):
    tensors, meta = read_safetensors(analysing_model)
    edited = edit(json.loads(meta[READOUT_KEY]))
    meta = {k: v for k, v in meta.items() if k != "baryir.format"}
    meta[READOUT_KEY] = edited if isinstance(edited, str) else json.dumps(edited)
    save_tensors(tensors, tmp_path / "hostile.safetensors", "model", meta)
    model = load_model(tmp_path / "hostile.safetensors")
    assert model.readout is None and message in model.readout_refused


def test_a_version_1_readout_still_loads_and_reads_mean_and_deviation():
    """Files written before the neighbour differences (the previous shipped default) keep their readout."""
    model = load_model("default-v2")
    assert model.readout is not None and model.readout.version == 1
    assert model.readout.statistics == ("mean", "std")
    assert model.readout.weight.shape[1] == feature_count(
        model.readout.latents, model.config.level_widths, ("mean", "std")
    )
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        probs = model.analyze(x)
        latents = model.latents(x, model.readout.latents)
        features = torch.cat([pooled_statistics(latents[n], ("mean", "std")) for n in model.readout.latents], 1)
    expected = (features @ model.readout.weight.T + model.readout.bias).softmax(1)
    torch.testing.assert_close(probs, expected)  # its head on mean and deviation, as fitted


def test_a_readout_of_the_wrong_shape_is_refused(analysing_model, tmp_path):
    tensors, meta = read_safetensors(analysing_model)
    tensors["readout.weight"] = torch.zeros(4, 3)
    save_tensors(
        tensors, tmp_path / "shape.safetensors", "model", {k: v for k, v in meta.items() if k != "baryir.format"}
    )
    assert "do not fit 4 classes" in load_model(tmp_path / "shape.safetensors").readout_refused


@pytest.fixture(scope="module")
def analysing_exports(analysing_model, tmp_path_factory):
    from baryir.export.api import export_model

    folder = tmp_path_factory.mktemp("exports")
    results = export_model(analysing_model, "onnx,openvino", "fp32", folder, shapes=((64, 64),))
    return folder, results


def test_exports_carry_the_degradation_output_checked_against_pytorch(analysing_exports):
    folder, results = analysing_exports
    for result in results:
        rows = result["validation"]
        assert rows and all(r["degradation_max_abs"] <= 1e-4 for r in rows), rows
        manifest = json.loads((folder / f"{result['format']}-fp32" / "manifest.json").read_text())
        names = [o["name"] for o in manifest["outputs"]]
        assert names == ["restored", "degradation"]
        assert manifest["outputs"][1]["classes"] == list(DEGRADATION_CLASSES)
        assert manifest["golden"]["outputs"] == ["output", "degradation"]


@pytest.mark.parametrize("fmt", ["onnx", "openvino"])
def test_every_backend_analyzes_like_pytorch(analysing_model, analysing_exports, fmt):
    folder, _ = analysing_exports
    image = (np.random.default_rng(0).random((50, 70, 3)) * 255).astype(np.uint8)
    torch_scores = load_runner(analysing_model).analyze(image)
    runner = load_runner(folder / f"{fmt}-fp32")
    assert runner.degradation_classes == DEGRADATION_CLASSES
    scores = runner.analyze(image)
    assert list(scores) == list(torch_scores)
    assert max(abs(scores[c] - torch_scores[c]) for c in scores) < 1e-4
    assert abs(sum(scores.values()) - 1) < 1e-5
    from baryir.runtimes import Tiling

    tiled = runner.analyze(image, Tiling(32, 8))  # tiles' probabilities averaged by area
    assert abs(sum(tiled.values()) - 1) < 1e-5


def test_analyze_cli_reports_every_photo_and_survives_bad_ones(analysing_model, photo_dir, tmp_path, capsys):
    report = tmp_path / "analysis.json"
    code = main(["analyze", str(photo_dir), "--model", str(analysing_model), "--json", str(report), "--no-progress"])
    out, err = capsys.readouterr()
    assert code == 1  # broken.png failed, the others were analysed
    assert "broken.png" in err and "analysed 4 of 5 image(s)" in err
    results = json.loads(report.read_text())["results"]
    good = [r for r in results if "label" in r]
    assert len(good) == 4 and all(r["label"] in DEGRADATION_CLASSES for r in good)
    for r in good:
        assert r["label"] == max(r["scores"], key=r["scores"].get)
        assert f"{r['file']}: {r['label']}" in out
    assert "| clean | noise | rain | haze | failed |" in out


def test_analyze_without_a_readout_is_one_clear_error(photo_dir, tmp_path, capsys):
    plain = save_model(build_model("nano"), tmp_path / "plain.safetensors")
    assert main(["analyze", str(photo_dir / "img0.png"), "--model", str(plain)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "has no degradation output" in err[-1] and "fit-readout" in err[-1]


@pytest.mark.parametrize("favour", ["clean", "rain"])
def test_restore_skip_clean_copies_clean_photos_untouched(tmp_path, photo_dir, capsys, favour):
    torch.manual_seed(0)
    model = build_model("nano").eval()
    model.readout = readout_for(model, favour=favour)
    path = save_model(model, tmp_path / f"{favour}.safetensors")
    out = tmp_path / "out"
    code = main(["restore", str(photo_dir / "img2.png"), "-o", str(out), "--model", str(path), "--skip-clean"])
    assert code == 0
    same = (out / "img2.png").read_bytes() == (photo_dir / "img2.png").read_bytes()
    assert same == (favour == "clean")
    err = capsys.readouterr().err
    assert ("read as clean" in err) == (favour == "clean")
    restored = np.asarray(Image.open(out / "img2.png"))
    assert restored.shape == np.asarray(Image.open(photo_dir / "img2.png")).shape


def test_fit_readout_cli_writes_a_new_model_never_its_input(analysing_model, photo_dir, tmp_path, capsys):
    for bad in photo_dir.glob("broken*"):
        bad.unlink()
    before = analysing_model.read_bytes()
    code = main(["fit-readout", "--model", str(analysing_model), "--data", str(photo_dir), "-o", str(analysing_model)])
    assert code == 2 and analysing_model.read_bytes() == before
    assert "would overwrite the input" in capsys.readouterr().err
    out = tmp_path / "refit.safetensors"
    code = main(
        ["fit-readout", "--model", str(analysing_model), "--data", str(photo_dir), "-o", str(out)]
        + ["--per-task", "2", "--crop", "64", "--no-progress"]
    )
    assert code == 0 and load_model(out).readout is not None


@pytest.mark.slow
def test_tensorrt_and_coreml_graphs_carry_the_degradation_output(analysing_model, tmp_path):
    """What can be checked here of the GPU and macOS formats: TensorRT's ONNX (static checks, run
    in ONNX Runtime at fp16 with FP32 statistics) and the CoreML program's outputs and dtypes."""
    pytest.importorskip("coremltools")
    from baryir.export.api import export_model
    from baryir.export.coreml_export import spec_summary
    from baryir.export.tensorrt_export import check_onnx_for_tensorrt

    results = {  # one size: the outputs do not depend on it, and a fixed shape converts fast
        r["format"]: r
        for r in export_model(
            analysing_model, "tensorrt,coreml", "fp16", tmp_path, shapes=((64, 64),), coreml_io="image"
        )
    }
    onnx_path = tmp_path / "tensorrt-fp16" / "model.onnx"
    assert check_onnx_for_tensorrt(onnx_path) == []
    rows = results["tensorrt"]["onnx_validation"]
    assert rows and all(r["degradation_max_abs"] <= 0.02 for r in rows), rows
    spec = spec_summary(tmp_path / "coreml-fp16" / "model.mlpackage")
    assert [o["name"] for o in spec["outputs"]] == ["restored", "degradation"]
    assert spec["outputs"][0]["type"] == "imageType" and spec["outputs"][1]["type"] == "multiArrayType"


@pytest.mark.gpu
def test_tensorrt_runner_analyzes_like_pytorch(analysing_model, tmp_path):
    from baryir.export.api import export_model
    from baryir.export.tensorrt_export import tensorrt_available

    if tensorrt_available() is not None:
        pytest.skip(f"needs TensorRT: {tensorrt_available()}")
    export_model(analysing_model, "tensorrt", "fp32", tmp_path, shapes=((64, 64),))
    image = (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)
    scores = load_runner(tmp_path / "tensorrt-fp32").analyze(image)
    reference = load_runner(analysing_model).analyze(image)
    assert max(abs(scores[c] - reference[c]) for c in scores) < 1e-3


@pytest.mark.macos
def test_coreml_runner_analyzes_like_pytorch(analysing_model, tmp_path):
    from baryir.export.api import export_model

    export_model(analysing_model, "coreml", "fp32", tmp_path, shapes=((64, 64),), coreml_io="tensor")
    image = (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)
    scores = load_runner(tmp_path / "coreml-fp32").analyze(image)
    reference = load_runner(analysing_model).analyze(image)
    assert max(abs(scores[c] - reference[c]) for c in scores) < 1e-3


def test_onnx_export_adds_an_encoder_only_graph_for_analysis(analysing_exports):
    folder, _ = analysing_exports
    manifest = json.loads((folder / "onnx-fp32" / "manifest.json").read_text())
    assert manifest["analysis_artifact"] == "analyze.onnx"
    assert manifest["analysis_nodes"] < manifest["nodes"] / 2  # no decoder, no 1/8 latent
    assert load_runner(folder / "onnx-fp32").analysis is not None


def test_verify_checks_the_degradation_output_against_its_golden(analysing_exports, tmp_path, capsys, restamp):
    import shutil

    folder, _ = analysing_exports
    artifact = tmp_path / "onnx-fp32"
    shutil.copytree(folder / "onnx-fp32", artifact)
    report = tmp_path / "verify.json"
    assert main(["verify", str(artifact), "--json", str(report)]) == 0
    row = json.loads(report.read_text())[0]
    assert row["degradation_max_abs"] < 1e-4 and row["tolerance"]["degradation_max_abs"] == 1e-4
    with np.load(artifact / "golden.npz") as golden:
        arrays = dict(golden)
    arrays["degradation"] = np.eye(4, dtype=np.float32)[[3]]  # a golden that says "haze, certainly"
    np.savez_compressed(artifact / "golden.npz", **arrays)
    restamp(artifact)  # recorded as it is: the output check is what is tested
    assert main(["verify", str(artifact), "--json", str(report)]) == 1
    assert "degradation output differs" in json.loads(report.read_text())[0]["failures"][0]


def test_analyze_and_skip_clean_run_without_torch(analysing_exports, photo_dir, tmp_path, run_without_torch):
    """On a device with only a runtime: analyze and restore --skip-clean need no PyTorch."""
    folder, _ = analysing_exports
    photo = str(photo_dir / "img2.png")
    for argv in (
        ["analyze", photo, "--model", str(folder / "openvino-fp32"), "--json", str(tmp_path / "a.json")],
        ["restore", photo, "-o", str(tmp_path / "out"), "--model", str(folder / "onnx-fp32"), "--skip-clean"],
    ):
        done = run_without_torch(*argv)
        assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads((tmp_path / "a.json").read_text())["results"][0]["label"] in DEGRADATION_CLASSES
    assert (tmp_path / "out" / "img2.png").exists()


def test_a_manifest_cannot_point_analysis_outside_its_folder_or_at_nothing(analysing_exports, tmp_path):
    import shutil

    folder, _ = analysing_exports
    artifact = tmp_path / "onnx-fp32"
    shutil.copytree(folder / "onnx-fp32", artifact)
    manifest = json.loads((artifact / "manifest.json").read_text())
    for name, error in (("../../etc/passwd", "not a file name inside"), ("gone.onnx", "missing")):
        (artifact / "manifest.json").write_text(json.dumps({**manifest, "analysis_artifact": name}))
        with pytest.raises((ValueError, FileNotFoundError), match=error):
            load_runner(artifact, verify=False)


def test_tiny_and_16_bit_photos_are_analysed(analysing_model):
    runner = load_runner(analysing_model)
    for image in (np.full((1, 1, 3), 200, np.uint8), np.full((5, 13, 3), 40000, np.uint16)):
        scores = runner.analyze(image)
        assert abs(sum(scores.values()) - 1) < 1e-5
