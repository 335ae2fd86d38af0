"""Quantization: NNCF PTQ and QAT on a tiny model, quantized checkpoints, INT8 ONNX/OpenVINO."""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from baryir import build_model, save_model
from baryir.cli import main
from baryir.comparison.parity import cached_export_folder
from baryir.export.api import export_model
from baryir.export.common import validation_image
from baryir.export.tensorrt_export import check_onnx_for_tensorrt
from baryir.export.wrapper import DeploymentModel
from baryir.quantize.api import QuantizeOptions, run_quantize
from baryir.quantize.checkpoint import load_quantized, read_header, resolve_quantized
from baryir.quantize.scheme import Int8Scheme, quantizers

pytest.importorskip("nncf")
pytestmark = pytest.mark.slow  # NNCF quantization and INT8 exports: tens of seconds each


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(1 / mse))


@pytest.fixture(scope="module")
def float_path(tmp_path_factory):
    torch.manual_seed(0)
    return save_model(build_model("nano"), tmp_path_factory.mktemp("fp32") / "nano.safetensors")


@pytest.fixture(scope="module")
def ptq(float_path, tmp_path_factory):
    """PTQ of the nano model on 8 degraded patches of small synthetic photos. The float file it
    quantizes also carries a degradation readout (the weights of ``float_path``), as the shipped
    models do: what becomes of a readout under INT8 is checked on this one INT8 model."""
    from conftest import _smooth_image
    from PIL import Image

    from baryir.analysis import fit_readout
    from baryir.checkpoints import load_model

    photos = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(1)
    for i in range(3):
        Image.fromarray(_smooth_image(rng, (64, 64))).save(photos / f"p{i}.png")
    with_readout = load_model(float_path)
    with_readout.readout = fit_readout(with_readout, [str(photos)], per_task=2, size=48, progress=False)
    source = save_model(with_readout, tmp_path_factory.mktemp("fp32-readout") / "nano-readout.safetensors")
    return run_quantize(ptq_options(source, photos, tmp_path_factory.mktemp("ptq"))), photos


def ptq_options(float_path, photos, out, **overrides) -> QuantizeOptions:
    """The small PTQ of the tests: 8 degraded 32 px patches of ``photos``."""
    return QuantizeOptions(
        model=str(float_path),
        data=[str(photos)],
        out=str(out),
        method="ptq",
        tasks=["denoise_25", "derain"],
        calib_samples=8,
        calib_patch=32,
        progress=False,
        **overrides,
    )


def test_ptq_quantizers_are_signed_and_reload_exactly(ptq):
    path, _ = ptq
    model = load_quantized(path)
    found = quantizers(model)
    assert len(found) > 50 and all(q.signed for _, q in found)
    header = read_header(path)
    assert header["format"] == "quantized-model" and header["int8_scheme"]["overflow_fix"] == "disable"
    image = validation_image(48, 64)
    again = load_quantized(path)
    with torch.no_grad():
        assert torch.equal(DeploymentModel(model)(image), DeploymentModel(again)(image))
    # the default ignored scope keeps the attention's normalisation/matmuls and the LayerNorm
    # statistics in float (a LayerNorm's output is still quantized as the next conv's input)
    names = [n for n, _ in found]
    assert not [n for n in names if re.search(r"attn/(div|matmul|softmax)", n)]
    assert not [n for n in names if re.search(r"norm\d/body/(mean|sub|mul|rsqrt)", n)]
    assert [n for n in names if re.search(r"norm\d/body/add/1", n)]
    # ... and the transformer blocks' residual adds in float too: no quantizer on their
    # inputs (a block's output is still quantized where it feeds the next convolution)
    assert not [n for n in names if re.search(r"pre_hooks\..*/\d+/add/\d+__", n)]
    # ... and the full-resolution gated FFNs after their input projection (quantized on the
    # rewritten graph: gate and value branches, each a 1x1 then a depthwise conv); the 1x1s keep
    # their int8 weights there, and the FFNs of the lower levels stay fully quantized
    assert header["int8_scheme"]["rewrites"] == ["split_channel_chunks"]
    level1 = r"(encoder_level1|decoder_level1|refinement)/\d+/ffn/"
    after_in = r"((gate|value)/0/conv2d/0__0|(gate|value)/1/|gelu|mul|project_out)"
    assert not [n for n in names if re.search(level1 + after_in, n)]
    assert [n for n in names if re.search(level1 + r"(gate|value)/0/conv2d/0__1", n)]
    assert [n for n in names if re.search(r"encoder_level2/\d+/ffn/((gate|value)/1|mul|project_out)", n)]


@pytest.fixture(scope="module")
def int8_exports(ptq, tmp_path_factory):
    """The validated INT8 exports of the PTQ model, laid out as parity's cache (one export for
    the tests that inspect, run and compare them)."""
    path, _ = ptq
    cache = tmp_path_factory.mktemp("int8-cache")
    folder = cached_export_folder(cache, path, "onnxruntime", "int8").parent
    assert cached_export_folder(cache, path, "openvino", "int8").parent == folder
    return cache, folder, export_model(path, "onnx,openvino,tensorrt", "int8", folder, shapes=((64, 64),))


def test_int8_onnx_is_symmetric_and_runtimes_agree(int8_exports):
    _, tmp_path, results = int8_exports
    assert all(r["precision"] == "int8" for r in results)
    onnx_path = tmp_path / "onnx-int8" / "model.onnx"
    assert check_onnx_for_tensorrt(onnx_path) == []  # int8 zero points, all 0
    graph = onnx.load(str(onnx_path)).graph
    ops = [n.op_type for n in graph.node]
    assert ops.count("QuantizeLinear") > 20 and ops.count("DequantizeLinear") > ops.count("QuantizeLinear")
    int8_weights = [t for t in graph.initializer if t.data_type == onnx.TensorProto.INT8 and len(t.dims) == 4]
    assert len(int8_weights) >= 20  # weights stored as int8, not float behind a QuantizeLinear
    for t in graph.initializer:
        if t.data_type == onnx.TensorProto.UINT8:
            pytest.fail(f"uint8 tensor {t.name} in the graph")
    # every validation row (ONNX Runtime, OpenVINO) matched the fake-quantized PyTorch model
    for r in results:
        assert all(v["psnr"] >= 35 for v in r["validation"]), r["validation"]

    from baryir.runtimes import load_runner

    image = validation_image(72, 96).numpy()
    outs = {}
    for backend in ("onnxruntime", "openvino"):
        runner = load_runner(tmp_path / f"{'onnx' if backend == 'onnxruntime' else 'openvino'}-int8")
        assert runner.info.precision.startswith("int8")
        outs[backend] = runner.run(image)
    assert _psnr(outs["onnxruntime"], outs["openvino"]) >= 35
    assert results[1]["weight_levels"] == [-64, 63]  # OpenVINO (CPU) INT8: 7-bit weights, right without VNNI
    # OpenVINO's INT8 graph takes MDTA on tokens (it pays there only); the others keep the planar form
    onnx_rewrites, openvino_rewrites = (r["rewrites"] for r in results[:2])
    assert onnx_rewrites == ["split_channel_chunks"] and openvino_rewrites == [*onnx_rewrites, "token_attention"]
    # TensorRT builds its engine from the very graph ONNX Runtime was checked on (traced once)
    assert (tmp_path / "tensorrt-int8" / "model.onnx").read_bytes() == onnx_path.read_bytes()


def test_attention_on_tokens_keeps_every_quantizer_of_an_int8_model(ptq):
    """``token_attention`` on a quantized model: every NNCF quantizer still runs (the one of
    project_out's input is attached to the reshape_as the rewrite keeps), on the same values."""
    from baryir.model.rewrites import apply_rewrites

    model = load_quantized(ptq[0])
    tokens = apply_rewrites(model, ("token_attention",))
    x = validation_image(40, 56)

    def quantized_inputs(m: torch.nn.Module) -> list[torch.Tensor]:
        seen: list[torch.Tensor] = []
        handles = [q.register_forward_pre_hook(lambda _, a: seen.append(a[0].flatten())) for _, q in quantizers(m)]
        with torch.no_grad():
            out = m(x)
        for h in handles:
            h.remove()
        return [out[0] if isinstance(out, tuple) else out, *seen]

    planar, on_tokens = quantized_inputs(model), quantized_inputs(tokens)
    assert len(on_tokens) == len(planar) > 20
    assert tokens.rewrites == (*model.rewrites, "token_attention")
    # the same values reach each quantizer (in NHWC order before project_out: compared sorted)
    for a, b in zip(planar, on_tokens):
        assert a.shape == b.shape and torch.allclose(a.flatten().sort().values, b.flatten().sort().values, atol=1e-4)


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="oneDNN's x86 int8 kernels only")
def test_openvino_int8_is_right_without_vnni(int8_exports, tmp_path):
    """With oneDNN capped to AVX2 (what a CPU without VNNI runs) the OpenVINO INT8 artifact
    passes `baryir verify`; full-range 8-bit weights missed by 10-20 dB there."""
    _, folder, _ = int8_exports
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2", "XDG_CACHE_HOME": str(tmp_path)}
    cmd = [sys.executable, "-m", "baryir.cli", "verify", str(folder / "openvino-int8")]
    verify = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert verify.returncode == 0 and "| pass |" in verify.stdout, verify.stdout + verify.stderr[-2000:]


def test_qat_steps_resume_and_reload(ptq, float_path, tmp_path):
    _, photos = ptq
    common = dict(
        model=str(float_path),
        data=[str(photos)],
        out=str(tmp_path / "qat"),
        method="qat",
        tasks=["denoise_25", "derain"],
        calib_samples=4,
        calib_patch=32,
        batch_size=2,
        patch_size=32,
        lr=1e-4,
        workers=0,
        ckpt_every=2,
        progress=False,
    )
    path = run_quantize(QuantizeOptions(steps=2, **common))
    first = load_quantized(path)
    path = run_quantize(QuantizeOptions(steps=4, resume=True, **common))
    header = read_header(path)
    assert header["method"] == "qat" and header["step"] == 4 and header["learn_from"] == "fp32"
    metrics = (tmp_path / "qat" / "metrics.csv").read_text().splitlines()
    assert len(metrics) == 1 + 4  # header + steps 1-2, then 3-4 after the resume
    losses = [float(line.split(",")[3]) for line in metrics[1:]]
    assert all(np.isfinite(losses))
    tuned = load_quantized(path)
    w0 = dict(first.named_parameters())["patch_embed.proj.weight"]
    w1 = dict(tuned.named_parameters())["patch_embed.proj.weight"]
    assert not torch.equal(w0, w1)  # the fine-tuning changed the weights
    image = validation_image(32, 48)
    with torch.no_grad():
        assert torch.equal(DeploymentModel(tuned)(image), DeploymentModel(load_quantized(path))(image))


@pytest.mark.parametrize("learn_from", ["clean", "fp32"])
def test_qat_learns_from_the_clean_photo_or_the_float_model(ptq, float_path, tmp_path, learn_from):
    """QAT's L1 term compares the INT8 output with the clean photo, or (``learn_from="fp32"``)
    with the float model's output, whatever the batch's target says."""
    from baryir.checkpoints import load_model
    from baryir.quantize.qat import QATTrainer

    path, photos = ptq
    opts = QuantizeOptions(
        model=str(float_path),
        data=[str(photos)],
        out=str(tmp_path / "qat"),
        tasks=["denoise_25"],
        batch_size=2,
        patch_size=32,
        distill=0.0,
        learn_from=learn_from,
        workers=0,
        progress=False,
    )
    teacher = load_model(float_path)
    trainer = QATTrainer(opts.train_options(), load_quantized(path), Int8Scheme(), teacher, 0.0, learn_from)
    torch.manual_seed(3)
    degraded = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        student, fp32 = trainer.model(degraded, return_latents=False), teacher(degraded, return_latents=False)
    for target in (torch.zeros_like(degraded), torch.ones_like(degraded)):
        expected = (student - (fp32 if learn_from == "fp32" else target)).abs().mean().item()
        logs = trainer.train_step(degraded, target, torch.zeros(2, dtype=torch.long), torch.zeros(2, dtype=torch.long))
        assert logs["l1"] == pytest.approx(expected, rel=1e-4)
        trainer.model.load_state_dict(load_quantized(path).state_dict())  # the next target sees the same model
    with pytest.raises(ValueError, match="learn_from"):
        QATTrainer(opts.train_options(), load_quantized(path), Int8Scheme(), None, 0.0, "fp32")
    with pytest.raises(ValueError, match="--distill"):
        QATTrainer(opts.train_options(), load_quantized(path), Int8Scheme(), teacher, 1.0, "fp32")


def test_int8_needs_a_quantized_model(float_path, tmp_path):
    with pytest.raises(FileNotFoundError, match="baryir quantize"):
        resolve_quantized(float_path)
    with pytest.raises(FileNotFoundError, match="baryir quantize"):
        export_model(float_path, "onnx", "int8", tmp_path)


def test_parity_int8_rows(ptq, int8_exports, float_path, tmp_path, photo_dir):
    path, _ = ptq
    cache, folder, _ = int8_exports  # parity finds the INT8 artifacts there and exports only what is missing
    report = tmp_path / "parity.json"
    code = main(
        [
            "parity",
            "--model",
            str(float_path),
            "--int8-model",
            str(path),
            "--clean",
            str(photo_dir),
            "--tasks",
            "denoise_25",
            "--limit",
            "1",
            "--backends",
            "onnxruntime",
            "openvino",
            "--precisions",
            "int8",
            "--cache",
            str(cache),
            "--json",
            str(report),
        ]
    )
    rows = {(r["backend"], r["precision"]): r for r in json.loads(report.read_text())["rows"]}
    assert code == (0 if all(r["passed"] for r in rows.values()) else 1)  # the exit code says what the rows say
    assert {("onnxruntime", "int8"), ("openvino", "int8")} <= set(rows)
    ort, ov = rows["onnxruntime", "int8"], rows["openvino", "int8"]
    for row in (ort, ov):
        assert np.isfinite(row["max_abs"]) and row["budget"].startswith("target_loss_db")
        assert row["runs_at"].startswith("int8")
    # both runtimes execute the same int8 weights and scales, so they land on the same quality
    assert abs(ort["psnr_vs_target"] - ov["psnr_vs_target"]) < 0.2
    assert [p.name for p in cache.iterdir()] == [folder.name]  # the cached exports were reused


def test_export_cache_is_keyed_by_the_code_that_exports(ptq, tmp_path, monkeypatch):
    """An export made by other code (here: another PyTorch exporter) is never served from the cache."""
    path, _ = ptq
    before = cached_export_folder(tmp_path, path, "onnxruntime", "int8")
    assert cached_export_folder(tmp_path, path, "onnxruntime", "int8") == before
    monkeypatch.setattr(torch, "__version__", torch.__version__ + "+other")
    assert cached_export_folder(tmp_path, path, "onnxruntime", "int8") != before


def test_fold_weight_quantizers_matches_quantize_linear():
    from baryir.export.onnx_qdq import fold_weight_quantizers

    w = np.random.default_rng(0).normal(size=(4, 3, 1, 1)).astype(np.float32)
    scale = (np.abs(w).reshape(4, -1).max(1) / 127).astype(np.float32)
    nodes = [onnx.helper.make_node("QuantizeLinear", ["w", "s", "z"], ["q"], axis=0)]
    inits = [
        numpy_helper.from_array(w, "w"),
        numpy_helper.from_array(scale, "s"),
        numpy_helper.from_array(np.zeros(4, np.int8), "z"),
    ]
    out = onnx.helper.make_tensor_value_info("q", onnx.TensorProto.INT8, [4, 3, 1, 1])
    graph = onnx.helper.make_graph(nodes, "g", [], [out], inits)
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
    import onnxruntime as ort

    expected = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {})[0]
    folded = fold_weight_quantizers(model)
    assert not any(n.op_type == "QuantizeLinear" for n in folded.graph.node)
    got = numpy_helper.to_array(next(t for t in folded.graph.initializer if t.name == "q"))
    np.testing.assert_array_equal(got, expected)


#: one size: compression does not depend on the input shape, and a fixed shape converts in a
#: fraction of the time (coremltools infers every reshape symbolically for flexible ones)
_COREML_SHAPES = ((64, 64),)


@pytest.fixture(scope="module")
def coreml_float(float_path, tmp_path_factory):
    """The uncompressed CoreML export both compression modes are measured against."""
    pytest.importorskip("coremltools")
    float_dir = tmp_path_factory.mktemp("coreml-float")
    export_model(float_path, "coreml", "fp16", float_dir, shapes=_COREML_SHAPES, coreml_io="tensor")
    return float_dir


@pytest.mark.parametrize("mode, op", [("int8", "constexpr_affine_dequantize"), ("pal4", "constexpr_lut_to_dense")])
def test_coreml_weight_compression(float_path, coreml_float, tmp_path, mode, op):
    from baryir.export.coreml_compression import compressed_ops

    float_dir, small_dir = coreml_float, tmp_path / "small"
    export_model(
        float_path, "coreml", "fp16", small_dir, shapes=_COREML_SHAPES, coreml_io="tensor", coreml_weights=mode
    )

    def size(folder):
        return sum(f.stat().st_size for f in (folder / "coreml-fp16" / "model.mlpackage").rglob("*") if f.is_file())

    assert op in compressed_ops(small_dir / "coreml-fp16" / "model.mlpackage")
    assert compressed_ops(float_dir / "coreml-fp16" / "model.mlpackage") == []
    assert size(small_dir) < 0.75 * size(float_dir)
    manifest = json.loads((small_dir / "coreml-fp16" / "manifest.json").read_text())
    assert manifest["weights"] == mode


def test_openvino_int8_float_parts_in_bf16(int8_exports, tmp_path):
    """``int8+bf16``: OpenVINO's INT8 kernels with the graph's float parts in bf16; the runner
    says what the CPU really ran (bf16 where it has it, f32 otherwise) and the picture stays
    within the INT8 tolerance of the f32 float parts. Run through ``baryir restore`` in its own
    processes: with bf16 kernels compiled in the test process, a later test's in-process SIGTERM
    crashed it (exit 139, in the signal delivery; not reproduced outside pytest)."""
    from PIL import Image

    from baryir.cpu import bf16_native
    from baryir.data.photos import to_uint8
    from baryir.runtimes import load_runner
    from baryir.runtimes.environment import onednn_hides_bf16

    _, folder, _ = int8_exports
    photo = tmp_path / "photo.png"
    Image.fromarray(to_uint8(validation_image(72, 96)[0])).save(photo)
    outputs, labels = {}, {}
    for precision in ("int8", "int8+bf16"):
        out = tmp_path / precision
        cmd = [sys.executable, "-m", "baryir.cli", "restore", str(photo), "-o", str(out), "--no-progress"]
        done = subprocess.run(
            cmd + ["--model", str(folder / "openvino-int8"), "--precision", precision], capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr[-2000:]
        labels[precision] = re.search(r"at (\S+) \(", done.stderr).group(1)
        outputs[precision] = np.asarray(Image.open(out / "photo.png"), dtype=np.float64) / 255
    assert labels["int8"] == "int8+fp32"
    assert labels["int8+bf16"] == ("int8+bf16" if bf16_native() and not onednn_hides_bf16() else "int8+fp32")
    agreement = _psnr(outputs["int8+bf16"], outputs["int8"])
    if labels["int8+bf16"] == "int8+fp32":  # no bf16 here: the same kernels, the same picture
        assert agreement == float("inf")
    else:
        assert agreement >= 35
    with pytest.raises(ValueError, match="exported as int8"):
        load_runner(folder / "openvino-int8", precision="fp32")


def test_nncf_placement_options_are_recorded_and_change_the_placement(float_path, ptq, tmp_path):
    """``--model-type transformer`` leaves more in float (NNCF: no quantizer after GELU or on the
    inputs of adds and multiplications); the scheme records it and the checkpoint reloads with it."""
    path, photos = ptq
    opts = ptq_options(float_path, photos, tmp_path, model_type="transformer")
    with pytest.raises(ValueError, match="model type must be one of"):
        Int8Scheme(model_type="cnn")
    default_names = {n for n, _ in quantizers(load_quantized(path))}
    assert [n for n in default_names if re.search(r"ffn/gelu/\d+__", n)]
    quantized = load_quantized(run_quantize(opts))
    names = {n for n, _ in quantizers(quantized)}
    assert read_header(tmp_path / "model-int8.safetensors")["int8_scheme"]["model_type"] == "transformer"
    assert not [n for n in names if re.search(r"ffn/gelu/\d+__", n)]
    assert len(names) < len(default_names)


def test_int8_models_carry_no_readout_and_say_so(float_path, ptq, int8_exports, tmp_path):
    """Quantizing a model with a readout gives an INT8 checkpoint without one (INT8 rounding moves
    its probabilities); a readout stored in an INT8 file by an earlier version is not used; the
    INT8 artifacts have no degradation output, and analyze names the fix."""
    from baryir.analysis import fit_readout, latent_features
    from baryir.checkpoints import (
        FORMAT_KEY,
        QUANTIZED_KIND,
        load_model,
        read_safetensors,
        save_tensors,
        with_readout,
    )
    from baryir.formats import INT8_HAS_NO_READOUT
    from baryir.model.readout import pooled_statistics, weights_digest
    from baryir.runtimes import load_runner

    path, photos = ptq  # quantized from a float file that carries a readout
    assert load_model(read_header(path)["source"]).readout is not None
    assert "readout" not in read_header(path)
    # the weights it came from, whatever else their file holds (the readout added there)
    assert read_header(path)["source_weights"] == weights_digest(load_model(float_path).state_dict())
    assert json.loads((path.parent / "quantize.json").read_text())["readout"] == INT8_HAS_NO_READOUT
    model = load_quantized(path)
    assert model.readout is None and INT8_HAS_NO_READOUT in model.readout_refused
    # an INT8 file that stores a readout (as the afternoon's refit wrote them) loads without it
    stored = load_quantized(path)
    stored.readout = fit_readout(stored, [str(photos)], per_task=2, size=48, progress=False)
    file_meta = {k: v for k, v in read_safetensors(path)[1].items() if k != FORMAT_KEY}
    tensors, meta = with_readout(stored, stored.state_dict(), file_meta, path)
    assert any(k.startswith("readout.") for k in tensors)
    old = save_tensors(tensors, tmp_path / "old-int8.safetensors", QUANTIZED_KIND, meta)
    assert load_quantized(old).readout is None
    x = torch.rand(1, 3, 48, 64)
    with torch.no_grad():
        # readout features are read through forward, where NNCF's quantizers run (a fit on a
        # quantized model sees the features its quantizers make, not a direct encoder call's)
        through_forward = latent_features(model)(x[0])["enc2"]
        direct = pooled_statistics(model.latents(x, ("enc2",))["enc2"])[0]
        assert not torch.allclose(through_forward, direct)
    _, folder, results = int8_exports
    assert all("degradation_max_abs" not in v for r in results for v in r["validation"])
    assert not (folder / "onnx-int8" / "analyze.onnx").exists()
    image = (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)
    for fmt in ("onnx", "openvino"):
        with load_runner(folder / f"{fmt}-int8") as runner:
            with pytest.raises(ValueError, match="INT8 models carry no degradation readout"):
                runner.analyze(image)
    with pytest.raises(ValueError, match="INT8 models carry no degradation readout"):
        model.fitted_readout()
