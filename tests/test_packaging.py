"""The wheel a user installs: one ``baryir`` package with its data files, working outside the checkout."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built from a copy of the tracked files (the checkout gets no build/ folder)."""
    tmp = tmp_path_factory.mktemp("wheel")
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    if not files:
        pytest.skip("not a git checkout: the wheel is built from the tracked files")
    src = tmp / "src"
    for name in files:
        if (ROOT / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, src / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp), str(src)], check=True)
    (found,) = tmp.glob("baryir-*.whl")
    return found


@pytest.mark.slow
def test_wheel_installs_one_namespace_with_its_data(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith((".dist-info", ".data"))}
    assert tops == {"baryir"}  # no package named export, quantize or runtimes
    for needed in (
        "baryir/export/tensorrt_onnx_ops.json",
        "baryir/weights/default.safetensors",
        "baryir/examples/rain.png",
        "baryir/runtimes/backends/onnxruntime_runner.py",
        "baryir/quantize/scheme.py",
    ):
        assert needed in names


@pytest.mark.slow
def test_installed_wheel_runs_demo_and_tensorrt_checks_outside_the_checkout(wheel, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", "--python", str(python)]
    subprocess.run([*pip, "install", "--no-deps", "--no-index", str(wheel)], check=True)
    # The dependencies come from this environment's site-packages (a path, not a site dir: its
    # editable-install hook for the checkout is not run), so nothing is downloaded.
    site = Path(
        subprocess.check_output(
            [python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], text=True
        ).strip()
    )
    (site / "deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    work = tmp_path / "work"
    work.mkdir()

    def run(*args: str) -> str:
        done = subprocess.run(args, cwd=work, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        return done.stdout

    where = run(
        str(python), "-c", "import baryir.export.tensorrt_export as t; print(t.__file__, len(t.supported_ops()))"
    )
    assert where.startswith(str(site)) and int(where.split()[1]) > 100
    missing = subprocess.run([python, "-c", "import runtimes"], cwd=work, capture_output=True, text=True)
    assert "No module named 'runtimes'" in missing.stderr
    run(str(venv / "bin" / "baryir"), "demo", "-o", "demo")
    assert (work / "demo" / "comparison.png").stat().st_size > 0
    run(
        str(python),
        "-c",
        "from baryir import build_model, save_model; save_model(build_model('nano'), 'nano.safetensors')",
    )
    # static checks need the ops table (package data); --no-validate still writes golden.npz from the example photo
    run(
        str(venv / "bin" / "baryir"),
        "export",
        "--model",
        "nano.safetensors",
        "--format",
        "tensorrt",
        "--no-validate",
        "-o",
        "trt",
    )
    manifest = json.loads(next((work / "trt").rglob("manifest.json")).read_text())
    assert manifest["format"] == "tensorrt" and manifest["static_checks"] == "passed"
