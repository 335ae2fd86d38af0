"""The image codec and batch restore: faithful outputs, no input ever replaced, no lost files."""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import time
import zlib

import numpy as np
import pytest
import torch
from PIL import Image, ImageCms

from baryir import build_model, save_model
from baryir.cli import main
from baryir.io.atomic import atomic_write
from baryir.io.images import ImageError, Picture, read_image, write_image
from baryir.runtimes.restore import expand_inputs

RNG = np.random.default_rng(0)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    torch.manual_seed(0)
    return str(save_model(build_model("nano"), tmp_path_factory.mktemp("m") / "nano.safetensors"))


def _restore(model_path, *args) -> int:
    return main(["restore", *map(str, args), "--model", model_path, "--no-progress"])


def _png(pixels: np.ndarray, filters: list[int]) -> bytes:
    """A 16-bit PNG whose rows use the given filter types, filtered by a plain reference loop."""
    h, w, c = pixels.shape
    kind = {1: 0, 2: 4, 3: 2, 4: 6}[c]
    raw = pixels.astype(">u2").view(np.uint8).reshape(h, w * c * 2).astype(int)
    bpp, out = c * 2, bytearray()
    for y in range(h):
        f = filters[y % len(filters)]
        out.append(f)
        for i in range(raw.shape[1]):
            a = raw[y, i - bpp] if i >= bpp else 0
            b = raw[y - 1, i] if y else 0
            cc = raw[y - 1, i - bpp] if y and i >= bpp else 0
            p = a + b - cc
            paeth = (
                a
                if abs(p - a) <= abs(p - b) and abs(p - a) <= abs(p - cc)
                else (b if abs(p - b) <= abs(p - cc) else cc)
            )
            pred = [0, a, b, (a + b) // 2, paeth][f]
            out.append((raw[y, i] - pred) % 256)

    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))

    ihdr = struct.pack(">IIBBBBB", w, h, 16, kind, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(bytes(out))) + chunk(b"IEND", b"")


@pytest.mark.parametrize("channels", [2, 3, 4])
def test_16_bit_colour_png_is_read_and_written_at_full_depth(tmp_path, channels):
    pixels = (RNG.random((9, 11, channels)) * 65535).astype(np.uint16)
    path = tmp_path / "in.png"
    path.write_bytes(_png(pixels, [0, 1, 2, 3, 4]))  # every PNG filter type
    pic = read_image(path)
    colour = pixels[..., :1] if channels == 2 else pixels[..., :3]
    np.testing.assert_array_equal(pic.rgb, np.repeat(colour, 3, 2) if channels == 2 else colour)
    if channels in (2, 4):
        np.testing.assert_array_equal(pic.alpha, pixels[..., -1])
    write_image(pic, tmp_path / "out.png")
    again = read_image(tmp_path / "out.png")
    np.testing.assert_array_equal(again.rgb, pic.rgb)
    assert again.grey == (channels == 2)


@pytest.mark.slow
def test_restore_keeps_16_bit_colour_and_converts_grey_16_for_jpeg(model_path, tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    smooth = np.linspace(0.2, 0.4, 40 * 48 * 3).reshape(40, 48, 3)
    (src / "rgb16.png").write_bytes(_png((smooth * 65535).astype(np.uint16), [4]))
    Image.fromarray((smooth[..., 0] * 65535).astype(np.uint16)).save(src / "grey16.png")
    assert _restore(model_path, src / "rgb16.png", "-o", tmp_path / "a") == 0
    out = read_image(tmp_path / "a" / "rgb16.png")
    assert out.rgb.dtype == np.uint16 and np.any(out.rgb % 257)  # not 8-bit values scaled up
    assert _restore(model_path, src / "grey16.png", "-o", tmp_path / "b", "--image-format", "jpg") == 0
    assert "16-bit reduced to 8-bit" in capsys.readouterr().err
    grey = np.asarray(Image.open(tmp_path / "b" / "grey16.jpg"))
    assert grey.ndim == 2 and 40 < grey.mean() < 110  # about 0.3 of white, not white


def test_integer_and_float_tiffs_are_exact_or_refused(model_path, tmp_path, capsys):
    wide = np.full((16, 16), 70000, np.int32)
    Image.fromarray(wide, mode="I").save(tmp_path / "wide.tif")
    with pytest.raises(ImageError, match="outside 0..65535"):
        read_image(tmp_path / "wide.tif")
    values = np.linspace(0.1, 0.6, 24 * 32, dtype=np.float32).reshape(24, 32)
    Image.fromarray(values, mode="F").save(tmp_path / "float.tif")
    np.testing.assert_array_equal(read_image(tmp_path / "float.tif").rgb[..., 0], values)
    code = _restore(model_path, tmp_path / "float.tif", tmp_path / "wide.tif", "-o", tmp_path / "out")
    assert code == 1
    assert "wide.tif: 32-bit integer pixels" in capsys.readouterr().err
    restored = Image.open(tmp_path / "out" / "float.tif")
    assert restored.mode == "F" and 0.2 < np.asarray(restored).mean() < 0.5  # not black


def test_profiles_metadata_lossless_and_frames(tmp_path):
    rgb = (RNG.random((20, 24, 3)) * 255).astype(np.uint8)
    cmyk_profile = bytearray(132)
    cmyk_profile[12:20] = b"prtrCMYK"
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "cmyk.jpg", icc_profile=bytes(cmyk_profile))
    pic = read_image(tmp_path / "cmyk.jpg")
    assert pic.icc is None and "CMYK converted" in pic.notes[0]
    write_image(pic, tmp_path / "cmyk-out.jpg")
    assert Image.open(tmp_path / "cmyk-out.jpg").info.get("icc_profile") is None
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    exif = Image.Exif()
    exif[0x010F] = "BaryCam"  # Make
    exif[0x0112] = 8
    Image.fromarray(rgb).save(tmp_path / "tagged.jpg", exif=exif.tobytes(), icc_profile=srgb)
    pic = read_image(tmp_path / "tagged.jpg")
    assert pic.rgb.shape == (24, 20, 3)  # rotated by its orientation
    for suffix in ("jpg", "png", "webp", "tif"):
        write_image(pic, tmp_path / f"tagged-out.{suffix}")
        out = Image.open(tmp_path / f"tagged-out.{suffix}")
        assert out.getexif().get(0x010F) == "BaryCam" and out.getexif().get(0x0112, 1) == 1, suffix
        assert out.info.get("icc_profile") == srgb, suffix
    Image.fromarray(rgb).save(tmp_path / "lossless.webp", lossless=True)
    write_image(read_image(tmp_path / "lossless.webp"), tmp_path / "lossless-out.webp")
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "lossless-out.webp")), rgb)
    frames = [Image.fromarray(rgb), Image.fromarray(255 - rgb)]
    frames[0].save(tmp_path / "pages.tif", save_all=True, append_images=frames[1:])
    with pytest.raises(ImageError, match="2 frames"):
        read_image(tmp_path / "pages.tif")


def test_outputs_follow_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        write_image(Picture(np.zeros((8, 8, 3), np.uint8)), tmp_path / "a.png")
    finally:
        os.umask(old)
    assert (tmp_path / "a.png").stat().st_mode & 0o777 == 0o640


def test_no_output_replaces_an_input_or_another_output(model_path, tmp_path, capsys):
    d = tmp_path / "d"
    d.mkdir()
    rgb = (RNG.random((24, 24, 3)) * 255).astype(np.uint8)
    Image.fromarray(rgb).save(d / "a.png")
    Image.fromarray(rgb).save(d / "a.jpg")
    before = {p.name: p.read_bytes() for p in d.iterdir()}
    assert _restore(model_path, d, "-o", d, "--format", "jpg") == 1
    err = capsys.readouterr().err
    assert "a.png: its output" in err and "would overwrite the input" in err and "restored 0 of 2" in err
    assert {p.name: p.read_bytes() for p in d.iterdir()} == before
    for sub in ("x", "y"):
        (tmp_path / sub).mkdir()
        Image.fromarray(rgb).save(tmp_path / sub / "photo.png")
    assert (
        _restore(model_path, tmp_path / "x/photo.png", tmp_path / "y/photo.png", d / "a.png", "-o", tmp_path / "o") == 1
    )
    err = capsys.readouterr().err
    assert "would write the same output" in err and "restored 1 of 3" in err
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["a.png"]
    assert _restore(model_path, d / "a.png", "-o", d, "--suffix", "_restored") == 0  # the user's way out
    assert (d / "a_restored.png").exists() and (d / "a.png").read_bytes() == before["a.png"]


def test_a_file_that_cannot_be_written_fails_alone(model_path, tmp_path, capsys):
    (tmp_path / "rgb16.png").write_bytes(_png((RNG.random((16, 16, 3)) * 65535).astype(np.uint16), [0]))
    Image.fromarray((RNG.random((16, 16, 3)) * 255).astype(np.uint8)).save(tmp_path / "rgb8.png")
    code = _restore(
        model_path, tmp_path / "rgb16.png", tmp_path / "rgb8.png", "-o", tmp_path / "out", "--format", "tif"
    )
    err = capsys.readouterr().err
    assert code == 1 and "rgb16.png: 16-bit colour" in err and "restored 1 of 2" in err
    assert (tmp_path / "out" / "rgb8.tif").exists()
    (tmp_path / "blocker").write_text("a file where the output folder should be")
    assert _restore(model_path, tmp_path / "rgb8.png", "-o", tmp_path / "blocker" / "sub") == 2  # before any image
    err = capsys.readouterr().err
    assert "Traceback" not in err and "its parent" in err and "blocker is a file" in err


@pytest.mark.slow
def test_memory_failures_fall_back_to_tiles(model_path, tmp_path):
    """A real CPU allocation failure (address space capped) is retried with smaller tiles."""
    Image.fromarray((RNG.random((768, 768, 3)) * 255).astype(np.uint8)).save(tmp_path / "big.png")
    script = f"""
import resource, sys
from baryir.runtimes import load_runner
from baryir.runtimes.restore import restore_file
from pathlib import Path
runner = load_runner({model_path!r})
used = int(open('/proc/self/statm').read().split()[0]) * resource.getpagesize()
resource.setrlimit(resource.RLIMIT_AS, (used + 400 * 2**20, resource.RLIM_INFINITY))
result = restore_file(runner, Path({str(tmp_path / "big.png")!r}), Path({str(tmp_path / "out.png")!r}))
print(result.error or 'ok')
"""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert run.stdout.strip() == "ok", run.stdout + run.stderr[-2000:]
    assert Image.open(tmp_path / "out.png").size == (768, 768)


def test_a_killed_write_leaves_no_half_file_and_no_fake_input(tmp_path):
    target = tmp_path / "photo.png"
    script = f"""
import time
from pathlib import Path
from baryir.io.atomic import atomic_write
def slow(tmp):
    Path(tmp).write_bytes(b"half")
    print("writing", flush=True)
    time.sleep(60)
atomic_write({str(target)!r}, slow)
"""
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert not target.exists()
    leftovers = list(tmp_path.iterdir())
    assert len(leftovers) == 1 and leftovers[0].name.startswith(".photo.png.")
    assert expand_inputs([str(tmp_path)]) == ([], [], [str(tmp_path)])  # neither an input nor a skipped file
    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, lambda tmp: (_ for _ in ()).throw(KeyboardInterrupt))
    assert not target.exists() and len(list(tmp_path.iterdir())) == 1


def test_a_file_named_twice_is_read_once_and_said_so(tmp_path):
    photo = tmp_path / "photo.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(photo)
    (tmp_path / "link.png").symlink_to(photo)
    paths, skipped, unmatched = expand_inputs([str(photo), str(tmp_path / "link.png"), str(tmp_path / "*.png")])
    assert paths == [photo] and unmatched == []
    assert [(p.name, why) for p, why in skipped] == [
        ("link.png", f"the same file as {photo} (each file is read once)"),
        ("link.png", f"the same file as {photo} (each file is read once)"),
        ("photo.png", f"the same file as {photo} (each file is read once)"),
    ]


@pytest.mark.slow
def test_ctrl_c_exits_130_without_a_traceback(model_path, tmp_path):
    for i in range(40):
        Image.fromarray((RNG.random((256, 256, 3)) * 255).astype(np.uint8)).save(tmp_path / f"{i}.png")
    cmd = [
        sys.executable,
        "-m",
        "baryir.cli",
        "restore",
        str(tmp_path),
        "-o",
        str(tmp_path / "out"),
        "--model",
        model_path,
    ]
    # a shell that started this suite in the background hands its children SIGINT ignored: undo that
    default_sigint = lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)  # noqa: E731
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, preexec_fn=default_sigint)
    deadline = time.time() + 120
    while not (tmp_path / "out").exists() and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    err = proc.communicate(timeout=120)[1]
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "interrupted" in err
    assert not list((tmp_path / "out").glob(".*.tmp"))


def test_folder_skips_are_mentioned(model_path, tmp_path, capsys):
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "a.png")
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "more.png").mkdir()  # a folder is not searched, whatever its name
    os.mkfifo(tmp_path / "pipe.png")  # never opened: it would block
    assert _restore(model_path, tmp_path, "-o", tmp_path / "out") == 0
    err = capsys.readouterr().err
    assert f"skipped {tmp_path / 'notes.txt'}: not an image suffix" in err
    assert f"skipped {tmp_path / 'more.png'}: a folder, not searched" in err
    assert f"skipped {tmp_path / 'pipe.png'}: not a regular file" in err
    assert "restored 1 of 1" in err


@pytest.mark.slow
def test_bench_reports_a_dead_or_failing_child_as_a_failed_row(model_path, tmp_path, capsys):
    import multiprocessing as mp

    from baryir.comparison.bench import _result_of

    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    child = ctx.Process(target=signal.raise_signal, args=(signal.SIGKILL,))  # dies as an OOM kill does
    child.start()
    assert "killed by signal 9" in _result_of(child, results)["failed"]
    report = tmp_path / "bench.json"
    too_big = ["--size", "65536x65536", "--cache", str(tmp_path / "cache"), "--json", str(report)]
    argv = ["bench", "--model", model_path, "--backends", "torch", "--precisions", "fp32", *too_big]
    assert main(argv) == 1  # a 51 GB input cannot be allocated: a failed row, not a hang or a skip
    rows = json.loads(report.read_text())["rows"]
    assert len(rows) == 1 and "MemoryError" in rows[0]["failed"]
    assert "FAILED" in capsys.readouterr().out


@pytest.mark.parametrize("mode", ["CMYK", "P", "LAB", "RGB"])
def test_tiff_outputs_keep_only_the_photos_exif(tmp_path, mode):
    rgb = (np.random.default_rng(2).random((20, 24, 3)) * 255).astype(np.uint8)
    im = Image.fromarray(rgb).convert(mode) if mode != "LAB" else Image.fromarray(rgb).convert("LAB")
    exif = Image.Exif()
    exif[0x010F] = "Camera maker"
    exif[0x0112] = 1
    im.save(tmp_path / "in.tif", exif=exif.tobytes())
    pic = read_image(tmp_path / "in.tif")
    write_image(pic, tmp_path / "out.tif")
    with Image.open(tmp_path / "out.tif") as out:
        out.load()
        assert out.mode == "RGB" and out.size == (24, 20)
        assert out.getexif().get(0x010F) == "Camera maker"  # the photo's tags travel
        assert out.getexif().get(262) == 2  # photometric: RGB, the pixels it holds, not the input's


def test_colour_key_transparency_becomes_alpha(tmp_path):
    rgb = np.full((8, 8, 3), 200, np.uint8)
    rgb[:4] = (1, 2, 3)
    Image.fromarray(rgb).save(tmp_path / "key.png", transparency=(1, 2, 3))
    pic = read_image(tmp_path / "key.png")
    assert pic.alpha is not None and (pic.alpha[:4] == 0).all() and (pic.alpha[4:] == 255).all()
    grey = Image.fromarray(rgb[..., 0])
    grey.save(tmp_path / "grey.png", transparency=1)
    assert read_image(tmp_path / "grey.png").alpha is not None


def test_a_malformed_exif_costs_the_exif_not_the_batch(model_path, tmp_path, capsys):
    good = Image.fromarray(np.full((16, 16, 3), 100, np.uint8))
    good.save(tmp_path / "a.png")
    buf = tmp_path / "b.png"
    good.save(buf)
    data = buf.read_bytes()
    end = data.rfind(b"IEND") - 4
    body = b"XX\x00\x2a\x00\x00\x00\x08"  # neither II nor MM: Pillow's EXIF reader raises SyntaxError
    chunk = struct.pack(">I", len(body)) + b"eXIf" + body + struct.pack(">I", zlib.crc32(b"eXIf" + body))
    buf.write_bytes(data[:end] + chunk + data[end:])
    argv = ["restore", str(tmp_path / "a.png"), str(buf), "-o", str(tmp_path / "out"), "--model", model_path]
    assert "unreadable EXIF dropped" in " ".join(read_image(buf).notes)
    assert main([*argv, "--no-progress"]) == 0
    assert (tmp_path / "out" / "a.png").exists() and (tmp_path / "out" / "b.png").exists()


def test_photos_up_to_the_stated_limit_are_read(tmp_path):
    side = 9800  # 96 MP: above Pillow's own default warning (89.5 MP), below our 100 MP limit
    Image.new("L", (side, side)).save(tmp_path / "big.png")
    assert read_image(tmp_path / "big.png").rgb.shape == (side, side, 3)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
def test_a_pipe_or_an_oversized_file_is_refused_without_reading_it(model_path, tmp_path, capsys):
    """A named pipe would block the batch forever and a huge file would be read whole: each is
    refused from its metadata alone, and the good image beside them is restored."""
    from baryir.io.images import MAX_FILE_BYTES

    os.mkfifo(tmp_path / "pipe.png")  # no writer: opening it would wait forever
    with open(tmp_path / "huge.png", "wb") as f:  # sparse: costs no disk
        f.truncate(MAX_FILE_BYTES + 1)
    Image.fromarray(np.full((16, 16, 3), 90, np.uint8)).save(tmp_path / "good.png")
    inputs = [tmp_path / n for n in ("pipe.png", "huge.png", "good.png")]
    assert _restore(model_path, *inputs, "-o", tmp_path / "out") == 1
    err = capsys.readouterr().err
    assert "pipe.png: not a regular file" in err and "huge.png: larger than" in err and "restored 1 of 3" in err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["good.png"]
