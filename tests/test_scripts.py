"""The helper scripts that prepare work elsewhere (scripts/pack_data.py: photos for a GPU lease)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
from pack_data import pack  # noqa: E402


def _photos(folder: Path, n: int, seed: int) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        y, x = np.mgrid[0:48, 0:64]
        img = np.stack([x * 4, y * 5, (x + y) * 2], -1) + rng.integers(0, 30, (48, 64, 3))
        Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(folder / f"p{i}.png")
    return folder


def test_pack_keeps_every_photo_and_folder_under_the_budget(tmp_path):
    folders = [_photos(tmp_path / "a", 3, 0), _photos(tmp_path / "b", 2, 1)]
    report = pack(folders, tmp_path / "out", max_mib=1.0, qualities=[98, 80])
    assert report["photos"] == 5 and report["folders"] == {"a": 3, "b": 2} and report["quality"] == 98
    files = sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*.webp"))
    assert files == ["a/p0.webp", "a/p1.webp", "a/p2.webp", "b/p0.webp", "b/p1.webp"]
    assert sum(p.stat().st_size for p in (tmp_path / "out").rglob("*")) <= 2**20
    for name in ("a/p0.webp", "b/p1.webp"):
        packed = np.asarray(Image.open(tmp_path / "out" / name).convert("RGB")).astype(float)
        source = np.asarray(Image.open(tmp_path / name.replace(".webp", ".png"))).astype(float)
        assert packed.shape == source.shape and 10 * np.log10(255**2 / np.mean((packed - source) ** 2)) >= 30
    assert report["worst_psnr_db"] >= 30


def test_pack_lowers_the_quality_to_fit_and_refuses_what_cannot(tmp_path):
    folders = [_photos(tmp_path / "a", 4, 0)]
    sizes = pack(folders, tmp_path / "full", max_mib=1.0, qualities=[100])
    budget = sizes["mib"] * 0.8
    report = pack(folders, tmp_path / "fit", max_mib=budget, qualities=[100, 60, 20])
    assert report["quality"] < 100 and report["mib"] <= budget
    with pytest.raises(ValueError, match="raise --max-mib"):
        pack(folders, tmp_path / "never", max_mib=1e-4, qualities=[50])
    assert not (tmp_path / "never").exists()  # nothing half-written when it does not fit
