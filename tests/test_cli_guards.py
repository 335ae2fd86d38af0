"""No option makes a command write over what it reads, and options that mean nothing are refused
by name (every case here fails before any real work)."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image

from baryir import build_model, save_model
from baryir.cli import main


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("guard")
    torch.manual_seed(0)
    model = save_model(build_model("nano"), root / "m.safetensors")
    photos = root / "photos"
    photos.mkdir()
    for name in ("a", "b"):
        Image.fromarray(np.full((16, 16, 3), 90, np.uint8)).save(photos / f"{name}.png")
    art = root / "art"
    art.mkdir()
    (art / "manifest.json").write_text('{"format": "onnx"}')
    return root, model, photos, art


def _unchanged(paths, run):
    before = {p: p.read_bytes() for p in paths}
    assert run() == 2
    assert all(p.read_bytes() == data for p, data in before.items())


def test_json_and_plot_never_replace_an_input(files, tmp_path, capsys):
    root, model, photos, art = files
    link, png_link = tmp_path / "hard.json", tmp_path / "hard.png"
    os.link(model, link)
    os.link(model, png_link)
    cases = [
        ["export", "--model", str(model), "--format", "onnx", "-o", str(tmp_path / "x"), "--json", str(model)],
        ["eval", "--model", str(model), "--clean", str(photos), "--json", str(photos / "a.png")],
        ["verify", str(art), "--json", str(art / "manifest.json")],
        ["bench", "--model", str(model), "--json", str(model)],
        ["bench", "--model", str(model), "--plot", str(png_link)],  # a hard link of the model named .png
        ["parity", "--model", str(model), "--clean", str(photos), "--json", str(photos / "b.png")],
        ["bench", "--model", str(model), "--json", str(link)],  # a hard link of the model
    ]
    for argv in cases:
        _unchanged([model, photos / "a.png", photos / "b.png", art / "manifest.json"], lambda a=argv: main(a))
        err = capsys.readouterr().err
        assert "would overwrite" in err and "Traceback" not in err, argv


def test_a_suffix_is_a_name_not_a_path(files, tmp_path):
    _, model, photos, _ = files
    for suffix in ("/../../x", "..", "a\\b"):
        with pytest.raises(SystemExit) as exit_:
            main(
                ["restore", str(photos / "a.png"), "-o", str(tmp_path / "o"), "--suffix", suffix, "--model", str(model)]
            )
        assert exit_.value.code == 2
    assert not (tmp_path / "o").exists()


def test_options_that_mean_nothing_are_refused_by_name(files, tmp_path, capsys):
    _, model, photos, _ = files
    for option in ("--format", "--precision"):
        argv = ["export", "--model", str(model), "-o", str(tmp_path / "e"), option, ""]
        assert main(argv) == 2
        assert f"{option} names no" in capsys.readouterr().err
    for argv in (
        ["restore", str(photos / "a.png"), "-o", str(tmp_path / "r"), "--memory-mb", "nan"],
        ["info", str(model), "--size", "7x7"],
    ):
        with pytest.raises(SystemExit):
            main(argv)
        err = capsys.readouterr().err
        assert ("--memory-mb" in err or "--size" in err) and "Traceback" not in err
    cwd = os.getcwd()
    os.chdir(photos)  # "" must not mean "the current folder"
    try:
        assert main(["restore", "", "-o", str(tmp_path / "cur"), "--model", str(model), "--no-progress"]) == 2
    finally:
        os.chdir(cwd)
    assert "empty input name" in capsys.readouterr().err and not (tmp_path / "cur").exists()


def test_an_output_of_the_wrong_kind_is_refused_before_any_work(files, tmp_path, capsys):
    """A report path that is a folder, an output folder that is a file, or a path under a file
    fails at once with the option named: no image is read, nothing is created."""
    _, model, photos, _ = files
    a = str(photos / "a.png")
    cases = {
        "is a folder; --json takes a file path": ["analyze", a, "--model", str(model), "--json", str(photos)],
        "is a file; --out takes a folder": ["restore", a, "--model", str(model), "-o", a],
        "is a file; --cache takes a folder": ["eval", "--model", str(model), "--clean", str(photos), "--cache", a],
        "its parent": ["bench", "--model", str(model), "--json", f"{a}/r.json"],
        "is a folder; --output takes a file path": [
            "fit-readout",
            "--model",
            str(model),
            "--data",
            str(photos),
            "-o",
            str(photos),
        ],
    }
    for message, argv in cases.items():
        _unchanged([model, photos / "a.png"], lambda a=argv: main(a))
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, (argv, err)
    assert sorted(p.name for p in photos.iterdir()) == ["a.png", "b.png"]


def test_inputs_that_name_no_image_are_said_and_the_others_still_run(files, tmp_path, capsys):
    """An empty folder or a pattern that matches nothing, among good inputs, is an error that names
    it (exit code 1), and a file that is not an image says so in words, not in Pillow's internals."""
    _, model, photos, _ = files
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.png").write_text("not a picture")
    argv = [
        "restore", str(photos / "a.png"), str(tmp_path / "empty"), str(tmp_path / "*.jpg"), str(tmp_path / "notes.png"),
        "-o", str(tmp_path / "out"), "--model", str(model), "--no-progress",
    ]  # fmt: skip
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert f"{tmp_path / 'empty'}: folder holds no image files" in err
    assert f"{tmp_path / '*.jpg'}: pattern matched no file" in err
    assert "notes.png: not a readable image (not an image" in err and "BytesIO" not in err
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["a.png"]


def test_switches_named_like_output_files_are_not_taken_for_paths(files, capsys):
    """``info --json`` is a switch (print JSON), where other commands' ``--json`` names a file: the
    output guard checks only paths, so it runs, and says what readout each model carries."""
    import json

    _, model, _, _ = files
    assert main(["info", "default", "--json"]) == 0
    shipped = json.loads(capsys.readouterr().out)["readout"]
    assert shipped["fitted"] and shipped["statistics"] == ["mean", "std", "dx", "dy"]
    assert main(["info", str(model), "--json"]) == 0
    assert not json.loads(capsys.readouterr().out)["readout"]["fitted"]
    assert main(["info", "default"]) == 0
    assert "readout     enc2+enc3: mean, std, dx, dy" in capsys.readouterr().out
    # MODEL or --model, as every other command takes it; the shipped default when left out
    for argv in (["info", "--model", str(model), "--json"], ["info", str(model), "--model", str(model), "--json"]):
        assert main(argv) == 0
        assert json.loads(capsys.readouterr().out)["model"] == str(model)
    assert main(["info", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["model"] == "default"
    assert main(["info", "nano", "--model", str(model)]) == 2
    assert "two models given" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "option"),
    [
        (["bench", "--repeats", "0"], "--repeats"),
        (["bench", "--warmup", "-1"], "--warmup"),
        (["eval", "--limit", "0"], "--limit"),
        (["train", "--data", "d", "-o", "r", "--val-every", "0"], "--val-every"),
        (["train", "--data", "d", "-o", "r", "--ckpt-every", "-2"], "--ckpt-every"),
        (["train", "--data", "d", "-o", "r", "--batch-size", "0"], "--batch-size"),
        (["quantize", "--data", "d", "-o", "q", "--calib-samples", "0"], "--calib-samples"),
        (["restore", "x.png", "-o", "r", "--overlap", "-8"], "--overlap"),
        (["restore", "x.png", "-o", "r", "--tile", "0"], "--tile"),  # was read as "no tile size given"
        (["train", "--data", "d", "-o", "r", "--content-sky", "1.5"], "--content-sky"),  # a probability
        (["quantize", "--data", "d", "-o", "q", "--content-haze", "nan"], "--content-haze"),
        (["train", "--data", "d", "-o", "r", "--ema", "1"], "--ema"),  # a decay of 1 never moves
        (["train", "--data", "d", "-o", "r", "--lr", "0"], "--lr"),
        (["train", "--data", "d", "-o", "r", "--patch-size", "36"], "--patch-size"),  # not a multiple of 8
        (["quantize", "--data", "d", "-o", "q", "--calib-patch", "60"], "--calib-patch"),
        (["bench", "--plot", "latency.txt"], "--plot"),  # a PNG under another name
        (["demo", "--figure", "demo.gif"], "--figure"),
    ],
)
def test_values_that_cannot_work_are_refused_before_any_work(argv, option, capsys):
    """A zero or negative count (repeats, steps between checkpoints, images, patches...), a
    probability outside [0, 1], a learning rate of 0 or a figure name whose suffix is not the
    format written is a one-line usage error naming the option, not a crash, an empty result, a
    silently clamped setting or a mislabelled file later."""
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert option in err and "Traceback" not in err


def test_a_shipped_model_named_by_name_is_an_input_no_output_may_replace(files, tmp_path, monkeypatch, capsys):
    """``--model default`` reads the package's own weights file: a report written there
    (``bench --json``, ``analyze --json``) would replace the shipped model, so the guard counts
    the files a shipped name stands for among the inputs (a stand-in weights folder here)."""
    import baryir.formats

    _, model, photos, _ = files
    shipped = tmp_path / "weights"
    (shipped / "int8").mkdir(parents=True)
    for target in (shipped / "default.safetensors", shipped / "int8" / "default.safetensors"):
        target.write_bytes(model.read_bytes())
    monkeypatch.setattr(baryir.formats, "SHIPPED_WEIGHTS", shipped)
    before = model.read_bytes()
    for argv in (
        ["bench", "--backends", "torch", "--size", "64x64", "--repeats", "1", "--json"],
        ["analyze", str(photos / "a.png"), "--json"],
    ):
        for target in (shipped / "default.safetensors", shipped / "int8" / "default.safetensors"):
            assert main([*argv, str(target)]) == 2
            assert "would overwrite the input" in capsys.readouterr().err
            assert target.read_bytes() == before


def test_a_dash_for_an_output_file_is_refused_not_written_as_a_file_named_dash(files, tmp_path, monkeypatch, capsys):
    _, model, photos, _ = files
    monkeypatch.chdir(tmp_path)
    assert main(["analyze", str(photos / "a.png"), "--model", str(model), "--json", "-"]) == 2
    assert "--json -: name a file" in capsys.readouterr().err and not (tmp_path / "-").exists()


def test_a_backend_listed_twice_is_measured_once():
    """``--backends torch,torch`` (or ``torch torch``) names one backend: one row, not two."""
    from baryir.cli import build_parser

    args = build_parser().parse_args(["bench", "--backends", "torch,onnxruntime", "torch", "--precisions", "fp32,fp32"])
    assert args.backends == ["torch", "onnxruntime"] and args.precisions == ["fp32"]


def test_an_int8_model_file_where_a_float_one_is_needed_says_what_to_give(files, tmp_path, capsys):
    """`analyze` and `restore --model` on an INT8 checkpoint name the two ways forward."""
    from baryir.quantize.checkpoint import resolve_quantized

    _, _, photos, _ = files
    int8 = str(resolve_quantized("default"))
    for argv in (["analyze", str(photos / "a.png")], ["restore", str(photos / "a.png"), "-o", str(tmp_path / "r")]):
        assert main([*argv, "--model", int8, "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert "INT8 (NNCF-quantized) model" in err and "baryir export" in err, err


@pytest.mark.parametrize("name", ["gone.onnx", "gone.xml", "gone.mlpackage", "gone.engine"])
def test_an_artifact_that_does_not_exist_is_said_to_be_missing(files, tmp_path, name, capsys):
    """A mistyped artifact path says it is missing (not that its golden check is missing)."""
    _, _, photos, _ = files
    assert main(["restore", str(photos / "a.png"), "-o", str(tmp_path / "r"), "--model", str(tmp_path / name)]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / name}: no such" in err and "golden" not in err, err
    assert not (tmp_path / "r").exists()
