"""The dependency rules of pyproject.toml's import-linter contracts hold on the installed layout."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).parent.parent


def installed_layout(target: Path) -> Path:
    """Copy the sources as pyproject's package-dir installs them (export/ -> baryir/export/, ...)."""
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    for package, folder in setuptools["package-dir"].items():
        dest = target.joinpath(*package.split("."))
        shutil.copytree(ROOT / folder, dest, ignore=shutil.ignore_patterns("__pycache__", "weights", "examples"))
    return target


def test_import_contracts_are_kept(tmp_path):
    pytest.importorskip("importlinter")
    lint = Path(sys.executable).parent / "lint-imports"
    tree = installed_layout(tmp_path)
    run = subprocess.run(
        [str(lint), "--config", str(ROOT / "pyproject.toml")], cwd=tree, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert "0 broken" in run.stdout


def test_every_package_folder_is_installed():
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = set()
    for package, folder in setuptools["package-dir"].items():
        for init in (ROOT / folder).rglob("__init__.py"):
            parts = init.parent.relative_to(ROOT / folder).parts
            found.add(".".join((package, *parts)))
    assert found == set(setuptools["packages"])
