"""Shared fixtures: small deterministic models and the copied official facts."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

FIXTURES = Path(__file__).parent / "fixtures"


def official_golden_weights() -> dict[str, torch.Tensor]:
    """The deterministic weights described in tests/fixtures/README.md (from the official README)."""
    keys = json.loads((FIXTURES / "barynet_state_dict.json").read_text())["keys"]
    state = {}
    for i, (name, shape) in enumerate(keys):
        t = torch.randn(shape, generator=torch.Generator().manual_seed(i), dtype=torch.float64)
        if name.endswith("temperature"):
            value = 1 + 0.1 * t
        elif len(shape) == 1:
            value = 1 + 0.1 * t if name.endswith("weight") else 0.1 * t
        else:
            value = t / math.sqrt(math.prod(shape[1:]))
        state[name] = value.float()
    return state


def pytest_collection_modifyitems(config, items) -> None:
    """Skip ``gpu`` tests without a CUDA GPU and ``macos`` tests off macOS, saying why."""
    import platform

    no_gpu = pytest.mark.skip(reason="needs an NVIDIA GPU: torch sees no CUDA device here")
    no_mac = pytest.mark.skip(reason=f"needs macOS (CoreML prediction); this is {platform.system()}")
    for item in items:
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(no_gpu)
        if "macos" in item.keywords and platform.system() != "Darwin":
            item.add_marker(no_mac)


def pytest_report_header(config) -> list[str]:
    """Every report names its environment: backend versions and the CPU's int8/bf16 features."""
    from baryir.runtimes.environment import LIBRARIES, describe_cpu, library_versions

    found = library_versions()
    versions = ", ".join(f"{name} {found.get(name, '-')}" for name in LIBRARIES)
    return [f"backends: {versions}", f"cpu: {describe_cpu()}"]


@pytest.fixture(scope="session")
def fixtures() -> Path:
    return FIXTURES


@pytest.fixture(scope="session")
def restamp():
    """Record an export folder's files in its manifest as an export would have: for tests of what
    a check catches beyond the recorded digests (a wrong artifact whose files agree with them)."""
    from baryir.io.digest import folder_digests

    def record(folder: Path) -> None:
        manifest = json.loads((folder / "manifest.json").read_text())
        manifest["files"] = folder_digests(folder, ("manifest.json",))
        (folder / "manifest.json").write_text(json.dumps(manifest))

    return record


@pytest.fixture()
def nano_model():
    from baryir import build_model

    torch.manual_seed(0)
    return build_model("nano").eval()


def _smooth_image(rng, size: tuple[int, int]):
    """A clean-looking test photo: smooth colour gradients plus a few flat rectangles."""
    import numpy as np

    h, w = size
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    img = np.stack([0.5 + 0.4 * np.sin(6 * xx + c + rng.uniform(0, 3)) * np.cos(4 * yy + c) for c in range(3)], -1)
    for _ in range(4):
        y, x = rng.integers(0, h - 8), rng.integers(0, w - 8)
        img[y : y + rng.integers(4, h // 2), x : x + rng.integers(4, w // 2)] = rng.uniform(0, 1, 3)
    return (img.clip(0, 1) * 255).astype(np.uint8)


@pytest.fixture()
def photo_dir(tmp_path):
    """A folder of 4 small clean PNG photos and one corrupt file."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    folder = tmp_path / "photos"
    folder.mkdir()
    for i, size in enumerate([(64, 80), (72, 64), (96, 96), (64, 64)]):
        Image.fromarray(_smooth_image(rng, size)).save(folder / f"img{i}.png")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    return folder


_NO_TORCH = """
import sys
sys.modules["torch"] = None  # any `import torch` now fails, as on a device without PyTorch
from baryir.cli import main
code = main(sys.argv[1:])
assert not [m for m in sys.modules if m.startswith("torch") and sys.modules[m] is not None]
sys.exit(code)
"""


@pytest.fixture()
def run_without_torch(tmp_path):
    """``run(*argv)``: the ``baryir`` command in a fresh process where ``import torch`` fails (a
    device with only a runtime), with its own verification cache."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "no-torch-cache")}

    def run(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", _NO_TORCH, *argv], capture_output=True, text=True, env=env)

    return run
