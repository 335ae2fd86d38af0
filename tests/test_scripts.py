"""The helper scripts: scripts/pack_data.py (photos for a GPU lease), scripts/interpolate_weights.py."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
from interpolate_weights import interpolate  # noqa: E402
from interpolate_weights import main as interpolate_main  # noqa: E402
from pack_data import pack  # noqa: E402


def _photos(folder: Path, n: int, seed: int) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        y, x = np.mgrid[0:48, 0:64]
        img = np.stack([x * 4, y * 5, (x + y) * 2], -1) + rng.integers(0, 30, (48, 64, 3))
        Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(folder / f"p{i}.png")
    return folder


def test_pack_copies_lossy_photos_and_keeps_the_others_lossless_when_they_fit(tmp_path):
    folders = [_photos(tmp_path / "a", 3, 0), _photos(tmp_path / "b", 2, 1)]
    Image.open(folders[1] / "p1.png").save(folders[1] / "j.jpg", quality=90)
    report = pack(folders, tmp_path / "out", max_mib=1.0, qualities=[95, 80])
    assert report["photos"] == 6 and report["folders"] == {"a": 3, "b": 3}
    assert (report["copied"], report["reencoded"], report["encoding"]) == (1, 5, "lossless webp")
    assert report["worst_psnr_db"] is None
    out = tmp_path / "out"
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert files == ["a/p0.webp", "a/p1.webp", "a/p2.webp", "b/j.jpg", "b/p0.webp", "b/p1.webp"]
    assert (out / "b" / "j.jpg").read_bytes() == (folders[1] / "j.jpg").read_bytes()
    for name in ("a/p0.webp", "b/p1.webp"):
        packed = np.asarray(Image.open(out / name).convert("RGB"))
        np.testing.assert_array_equal(packed, np.asarray(Image.open(tmp_path / name.replace(".webp", ".png"))))


def test_pack_falls_back_to_jpeg_to_fit_and_refuses_what_cannot(tmp_path):
    folders = [_photos(tmp_path / "a", 4, 0)]
    lossless = pack(folders, tmp_path / "full", max_mib=1.0, qualities=[95])
    budget = lossless["mib"] * 0.8
    report = pack(folders, tmp_path / "fit", max_mib=budget, qualities=[95, 60, 20])
    assert report["encoding"].startswith("jpeg 4:4:4") and report["mib"] <= budget
    assert 20 < report["worst_psnr_db"] < 80
    assert sorted(p.name for p in (tmp_path / "fit" / "a").iterdir()) == [f"p{i}.jpg" for i in range(4)]
    with pytest.raises(ValueError, match="raise --max-mib"):
        pack(folders, tmp_path / "never", max_mib=1e-4, qualities=[50])
    assert not (tmp_path / "never").exists()  # nothing half-written when it does not fit


def test_rain_stats_measure_streaks_as_drawn():
    from rain_stats import ANGLE_BINS, layer_stats

    layer = np.zeros((120, 120), np.float32)
    for x in range(10, 110, 12):  # vertical streaks 2 px wide, 30 px long, brightness 0.5
        layer[20:50, x : x + 2] = 0.5
    stats = layer_stats(layer)
    assert 1.5 <= stats["median_width"] <= 2.5 and 25 <= stats["median_length"] <= 36
    assert stats["density"] == (layer > 0.04).mean()
    centre = (ANGLE_BINS[:-1] + ANGLE_BINS[1:]) / 2
    near_vertical = sum(w for c, w in zip(centre, stats["angle"]) if abs(c) <= 10)
    assert near_vertical > 0.9 * sum(stats["angle"])
    tilted = layer_stats(np.ascontiguousarray(layer.T))  # horizontal streaks: far from vertical
    assert sum(w for c, w in zip(centre, tilted["angle"]) if abs(c) <= 10) < 0.1 * sum(tilted["angle"])


def test_interpolated_weights_are_exact_at_the_ends_and_refuse_other_configs():
    import torch

    from baryir import build_model

    torch.manual_seed(0)
    a, b = build_model("nano").eval(), build_model("nano").eval()
    sa, sb = a.state_dict(), b.state_dict()
    for alpha, expected in ((0.0, sa), (1.0, sb)):
        mixed = interpolate(a, b, alpha).state_dict()
        assert all(torch.equal(mixed[k], expected[k]) for k in sa)
    half = interpolate(a, b, 0.5).state_dict()
    name = next(k for k, v in sa.items() if v.is_floating_point() and not torch.equal(v, sb[k]))
    torch.testing.assert_close(half[name], (sa[name] + sb[name]) / 2)
    both = interpolate(a, interpolate(a, b, 0.5), 2.0).state_dict()  # extrapolation: A + 2 (B - A)
    torch.testing.assert_close(both[name], sb[name])
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():  # a working model, not only a state dict
        assert torch.isfinite(interpolate(a, b, 0.5)(x)).all()
    with pytest.raises(ValueError, match="different configs"):
        interpolate(a, build_model("mobile"), 0.5)


def test_interpolation_refuses_to_replace_an_input_in_one_line(tmp_path):
    """The script's errors are one line naming the file (no traceback), and the input is kept."""
    from baryir import build_model, save_model

    a = save_model(build_model("nano"), tmp_path / "a.safetensors")
    before = a.read_bytes()
    with pytest.raises(SystemExit, match=r"^error: .*a\.safetensors: would overwrite the input"):
        interpolate_main([str(a), str(a), "-o", str(a)])
    assert a.read_bytes() == before
    with pytest.raises(SystemExit, match=r"^error: .*gone\.safetensors"):
        interpolate_main([str(a), str(tmp_path / "gone.safetensors"), "-o", str(tmp_path / "out.safetensors")])
