"""The dependency rules of pyproject.toml's import-linter contracts hold on the installed layout."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
from package_graph import edges, installed_layout  # noqa: E402


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


def test_the_package_graph_points_one_way(tmp_path):
    """The printed graph (scripts/package_graph.py) has no edge from a lower layer to a higher one."""
    pytest.importorskip("grimp")
    graph = edges(installed_layout(tmp_path))
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    layers = next(c["layers"] for c in contracts if c["type"] == "layers")  # the order is written once
    order = [name.removeprefix("baryir.") for name in layers]
    upward = [(a, b) for a in order for b in graph.get(a, ()) if b in order and order.index(b) < order.index(a)]
    assert upward == [] and "cli" not in {b for targets in graph.values() for b in targets}


def test_ruff_finds_nothing():
    ruff = Path(sys.executable).parent / "ruff"
    if not ruff.exists():
        pytest.skip("ruff is not installed (pip install -e '.[dev]')")
    for command in (["check", "."], ["format", "--check", "."]):
        run = subprocess.run([str(ruff), *command], cwd=ROOT, capture_output=True, text=True)
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-1000:]
