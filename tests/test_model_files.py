"""Hostile and broken model files: nothing runs, nothing is built before the shapes are
checked, and every refusal is one line that names the file."""

from __future__ import annotations

import dataclasses
import io
import json
import pickle
import resource
import struct
import sys
import time
import types
import zipfile
from collections import OrderedDict

import pytest
import torch
from safetensors.torch import save_file

from baryir import build_model, load_model, save_model
from baryir.checkpoints import ModelFileError, read_official
from baryir.cli import main
from baryir.safe_unpickle import UnsafeCheckpointError


def _one_line_error(capsys, name: str) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and name in lines[0], err
    return lines[0]


# ------------------------------------------------------------------ code execution
class _Writes(torch.nn.Module):
    """A TorchScript module whose __setstate__ creates a file (torch.from_file with shared=True)."""

    def __init__(self, marker: str) -> None:
        super().__init__()
        self.marker = marker
        self.buf = torch.zeros(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    @torch.jit.export
    def __getstate__(self) -> tuple[str, bool]:
        return self.marker, self.training

    @torch.jit.export
    def __setstate__(self, state: tuple[str, bool]) -> None:
        self.marker = state[0]
        self.training = state[1]
        self.buf = torch.from_file(state[0], True, 16)  # shared=True creates the file on load


def test_torchscript_archive_is_refused_before_any_code_runs(tmp_path, capsys):
    marker = tmp_path / "pwned"
    path = tmp_path / "model.pth"
    torch.jit.script(_Writes(str(marker))).save(str(path))
    # the same kind of archive is a real attack: torch.jit.load runs its __setstate__
    victim, proof = tmp_path / "proof", tmp_path / "proof.pth"
    torch.jit.script(_Writes(str(victim))).save(str(proof))
    assert not victim.exists()
    torch.jit.load(str(proof))
    assert victim.exists()

    with pytest.raises(ModelFileError, match="model.pth.*holds code"):
        load_model(path)
    for command in (["info", str(path)], ["convert-official", str(path), "-o", str(tmp_path / "c.safetensors")]):
        assert main(command) == 2
        _one_line_error(capsys, "model.pth")
    assert not marker.exists()


def _archive(path, payload: bytes, storages: dict[str, bytes], extra: dict[str, bytes] | None = None) -> None:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", payload)
        z.writestr("archive/byteorder", "little")
        for key, data in storages.items():
            z.writestr(f"archive/data/{key}", data)
        for name, data in (extra or {}).items():
            z.writestr(name, data)


class _Storage:
    def __init__(self, numel: int) -> None:
        self.numel = numel


class _Tensor:
    def __init__(self, storage: _Storage, offset, size, stride) -> None:
        self.args = (storage, offset, size, stride, False, OrderedDict())

    def __reduce__(self):
        return torch._utils._rebuild_tensor_v2, self.args


class _Pickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, _Storage):
            return ("storage", torch.FloatStorage, "0", "cpu", obj.numel)
        return None


def _pickled(obj) -> bytes:
    buf = io.BytesIO()
    _Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("claimed", "offset", "size", "stride", "match"),
    [
        (4, 0, (10**12,), (1,), "reaches element"),  # huge size over a 4-element storage
        (4, 0, (4,), (-1,), "negative"),  # negative stride reads before the storage
        (4, 2**70, (1,), (1,), "reaches element"),  # offset overflow
        (10**9, 0, (4,), (1,), "claims 1000000000 elements"),  # numel larger than the bytes stored
    ],
)
def test_hostile_tensor_arguments_are_refused(tmp_path, claimed, offset, size, stride, match):
    path = tmp_path / "evil.pth"
    _archive(
        path, _pickled({"w": _Tensor(_Storage(claimed), offset, size, stride)}), {"0": struct.pack("<4f", *range(4))}
    )
    with pytest.raises(UnsafeCheckpointError, match=match):
        read_official(path)


def test_zip_with_code_or_legacy_format_is_refused(tmp_path, nano_model):
    state = _pickled({"w": _Tensor(_Storage(4), 0, (4,), (1,))})
    path = tmp_path / "code.pth"
    _archive(path, state, {"0": bytes(16)}, {"archive/code/__torch__/m.py": b"import os"})
    with pytest.raises(UnsafeCheckpointError, match="holds code"):
        read_official(path)
    legacy = tmp_path / "legacy.pth"
    legacy.write_bytes(pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2))
    with pytest.raises(UnsafeCheckpointError, match="legacy"):
        read_official(legacy)
    good = tmp_path / "good.pth"
    _archive(good, state, {"0": struct.pack("<4f", 1, 2, 3, 4)})
    model, _, _ = read_official(good)
    assert model["w"].tolist() == [1, 2, 3, 4]


def test_a_module_that_contains_itself_is_refused(tmp_path, monkeypatch):
    fake = types.ModuleType("model_bary")

    class BaryNet:
        pass

    BaryNet.__module__, BaryNet.__qualname__ = "model_bary", "BaryNet"
    fake.BaryNet = BaryNet
    monkeypatch.setitem(sys.modules, "model_bary", fake)
    loop = BaryNet()
    loop.__dict__ = {"_parameters": OrderedDict(), "_modules": OrderedDict(child=loop)}
    path = tmp_path / "loop.pth"
    _archive(path, _pickled({"epoch": 1, "BaryIR": loop, "Pots": None}), {})
    with pytest.raises(UnsafeCheckpointError, match="contains itself"):
        read_official(path)


# ------------------------------------------------------------------ broken files, one line each
def _safetensors_with_config(tmp_path, name: str, config: object) -> str:
    tensors = {k: v.contiguous() for k, v in build_model("nano").state_dict().items()}
    path = tmp_path / name
    save_file(tensors, str(path), metadata={"baryir.config": config if isinstance(config, str) else json.dumps(config)})
    return str(path)


def test_huge_config_claims_fail_in_milliseconds(tmp_path):
    nano = build_model("nano").config.to_dict()
    for claim in ({"dim": 4096}, {"num_refinement_blocks": 10**7}):
        path = _safetensors_with_config(tmp_path, "huge.safetensors", {**nano, **claim})
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        start = time.perf_counter()
        with pytest.raises(ModelFileError, match="huge.safetensors: config does not match the weights"):
            load_model(path)
        assert time.perf_counter() - start < 2.0
        assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200_000  # KiB


@pytest.mark.parametrize(
    ("config", "match"),
    [
        ({"heads": [0, 1, 2, 4]}, "heads must be >= 1"),
        ({"dim": -8}, "dim must be an integer"),
        ({"dim": "8"}, "dim must be an integer"),
        ({"volume": 11}, "unknown BaryConfig keys"),
        ("{not json", "not valid JSON"),
    ],
)
def test_bad_config_values_name_the_file(tmp_path, capsys, config, match):
    nano = build_model("nano").config.to_dict()
    path = _safetensors_with_config(
        tmp_path, "cfg.safetensors", {**nano, **config} if isinstance(config, dict) else config
    )
    with pytest.raises(ModelFileError, match=f"cfg.safetensors: .*{match}"):
        load_model(path)
    assert main(["info", path]) == 2
    _one_line_error(capsys, "cfg.safetensors")


def test_broken_safetensors_and_state_dicts_are_one_line(tmp_path, capsys, nano_model):
    good = save_model(nano_model, tmp_path / "good.safetensors").read_bytes()
    header = struct.unpack("<Q", good[:8])[0]
    cases = {
        "truncated.safetensors": good[: len(good) // 2],
        "garbage.safetensors": b"\x13" * 64,
        "huge-header.safetensors": struct.pack("<Q", 2**40) + b"{}",
    }
    meta = json.loads(good[8 : 8 + header])
    first, second = [k for k in meta if k != "__metadata__"][:2]
    meta[second]["data_offsets"] = meta[first]["data_offsets"]  # two tensors over the same bytes
    text = json.dumps(meta).encode()
    cases["overlap.safetensors"] = struct.pack("<Q", len(text)) + text + good[8 + header :]
    state = nano_model.state_dict()
    missing = {k: v for k, v in state.items() if k != "patch_embed.proj.weight"}
    extra = {**state, "surprise.weight": torch.zeros(2)}
    wrong = {**state, "output.weight": torch.zeros(3, 5, 3, 3)}
    for name, tensors in (("missing.pth", missing), ("extra.pth", extra), ("wrong.pth", wrong)):
        buf = io.BytesIO()
        torch.save(tensors, buf)
        cases[name] = buf.getvalue()
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
    (tmp_path / "folder.safetensors").mkdir()
    for name in [*cases, "folder.safetensors"]:
        assert main(["info", str(tmp_path / name)]) == 2, name
        line = _one_line_error(capsys, name)
        if name == "missing.pth":
            assert "patch_embed.proj.weight" in line
        if name == "wrong.pth":
            assert "output.weight" in line


# ------------------------------------------------------------------ inputs are never replaced
def test_convert_official_refuses_to_replace_its_input(tmp_path, fixtures, capsys):
    path = tmp_path / "c.pth"
    path.write_bytes((fixtures / "barynet_official_format.pth").read_bytes())
    before = path.read_bytes()
    assert main(["convert-official", str(path), "-o", str(path)]) == 2
    assert "would overwrite the input" in _one_line_error(capsys, "c.pth")
    assert path.read_bytes() == before


def test_training_refuses_to_overwrite_its_init_weights(tmp_path, nano_model, photo_dir, capsys):
    run = tmp_path / "run"
    init = save_model(nano_model, run / "model.safetensors")
    before = init.read_bytes()
    code = main(["train", "--data", str(photo_dir), "--init", str(init), "-o", str(run), "--steps", "1"])
    assert code == 2
    assert "would overwrite the input" in _one_line_error(capsys, "model.safetensors")
    assert init.read_bytes() == before


# ------------------------------------------------------------------ options
def test_bad_options_are_one_line(capsys, tmp_path):
    assert main(["eval", "--device", "banana", "--clean", str(tmp_path)]) == 2
    _one_line_error(capsys, "--device")
    if not torch.cuda.is_available():
        assert main(["eval", "--device", "cuda", "--clean", str(tmp_path)]) == 2
        assert "no CUDA GPU" in _one_line_error(capsys, "--device cuda")
    for argv in (
        ["info", "nano", "--size", "0x0"],
        ["bench", "--size", "7x7"],
        ["restore", "x", "-o", "y", "--memory-mb", "-1"],
    ):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err and "error: argument" in err


def test_an_os_error_names_its_file_in_the_one_line_error(tmp_path, capsys):
    """OSErrors read "error: FILE: reason" (Python's own text hides the name behind [Errno 36])."""
    too_long = tmp_path / ("x" * 300) / "demo"  # over NAME_MAX (255) on every common file system
    assert main(["demo", "-o", str(too_long)]) == 2
    line = _one_line_error(capsys, "x" * 300)
    assert line.startswith(f"error: {too_long}") and line.endswith(": File name too long"), line
    blocker = tmp_path / "file"  # a file where the output folder should be: refused before any work
    blocker.write_text("not a folder")
    assert main(["demo", "-o", str(blocker / "demo")]) == 2
    assert _one_line_error(capsys, str(blocker)).endswith(f"its parent {blocker} is a file; choose another --out")


# ------------------------------------------------------------------ round three (hostile classes)
class _Built:
    """Pickles as ``obj`` followed by BUILD with ``state`` (what ``__setstate__`` attacks use)."""

    def __init__(self, obj, state) -> None:
        self.obj, self.state = obj, state

    def __reduce__(self):
        return _identity, (self.obj,), self.state


def _identity(x):
    return x


class _BuildPickler(_Pickler):
    def reducer_override(self, obj):
        if isinstance(obj, _Built):  # BUILD on a real allowlisted object, not on a stand-in
            return _rebuild_with(obj)
        return NotImplemented


def _rebuild_with(built: _Built):
    if isinstance(built.obj, _Tensor):
        return torch._utils._rebuild_tensor_v2, built.obj.args, built.state
    return OrderedDict, (), built.state


def test_build_never_sets_a_tensor_or_a_shared_object(tmp_path):
    # Tensor.__setstate__ would grow an empty storage to any size, filled with process memory
    grow = _Built(_Tensor(_Storage(4), 0, (4,), (1,)), (0, torch.Size([10**6]), (1,), False))
    path = tmp_path / "heap.pth"
    buf = io.BytesIO()
    _BuildPickler(buf, protocol=2).dump({"w": grow})
    _archive(path, buf.getvalue(), {"0": struct.pack("<4f", *range(4))})
    with pytest.raises(UnsafeCheckpointError, match="sets the state of a Tensor"):
        read_official(path)
    # a state dict's _metadata is the one BUILD a plain container takes; anything else is refused
    odd = tmp_path / "odd.pth"
    buf = io.BytesIO()
    _BuildPickler(buf, protocol=2).dump(_Built({}, {"dtype": "float64"}))
    _archive(odd, buf.getvalue(), {})
    with pytest.raises(UnsafeCheckpointError, match="sets the state of a OrderedDict"):
        read_official(odd)
    # and a good file still loads the same afterwards in this process
    good = tmp_path / "good.pth"
    _archive(good, _pickled({"w": _Tensor(_Storage(4), 0, (4,), (1,))}), {"0": struct.pack("<4f", 1, 2, 3, 4)})
    assert read_official(good)[0]["w"].tolist() == [1, 2, 3, 4]


def test_two_tensors_for_one_name_are_refused_naming_both(tmp_path, nano_model, capsys):
    state = nano_model.state_dict()
    both = {**{f"module.{k}": v for k, v in state.items()}, "output.weight": torch.zeros_like(state["output.weight"])}
    path = tmp_path / "both.pth"
    torch.save(both, path)
    assert main(["info", str(path)]) == 2
    line = _one_line_error(capsys, "both.pth")
    assert "'module.output.weight'" in line and "'output.weight'" in line


def test_a_foreign_checkpoints_entries_never_replace_our_metadata(tmp_path, nano_model):
    from baryir.checkpoints import FORMAT_KEY, read_safetensors

    path = tmp_path / "foreign.pth"
    torch.save({"BaryIR": nano_model.state_dict(), "Pots": None, "format": "potentials", "source": "x"}, path)
    assert main(["convert-official", str(path), "-o", str(tmp_path / "out.safetensors")]) == 0
    _, meta = read_safetensors(tmp_path / "out.safetensors")
    assert meta[FORMAT_KEY] == "model" and meta["baryir.source"] == "foreign.pth"
    assert json.loads(meta["baryir.checkpoint"]) == {"format": "potentials", "source": "x"}
    assert load_model(tmp_path / "out.safetensors").config == nano_model.config


def test_tiny_files_claiming_huge_models_fail_fast_without_memory(tmp_path, capsys):
    # stride-0 views: a few bytes claim a dim-1024 model (~100 G parameters)
    big = build_model("nano")
    with torch.device("meta"):
        meta_big = type(big)(dataclasses.replace(big.config, dim=1024))
    claimed = {k: torch.zeros(1).expand(v.shape) for k, v in meta_big.state_dict().items()}
    path = tmp_path / "stride0.pth"
    torch.save(claimed, path)
    assert path.stat().st_size < 2_000_000
    # zero-element tensors whose shapes claim a wide model
    empty = {k: torch.zeros(0, *v.shape[1:]) for k, v in meta_big.state_dict().items() if v.dim() > 1}
    empty_path = tmp_path / "empty.safetensors"
    save_file(empty, str(empty_path))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for p in (path, empty_path):
        start = time.perf_counter()
        assert main(["info", str(p)]) == 2
        assert time.perf_counter() - start < 5
        _one_line_error(capsys, p.name)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 500_000  # KiB: < 0.5 GB more


def test_self_referencing_structures_make_short_messages(tmp_path):
    nested = [1] * 200
    for _ in range(8):
        nested = [nested] * 200  # 200**8 leaves, a few KB pickled
    path = tmp_path / "laughs.pth"
    _archive(path, _pickled({"w": _Tensor(_Storage(4), nested, (4,), (1,))}), {"0": bytes(16)})
    assert path.stat().st_size < 100_000
    with pytest.raises(UnsafeCheckpointError) as err:
        read_official(path)
    assert len(str(err.value)) < 1000


def test_overlapping_zip_members_are_refused(tmp_path):
    good = tmp_path / "good.pth"
    _archive(good, _pickled({"w": _Tensor(_Storage(4), 0, (4,), (1,))}), {"0": struct.pack("<4f", 1, 2, 3, 4)})
    data = bytearray(good.read_bytes())
    # point the central directory entry of data/0 at the local header of data.pkl
    with zipfile.ZipFile(good) as z:
        pkl, storage = z.getinfo("archive/data.pkl"), z.getinfo("archive/data/0")
    central = data.rfind(b"PK\x01\x02" + data[data.find(b"PK\x01\x02") + 4 : data.find(b"PK\x01\x02") + 4])
    entry = data.find(b"archive/data/0", central) - 46
    struct.pack_into("<I", data, entry + 42, pkl.header_offset)
    assert storage.header_offset != pkl.header_offset
    bad = tmp_path / "overlap.pth"
    bad.write_bytes(bytes(data))
    with pytest.raises(UnsafeCheckpointError, match="overlap"):
        read_official(bad)
