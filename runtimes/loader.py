"""``load_runner``: pick the backend from an artifact (suffix and manifest) or take it explicitly."""

from __future__ import annotations

import importlib
from pathlib import Path

from baryir.formats import (
    BACKEND_NAMES,
    BY_BACKEND,
    DEGRADATION_NAME,
    FORMATS,
    MAX_DEGRADATION_CLASSES,
    TORCH_RUNNER,
    format_of_file,
)
from baryir.io.text import clip, one_line

from .base import Runner
from .manifest import read_manifest
from .verify import artifact_folder, artifact_inside, check_files, check_on_load


def _resolve(artifact: str | Path) -> tuple[str, Path | str, dict]:
    """(backend, file to load, manifest or {}) for a checkpoint, artifact file or folder."""
    path = Path(artifact)
    if path.is_dir() and path.suffix not in (".mlpackage",):
        manifest_path = path / "manifest.json"
        if not manifest_path.exists():
            raise FileNotFoundError(
                f"{path} is a folder without manifest.json; pass the model file or an export folder"
            )
        manifest = read_manifest(manifest_path)
        return FORMATS[manifest["format"]].backend, artifact_inside(path, manifest["artifact"]), manifest
    fmt = format_of_file(path)
    if fmt is not None:
        if not path.exists():
            raise FileNotFoundError(
                f"{path}: no such {fmt.name} artifact; check the path, or export one with baryir export"
            )
        manifest_path = path.parent / "manifest.json"
        return fmt.backend, path, read_manifest(manifest_path) if manifest_path.exists() else {}
    return "torch", str(artifact), {}  # a checkpoint or a shipped name such as "default"


def model_dim(artifact: str | Path) -> int:
    """The BaryNet ``dim`` behind a checkpoint or artifact (sizes memory budgets)."""
    _, path, manifest = _resolve(artifact)
    if manifest:
        return manifest["model_config"]["dim"]
    from baryir.checkpoints import model_config  # a checkpoint: the PyTorch backend is in use

    return model_config(path).dim


def load_runner(
    artifact: str | Path = "default",
    backend: str = "auto",
    device: str | None = None,
    precision: str | None = None,
    verify: bool = True,
) -> Runner:
    """A runner for a checkpoint (PyTorch) or an exported artifact (ONNX Runtime, OpenVINO,
    TensorRT, CoreML). ``device`` and ``precision`` default to what the artifact was built
    for; the runner's ``info`` says what really runs. An exported artifact first checks itself
    against its ``golden.npz`` on this machine (once; see :mod:`runtimes.verify`) unless
    ``verify`` is False: a miss raises ``ArtifactCheckError`` naming the cause."""
    if backend not in ("auto", *BACKEND_NAMES):
        raise ValueError(f"unknown backend {backend!r}; choose auto or one of {', '.join(BACKEND_NAMES)}")
    found, path, manifest = _resolve(artifact)
    if backend != "auto" and backend != found:
        other = BY_BACKEND.get(found)  # OpenVINO runs ONNX as it is; nothing else runs another format's artifact
        if other is None or backend not in BY_BACKEND or other.name not in BY_BACKEND[backend].also_runs:
            fix = (
                f"export it first (baryir export --model {artifact} --format {BY_BACKEND[backend].name} -o DIR) "
                "and give DIR as the model"
                if found == "torch" and backend in BY_BACKEND
                else "give an artifact exported for it, or --backend auto"
            )
            raise ValueError(f"{artifact} is an artifact for {found}; it cannot run on {backend}: {fix}")
        found = backend
    built = manifest.get("precision")
    fmt = BY_BACKEND.get(found)
    if built and precision and fmt is not None:
        # a graph that fixes its precision runs only that; a runtime that picks it keeps int8 int8
        fits = (built == "int8") == precision.startswith("int8") if fmt.precision_at_runtime else precision == built
        if not fits:
            raise ValueError(f"{artifact} was exported as {built}; re-export it for {precision}")
    folder = artifact_folder(path) if verify and found != "torch" else None  # refused before loading
    if folder is not None:  # a damaged or changed file never reaches the runtime's parser
        check_files(folder, manifest)  # the manifest of that folder, already read and checked
    runner = _open(found, path, device, precision, manifest)
    classes = degradation_classes(manifest)
    if classes and DEGRADATION_NAME in getattr(runner, "output_names", ()):
        runner.degradation_classes = classes
    if folder is not None:
        try:
            check_on_load(runner, folder)
        except BaseException:
            runner.close()
            raise
    return runner


#: The longest class name a manifest may give the degradation output (a file is not trusted).
_MAX_NAME = 32


def degradation_classes(manifest: dict) -> tuple[str, ...]:
    """The class names of the manifest's ``degradation`` output; () if it names none. Names that
    are not short strings, or too many of them, are an error naming the manifest's fix."""
    outputs = manifest.get("outputs") if isinstance(manifest, dict) else None
    entry = (
        next(
            (o for o in outputs or () if isinstance(o, dict) and o.get("name") == DEGRADATION_NAME),
            None,
        )
        if isinstance(outputs, list)
        else None
    )
    if entry is None:
        return ()
    classes = entry.get("classes")
    if (
        not isinstance(classes, list)
        or not 2 <= len(classes) <= MAX_DEGRADATION_CLASSES
        or not all(isinstance(c, str) and 0 < len(c) <= _MAX_NAME for c in classes)
    ):
        raise ValueError(f"manifest.json: its degradation classes {clip(classes)} are not 2-16 short names; re-export")
    return tuple(classes)


def runner_class(backend: str) -> type[Runner]:
    """The runner class of ``backend``, named by the format table and imported only now (so an
    optional backend's library is needed only by whoever opens it)."""
    spec = TORCH_RUNNER if backend == "torch" else BY_BACKEND[backend].runner
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


def _open(backend: str, path: Path | str, device: str | None, precision: str | None, manifest: dict) -> Runner:
    """The backend's runner for ``path``; a file the backend's library refuses is a ValueError
    naming it (ONNX Runtime's own errors are not RuntimeErrors; OpenVINO's span several lines)."""
    cls = runner_class(backend)
    try:
        return cls.open(str(path), device, precision, manifest)
    except (ImportError, ValueError, OSError):  # ours: already one line naming the file or the fix
        raise
    except Exception as e:
        raise ValueError(f"{path}: {backend} cannot load it ({one_line(str(e))}); re-export the artifact") from e
