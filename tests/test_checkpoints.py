"""safetensors checkpoints, config inference, and the safe reading of published checkpoints."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch

from baryir import build_model, load_model, save_model
from baryir.checkpoints import atomic_write, infer_config, potentials_from_state_dict, read_official
from baryir.cli import main
from baryir.model import CONFIGS
from baryir.safe_unpickle import UnsafeCheckpointError


def test_safetensors_round_trip_keeps_config_and_output(tmp_path, nano_model):
    path = save_model(nano_model, tmp_path / "m.safetensors", {"step": 3})
    loaded = load_model(path)
    assert loaded.config == nano_model.config and not loaded.training
    x = torch.rand(1, 3, 24, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), nano_model(x), atol=0, rtol=0)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_config_is_inferred_from_state_dict_shapes(name):
    config = CONFIGS[name]
    shapes = {k: torch.empty(v.shape) for k, v in build_model(name).state_dict().items()}
    inferred = infer_config(shapes)
    assert inferred == config  # the name field does not take part in equality


def test_plain_state_dict_pth_loads_with_inferred_config(tmp_path, nano_model):
    path = tmp_path / "plain.pth"
    torch.save({f"module.{k}": v for k, v in nano_model.state_dict().items()}, path)
    loaded = load_model(path)
    assert loaded.config == nano_model.config


def test_published_checkpoint_converts_without_its_code(tmp_path, fixtures):
    out, pots = tmp_path / "paper.safetensors", tmp_path / "pots.safetensors"
    assert (
        main(
            [
                "convert-official",
                str(fixtures / "barynet_official_format.pth"),
                "-o",
                str(out),
                "--potentials",
                str(pots),
            ]
        )
        == 0
    )
    model = load_model(out)
    assert model.config == CONFIGS["paper"]
    # every parameter is the broadcast constant described in the official README
    import hashlib

    def expected(name: str) -> float:
        return (int(hashlib.sha256(name.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF - 0.5) / 10

    for name, p in model.named_parameters():
        assert torch.all(p == torch.tensor(expected(name), dtype=p.dtype)), name
    model_state, pots_state, extra = read_official(fixtures / "barynet_official_format.pth")
    assert extra == {"epoch": 61} and len(model_state) == 766
    potentials = potentials_from_state_dict(pots_state)
    assert len(potentials.potentials) == 3
    # published potentials work at their patch size (latent 16x16) and, pooled, at others
    assert potentials(torch.rand(2, 384, 16, 16)).shape == (2, 3)
    assert potentials(torch.rand(2, 384, 8, 12)).shape == (2, 3)


class _Exploit:
    def __reduce__(self):
        return (os.system, (f"touch {_Exploit.marker}",))


def test_malicious_pickle_is_refused_and_nothing_runs(tmp_path):
    _Exploit.marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"epoch": 1, "BaryIR": _Exploit(), "Pots": None}, path)
    with pytest.raises(UnsafeCheckpointError, match="posix.system|os.system"):
        read_official(path)
    assert not _Exploit.marker.exists()
    # the CLI names the problem instead of crashing
    assert main(["convert-official", str(path), "-o", str(tmp_path / "x.safetensors")]) == 2
    assert not _Exploit.marker.exists() and not (tmp_path / "x.safetensors").exists()


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "model.safetensors"

    def failing(tmp: str) -> None:
        Path(tmp).write_bytes(b"partial")
        raise OSError("disk full")

    with pytest.raises(OSError):
        atomic_write(target, failing)
    assert list(tmp_path.iterdir()) == []


def test_every_shipped_model_loads_by_name_with_its_int8_version():
    """The previous defaults stay loadable by name, each with its INT8 model, and the shipped INT8
    `default` was quantized from the weights of the shipped `default` (their recorded digest), so new
    float weights cannot ship with an INT8 model made from the old ones."""
    from baryir.checkpoints import shipped_models
    from baryir.model.readout import weights_digest
    from baryir.quantize.checkpoint import read_header, resolve_quantized

    names = set(shipped_models())
    assert {"default", "default-v1", "default-v2", "default-v3", "default-v4"} <= names
    for name in names:
        assert load_model(name).config.name == "mobile"
        assert resolve_quantized(name).is_file()
    assert read_header("default")["source_weights"] == weights_digest(load_model("default").state_dict())


def test_unknown_model_name_lists_shipped_names():
    with pytest.raises(FileNotFoundError, match="shipped"):
        load_model("no-such-model")


def test_pickle_protocol_module_is_not_used_for_native_files(tmp_path, nano_model):
    path = save_model(nano_model, tmp_path / "m.safetensors")
    assert b"\x80" != path.read_bytes()[:1]  # safetensors header, not a pickle
    with pytest.raises(pickle.UnpicklingError):
        pickle.loads(path.read_bytes())
