"""BaryNet against the published code's facts, its modes, configs and export-friendliness."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import official_golden_weights

from baryir import build_model
from baryir.model import CONFIGS, UNUSED_PUBLISHED_PREFIXES, BaryNet, get_config
from baryir.model.complexity import count_gmacs, count_parameters


def test_paper_state_dict_matches_published_names_and_shapes(fixtures):
    published = {k: tuple(s) for k, s in json.loads((fixtures / "barynet_state_dict.json").read_text())["keys"]}
    ours = {k: tuple(v.shape) for k, v in BaryNet(get_config("paper")).state_dict().items()}
    used = {k: s for k, s in published.items() if not k.startswith(UNUSED_PUBLISHED_PREFIXES)}
    assert len(published) - len(used) == 6
    assert ours == used


def test_paper_forward_reproduces_published_golden(fixtures):
    state = official_golden_weights()
    model = BaryNet(get_config("paper"))
    model.load_state_dict({k: v for k, v in state.items() if not k.startswith(UNUSED_PUBLISHED_PREFIXES)})
    golden = np.load(fixtures / "barynet_golden.npz")
    x = torch.rand(1, 3, 32, 48, generator=torch.Generator().manual_seed(1234))
    np.testing.assert_array_equal(x.numpy(), golden["input"])
    with torch.no_grad():
        outputs = model.eval()(x, return_latents=True)
    for name, out in zip(("restored", "source_latent", "bary_latent", "residual"), outputs):
        np.testing.assert_allclose(out.numpy(), golden[name], atol=1e-4, rtol=0, err_msg=name)


def test_modes_training_returns_latents_deployment_returns_image(nano_model):
    x = torch.rand(2, 3, 32, 40)
    assert isinstance(nano_model.eval()(x), torch.Tensor)
    restored, source, bary, residual = nano_model.train()(x)
    assert restored.shape == x.shape
    assert source.shape == bary.shape == (2, 64, 4, 5)
    torch.testing.assert_close(residual, source - bary)
    assert isinstance(nano_model(x, return_latents=False), torch.Tensor)


@pytest.mark.parametrize("name, max_params, max_gmacs", [("mobile", 2.0e6, 10.0), ("nano", 0.5e6, None)])
def test_edge_config_budgets(name, max_params, max_gmacs):
    model = build_model(name)
    assert count_parameters(model) <= max_params
    if max_gmacs is not None:
        assert count_gmacs(model, 256, 256) <= max_gmacs


@pytest.mark.slow
def test_paper_gmacs_match_the_published_measurement():
    # official README: 212.8 GMACs at 256x256 for the paper model
    assert count_gmacs(build_model("paper"), 256, 256) == pytest.approx(212.8, abs=0.1)


def test_config_overrides_and_validation():
    cfg = get_config("mobile", dim=24, norm_type="BiasFree")
    assert cfg.dim == 24 and cfg.num_blocks == CONFIGS["mobile"].num_blocks
    model = build_model(cfg)
    assert "encoder_level1.0.norm1.body.bias" not in model.state_dict()
    with pytest.raises(ValueError, match="unknown config"):
        get_config("huge")
    with pytest.raises(ValueError, match="norm_type"):
        get_config("nano", norm_type="Batch")
    with pytest.raises(ValueError, match="3 heads do not divide its 16 channels"):
        build_model("mobile", heads=(3, 2, 4, 8))


def test_per_level_widths_build_infer_and_round_trip():
    from baryir.checkpoints import infer_config
    from baryir.model import BaryConfig

    cfg = get_config("mobile", widths=(16, 32, 64, 96), num_blocks=(2, 3, 4, 1))
    model = build_model(cfg)
    state = model.state_dict()
    assert state["latent.0.attn.project_out.weight"].shape[0] == 96
    assert state["decoder_level1.0.attn.project_out.weight"].shape[0] == 32  # 2 x widths[0]
    assert infer_config(state) == cfg
    assert BaryConfig.from_dict(cfg.to_dict()) == cfg
    x = torch.rand(1, 3, 40, 56)
    assert model.eval()(x).shape == x.shape
    # the published doubling has one spelling, so files of the published topology stay as they were
    doubling = get_config("mobile", widths=(16, 32, 64, 128))
    assert doubling == get_config("mobile") and "widths" not in doubling.to_dict()
    assert {k: v.shape for k, v in build_model(doubling).state_dict().items()} == {
        k: v.shape for k, v in build_model("mobile").state_dict().items()
    }
    with pytest.raises(ValueError, match="widths\\[0\\] must equal dim"):
        get_config("mobile", widths=(24, 32, 64, 96), dim=16)
    with pytest.raises(ValueError, match="multiples of 4"):
        get_config("mobile", widths=(16, 30, 64, 96))
    with pytest.raises(ValueError, match="level 4: 8 heads do not divide its 100 channels"):
        get_config("mobile", widths=(16, 32, 64, 100))


def test_config_that_disagrees_with_the_widths_is_refused():
    from baryir.checkpoints import model_from_state_dict

    state = build_model(get_config("nano", widths=(8, 16, 32, 48))).state_dict()
    with pytest.raises(ValueError, match="widths=None but the tensors say \\(8, 16, 32, 48\\)"):
        model_from_state_dict(state, get_config("nano"))


@pytest.mark.slow
def test_deployment_graph_exports_once_for_many_sizes():
    """One torch.export with symbolic H and W (multiples of 8) reproduces eager at two sizes:
    any Python int taken from a shape or data-dependent branch would fail here."""
    torch.manual_seed(0)
    model = build_model("mobile").eval()
    h, w = torch.export.Dim("h", min=2, max=256), torch.export.Dim("w", min=2, max=256)
    example = torch.rand(1, 3, 64, 64)
    program = torch.export.export(
        model,
        (example,),
        kwargs={"return_latents": False},
        dynamic_shapes={"x": {2: 8 * h, 3: 8 * w}, "return_latents": None},
    )
    exported = program.module()
    for size in ((48, 80), (96, 64)):
        x = torch.rand(1, 3, *size)
        with torch.no_grad():
            torch.testing.assert_close(exported(x, return_latents=False), model(x), atol=1e-5, rtol=1e-5)


def test_half_precision_reductions_do_not_overflow():
    """MDTA's L2 norm over H x W runs in float32: a 2048x2048 map of large values stays finite
    in float16 (a float16 sum of squares would overflow at 65504)."""
    from baryir.model.blocks import l2_normalize_hw_fp32

    x = torch.full((1, 1, 2, 2048, 2048), 8.0, dtype=torch.float16)
    y = l2_normalize_hw_fp32(x)
    assert y.dtype == torch.float16 and torch.isfinite(y).all()
    torch.testing.assert_close(y.float().pow(2).sum((-2, -1)), torch.ones(1, 1, 2), atol=1e-2, rtol=0)
    naive = x / x.pow(2).sum((-2, -1), keepdim=True).sqrt()
    assert not torch.isfinite(naive).all() or naive.abs().max() == 0


def test_hw_l2_norm_stays_accurate_in_onnx_runtime_at_2048():
    """ONNX Runtime's CPU ReduceL2 over one flattened 2048x2048 axis keeps a single running
    float32 sum (relative error ~2e-3); the model's two-stage sum (W, then H) must stay near
    float64 in the exported graph."""
    import io

    ort = pytest.importorskip("onnxruntime")
    from baryir.model.blocks import l2_normalize_hw_fp32

    class Normalize(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return l2_normalize_hw_fp32(x)

    x = torch.randn(1, 1, 2, 2048, 2048, generator=torch.Generator().manual_seed(0)) * 0.3 + 0.2
    buf = io.BytesIO()
    torch.onnx.export(Normalize(), (x,), buf, dynamo=False, input_names=["x"])
    session = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    ours = session.run(None, {"x": x.numpy()})[0]
    ref = x.double() / x.double().square().sum((-2, -1), keepdim=True).sqrt()
    rel = np.abs(ours - ref.numpy()).max() / ref.abs().max().item()
    assert rel < 1e-5, rel  # measured 2.2e-7; a single ReduceL2 gives 1.9e-3
