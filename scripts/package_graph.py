"""Print the package dependency graph of the installed layout (export/ as baryir.export, ...).

    python scripts/package_graph.py

In the checkout export/, quantize/ and runtimes/ are not under baryir/, so the graph (and
import-linter, see tests/test_architecture.py) is built from a copy laid out as pyproject's
package-dir installs it.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parent.parent
#: The nodes of the printed graph: these packages and modules, each with everything below it.
NODES = (
    "cli", "comparison", "export", "quantize", "runtimes", "train", "analysis", "evaluate", "data", "checkpoints",
    "model",
    "io", "formats", "options", "inference", "losses", "metrics", "safe_unpickle", "signals", "cpu",
)  # fmt: skip


def installed_layout(target: Path) -> Path:
    """Copy the sources into ``target`` as pyproject's package-dir installs them."""
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    for package, folder in setuptools["package-dir"].items():
        dest = target.joinpath(*package.split("."))
        shutil.copytree(ROOT / folder, dest, ignore=shutil.ignore_patterns("__pycache__", "weights", "examples"))
    return target


def edges(tree: Path) -> dict[str, set[str]]:
    """node -> the nodes it imports directly (grimp, on the layout in ``tree``)."""
    import grimp

    sys.path.insert(0, str(tree))
    graph = grimp.build_graph("baryir", cache_dir=None)

    def node(module: str) -> str:
        parts = module.split(".")
        return parts[1] if len(parts) > 1 and parts[1] in NODES else module

    out: dict[str, set[str]] = defaultdict(set)
    for module in graph.modules:
        for imported in graph.find_modules_directly_imported_by(module):
            a, b = node(module), node(imported)
            if a != b and imported.startswith("baryir"):
                out[a].add(b)
    return out


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        graph = edges(installed_layout(Path(tmp)))
    for name in NODES:
        if graph.get(name):
            print(f"{name} -> {', '.join(sorted(graph[name]))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
