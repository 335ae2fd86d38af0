"""Artifacts that check themselves on the machine that runs them.

Every export writes ``golden.npz`` (a real input and PyTorch's output for it) and its
tolerance into ``manifest.json``. :func:`verify_runner` runs the golden input through the
artifact's own runtime here and judges it with the one comparator; :func:`check_on_load` does
that once per artifact, runtime and machine (passes are cached) and raises
:class:`ArtifactCheckError`, naming the likely cause and the fix, instead of handing out
wrong pixels.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import zipfile
from pathlib import Path

import numpy as np

from baryir.formats import BY_BACKEND, MAX_DEGRADATION_CLASSES
from baryir.io.atomic import atomic_write
from baryir.io.digest import file_sha256, folder_digests
from baryir.io.text import clip, read_json

from .base import Runner
from .compare import TOLERANCES, budget_precision, check_tolerance, compare, compare_degradation, tolerance_for
from .environment import describe_cpu, library_versions
from .manifest import read_manifest


class ArtifactCheckError(RuntimeError):
    """An artifact whose output here misses its golden reference."""


def artifact_inside(folder: Path, name: object) -> Path:
    """The artifact a manifest names, which must lie inside its folder: a plain relative name,
    no ``..``, no link that leads out (the check of the folder is a check of that file)."""
    if not isinstance(name, str) or not name or Path(name).is_absolute() or ".." in Path(name).parts:
        raise ValueError(f"{folder / 'manifest.json'}: its artifact {clip(name)} is not a file name inside {folder}")
    target = folder / name
    if not target.resolve().is_relative_to(folder.resolve()):
        raise ValueError(f"{target}: leads out of {folder} (a link); an artifact must lie inside its folder")
    return target


def artifact_folder(path: str | Path) -> Path:
    """The export folder (with manifest.json and golden.npz) that ``path`` is or lies in; an
    artifact without them cannot be checked here, and that is an error, not a silent pass."""
    path = Path(path)
    for folder in (path, path.parent):
        if folder.is_dir() and (folder / "manifest.json").is_file() and (folder / "golden.npz").is_file():
            return folder
    raise ArtifactCheckError(
        f"{path}: no manifest.json and golden.npz beside it, so it cannot be checked on this machine; "
        "re-export it with baryir export, or pass --no-verify to run it unchecked"
    )


#: The largest golden input a check runs whole (exports write 128 x 160); larger ones are refused
#: before anything is read, so a check never needs more than a few hundred MB.
MAX_GOLDEN_PIXELS = 1024 * 1024


def _npy_header(archive: zipfile.ZipFile, name: str) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of one array of an .npz, read from its header alone."""
    try:
        with archive.open(name) as f:
            version = np.lib.format.read_magic(f)
            readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
            if version not in readers:
                raise ValueError(f"{name} has .npy format version {version}")
            shape, _, dtype = readers[version](f)
    except KeyError:
        raise ValueError(f"it has no {name}") from None
    return shape, dtype


def read_golden(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(input, output, degradation or None) of a ``golden.npz``, shapes and types checked before
    they are read: float arrays of one (1, 3, H, W) shape, H x W at most
    :data:`MAX_GOLDEN_PIXELS`, and (1, classes) probabilities where the model has a readout."""
    try:
        with zipfile.ZipFile(path) as archive:
            headers = {name: _npy_header(archive, f"{name}.npy") for name in ("input", "output")}
            has_degradation = "degradation.npy" in archive.namelist()
            if has_degradation:
                deg_shape, deg_dtype = _npy_header(archive, "degradation.npy")
                if len(deg_shape) != 2 or deg_shape[0] != 1 or not 2 <= deg_shape[1] <= MAX_DEGRADATION_CLASSES:
                    raise ValueError(f"its degradation array is {deg_shape}, not (1, classes)")
                if deg_dtype.kind != "f":
                    raise ValueError("its degradation array is not float")
    except (zipfile.BadZipFile, ValueError, OSError) as e:
        raise ArtifactCheckError(f"{path}: not a readable golden file ({e}); re-export the artifact") from None
    (shape, dtype), (out_shape, out_dtype) = headers["input"], headers["output"]
    if (
        len(shape) != 4
        or shape[:2] != (1, 3)
        or out_shape != shape
        or not all(d.kind == "f" for d in (dtype, out_dtype))
    ):
        raise ArtifactCheckError(f"{path}: golden arrays must be float (1, 3, H, W) pairs, not {shape} / {out_shape}")
    if shape[2] * shape[3] > MAX_GOLDEN_PIXELS:
        raise ArtifactCheckError(
            f"{path}: a {shape[2]}x{shape[3]} golden input is larger than checks run ({MAX_GOLDEN_PIXELS:,} pixels); "
            "re-export the artifact with this baryir"
        )
    try:
        with np.load(path, allow_pickle=False) as golden:
            degradation = golden["degradation"] if has_degradation else None
            return golden["input"].astype(np.float32), golden["output"], degradation
    except (ValueError, OSError, zipfile.BadZipFile) as e:
        raise ArtifactCheckError(f"{path}: not a readable golden file ({e}); re-export the artifact") from None


#: The most files a manifest may list (an export writes a handful; a package folder a few more).
MAX_RECORDED_FILES = 1000
_SHA256 = re.compile("[0-9a-f]{64}")


def check_files(folder: Path, manifest: object) -> None:
    """Every file the export recorded in ``manifest.json`` (``files``: name -> SHA-256) is in
    ``folder`` as it was written, before any runtime parses one: a damaged copy or an edited file
    is refused even where its output would still pass. This guards against damage, not against
    whoever can also rewrite the manifest (nothing is signed). Exports made before the digests
    were recorded have no ``files`` and are checked by their output alone, as before."""
    recorded = manifest.get("files") if isinstance(manifest, dict) else None
    if recorded is None:
        return
    if (
        not isinstance(recorded, dict)
        or len(recorded) > MAX_RECORDED_FILES
        or not all(isinstance(d, str) and _SHA256.fullmatch(d) for d in recorded.values())
    ):
        raise ArtifactCheckError(
            f"{folder / 'manifest.json'}: its files are not up to {MAX_RECORDED_FILES} names with SHA-256 digests; "
            "re-export the artifact"
        )
    for name, digest in recorded.items():
        try:
            path = artifact_inside(folder, name)
        except ValueError as e:
            raise ArtifactCheckError(str(e)) from None
        if not path.is_file():
            raise ArtifactCheckError(f"{path}: missing; its export wrote it, so copy the whole export folder again")
        if file_sha256(path) != digest:
            raise ArtifactCheckError(
                f"{path}: not the file its export wrote (its SHA-256 differs from manifest.json: damaged or "
                "changed since); copy the export folder again or re-export it"
            )


def verify_runner(runner: Runner, folder: str | Path) -> dict:
    """Run ``golden.npz``'s input through ``runner`` and compare with its output; one result row."""
    folder = Path(folder)
    manifest = read_manifest(folder / "manifest.json")
    image, reference, degradation = read_golden(folder / "golden.npz")
    row = compare(runner.run(np.ascontiguousarray(image)), reference)
    if degradation is not None:  # an artifact that lost its second output fails here
        ours = runner.run_degradation(np.ascontiguousarray(image)) if runner.degradation_classes else np.empty(0)
        row.update(compare_degradation(ours, degradation))
    exported = manifest.get("precision", "fp32")
    runs_at = runner.info.precision.split("+")[0]  # "int8+bf16": int8 kernels, bf16 float parts
    precision = budget_precision(exported, runs_at)
    if precision != exported:  # asked to run coarser than exported: that precision's budget
        tolerance = TOLERANCES[precision]
    else:  # the table's budget; the manifest may only tighten it
        tolerance = tolerance_for(precision, manifest.get("tolerance"))
    failures = check_tolerance(precision, [row], tolerance)
    if "degradation_max_abs" not in row:  # no second output: its bound does not apply, so it is not shown
        tolerance = {k: v for k, v in tolerance.items() if k != "degradation_max_abs"}
    return {
        "artifact": str(folder),
        "format": manifest.get("format"),
        "precision": precision,
        "backend": runner.info.backend,
        "device": runner.info.device,
        "runs_at": runner.info.precision,
        "psnr": row["psnr"],
        "max_abs": row["max_abs"],
        **({"degradation_max_abs": row["degradation_max_abs"]} if "degradation_max_abs" in row else {}),
        "tolerance": tolerance,
        "passed": not failures,
        "failures": failures,
        "cpu": describe_cpu(),
        "cause": None if not failures else likely_cause(manifest, runner),
    }


def likely_cause(manifest: dict, runner: Runner) -> str:
    """What most likely makes an artifact miss its reference here, and the fix: the backend's
    own diagnosis where it has one, else a runtime that does not reproduce the export."""
    built = manifest.get("libraries", {})
    return runner.miss_cause(manifest) or (
        f"the runtime here ({_runtime_version(runner.info.backend)}) does not reproduce the export "
        f"(made with {built}); re-export on this machine, or use --precision fp32"
    )


def _runtime_version(backend: str) -> str:
    fmt = BY_BACKEND.get(backend)
    package = fmt.runtime_package if fmt else backend
    return f"{package} {library_versions(package).get(package, '(version unknown)')}"


def _cache_file() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "baryir" / "verified.json"


def _cache_key(folder: Path, runner: Runner) -> str:
    """Artifact contents (SHA-256 of each file: a same-size swap with an old mtime is a new
    artifact), runtime, device, precision and CPU."""
    info = runner.info
    facts = [
        str(folder.resolve()),
        sorted(folder_digests(folder).items()),
        info.backend,
        info.device,
        info.precision,
        _runtime_version(info.backend),
        describe_cpu(),
    ]
    return hashlib.sha256(json.dumps(facts).encode()).hexdigest()


def check_on_load(runner: Runner, folder: str | Path) -> dict | None:
    """Verify once per artifact, runtime and machine; raise :class:`ArtifactCheckError` on a miss.
    Returns the result row, or None when a cached pass made the check unnecessary."""
    folder = Path(folder)
    key = _cache_key(folder, runner)
    cache_file = _cache_file()
    try:
        cache = read_json(cache_file)
    except (OSError, ValueError):
        cache = {}
    if isinstance(cache, dict) and key in cache:
        return None
    result = verify_runner(runner, folder)
    if not result["passed"]:
        raise ArtifactCheckError(
            f"{folder}: its output here misses its golden reference ({'; '.join(result['failures'])}): "
            f"{result['cause']} (--no-verify skips this check)"
        )
    cache = cache if isinstance(cache, dict) else {}
    cache[key] = {"artifact": str(folder), "psnr": result["psnr"], "runs_at": result["runs_at"]}
    try:
        atomic_write(cache_file, lambda tmp: Path(tmp).write_text(json.dumps(cache, indent=1)))
    except OSError:  # a read-only home only costs the check next time
        pass
    return result
