"""Restore image files with any runner, as a batch that loses nothing.

Every output path is planned before anything is written: an output that is one of the inputs,
or that two inputs would both write, is an error naming both files, and those inputs are not
restored (the others are). Each file then gets its own result (the written path with the
conversions the codec made, or the reason it failed); pixels, bit depth, alpha and metadata
go through :mod:`baryir.io.images`, writes are atomic.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np

from baryir.io.atomic import TMP_SUFFIX, atomic_write
from baryir.io.images import IMAGE_CODECS, IMAGE_SUFFIXES, ImageError, Picture, read_image, write_image

from .base import Runner
from .processing import Tiling, auto_tiling

#: Messages by which PyTorch, ONNX Runtime and OpenVINO report an allocation that failed.
_OUT_OF_MEMORY = ("out of memory", "can't allocate memory", "failed to allocate", "bad_alloc", "bad allocation")


@dataclass
class RestoreResult:
    """What happened to one input."""

    input: str
    output: str | None = None
    error: str | None = None
    notes: list[str] = field(default_factory=list)
    #: the degradation readout's probabilities, when the photo was analysed (``--skip-clean``)
    scores: dict[str, float] | None = None


def expand_inputs(inputs: list[str]) -> tuple[list[Path], list[tuple[Path, str]], list[str]]:
    """(images to restore, (entry, why) skipped, folders and patterns that gave
    no image): files, folders (their images, sorted; not searched below) and glob patterns, in
    order, each file once. A folder's other entries, and a file named again (itself, or through a
    link), are skipped and returned so the caller can mention them (hidden ``.tmp`` leftovers of
    a write are ignored)."""
    found: list[Path] = []
    skipped: list[tuple[Path, str]] = []
    unmatched: list[str] = []
    for item in inputs:
        path = Path(item)
        before = len(found)
        if path.is_dir():
            for p in sorted(path.iterdir()):
                if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES:
                    found.append(p)
                elif p.is_dir():
                    skipped.append((p, "a folder, not searched (give it as an input, or a pattern like DIR/**/*.png)"))
                elif not p.is_file():
                    skipped.append((p, "not a regular file"))
                elif not (p.name.startswith(".") and p.name.endswith(TMP_SUFFIX)):
                    skipped.append((p, "not an image suffix"))
        elif any(ch in item for ch in "*?["):
            found += sorted(Path(p) for p in glob.glob(item, recursive=True))
        else:
            found.append(path)
        if len(found) == before:
            unmatched.append(item)
    first: dict[Path, Path] = {}
    for p in found:
        earlier = first.setdefault(p.resolve(), p)
        if earlier is not p:
            skipped.append((p, f"the same file as {earlier} (each file is read once)"))
    return list(first.values()), skipped, unmatched


def _stat(path: Path) -> os.stat_result | None:
    try:
        return path.stat()
    except OSError:
        return None


def plan_outputs(
    inputs: list[Path], out_dir: Path, suffix: str | None = None, name_suffix: str = ""
) -> tuple[list[tuple[Path, Path]], list[RestoreResult]]:
    """(input, output) jobs and the inputs refused because their output clashes.

    The output is ``out_dir / (stem + name_suffix + (suffix or the input's suffix))``.
    """
    outputs = {p: out_dir / f"{p.stem}{name_suffix}{suffix or p.suffix}" for p in inputs}
    by_path = {p.resolve(): p for p in inputs}
    by_inode = {(s.st_dev, s.st_ino): p for p in inputs if (s := _stat(p))}  # hard links too
    refused: dict[Path, str] = {}
    for p, out in outputs.items():
        stat = _stat(out)
        victim = by_path.get(out.resolve()) or (by_inode.get((stat.st_dev, stat.st_ino)) if stat else None)
        if victim is not None:
            what = "the input itself" if victim == p else f"the input {victim}"
            refused[p] = f"its output {out} would overwrite {what}; choose another -o folder or a --suffix"
    by_output: dict[Path, list[Path]] = {}
    for p, out in outputs.items():
        by_output.setdefault(out.resolve(), []).append(p)
    for group in by_output.values():
        if len(group) > 1:
            for p in group:
                others = ", ".join(str(q) for q in group if q != p)
                refused.setdefault(p, f"{others} would write the same output {outputs[p]}; restore them separately")
    jobs = [(p, outputs[p]) for p in inputs if p not in refused]
    return jobs, [RestoreResult(str(p), error=refused[p]) for p in inputs if p in refused]


T = TypeVar("T")


def with_memory_fallback(call: Callable[[np.ndarray, Tiling | None], T], rgb: np.ndarray, tiling: Tiling | None) -> T:
    """``call(rgb, tiling)``; when memory runs out, retry with tiles half the size (down to 128 px)."""
    while True:  # each retry halves the tile, so this ends
        try:
            return call(rgb, tiling)
        except (MemoryError, RuntimeError) as e:
            if isinstance(e, RuntimeError) and not any(m in str(e).lower() for m in _OUT_OF_MEMORY):
                raise
            side = tiling.tile if tiling else max(rgb.shape[:2])
            smaller = (side // 2) // 8 * 8
            if smaller < 128:
                raise MemoryError(f"out of memory even with {side}-pixel tiles") from None
            tiling = Tiling(smaller, min(tiling.overlap if tiling else 32, smaller // 4))


def read_input(path: Path) -> Picture | str:
    """The picture of an input file, or why it cannot be read (this file's error)."""
    try:
        return read_image(path)
    except FileNotFoundError:
        return "file not found"
    except (ImageError, OSError) as e:
        return str(e)


def tiling_for(picture: Picture, tiling: Tiling | None, auto: tuple[int, float] | None) -> Tiling | None:
    """``tiling``, or with ``auto=(model dim, budget MB)`` tiles for images whose activations
    would not fit the budget."""
    if tiling is None and auto is not None:
        return auto_tiling(picture.rgb.shape[0], picture.rgb.shape[1], auto[0], auto[1])
    return tiling


def label_of(scores: dict[str, float]) -> str:
    """The class the readout gives the highest probability."""
    return max(scores, key=scores.__getitem__)


def restore_file(
    runner: Runner,
    path: Path,
    out_path: Path,
    tiling: Tiling | None = None,
    auto: tuple[int, float] | None = None,
    skip_clean: bool = False,
) -> RestoreResult:
    """Restore one planned job; every failure (unreadable input, memory, a folder that cannot be
    written, a full disk, a format that cannot hold the picture) is this file's result.

    Without ``tiling``, ``auto=(model dim, budget MB)`` tiles images whose activations would
    not fit the budget. With ``skip_clean``, a photo the degradation readout reads as clean is
    not restored: the file is copied through byte for byte (or its pixels written unchanged in
    the ``--format`` asked for)."""
    if IMAGE_CODECS.get(out_path.suffix.lower()) is None:
        return RestoreResult(str(path), error=f"cannot write {out_path.suffix!r}; use --image-format png")
    picture = read_input(path)
    if isinstance(picture, str):
        return RestoreResult(str(path), error=picture)
    tiling = tiling_for(picture, tiling, auto)
    scores = None
    try:
        if skip_clean:
            scores = with_memory_fallback(runner.analyze, picture.rgb, tiling)
            if label_of(scores) == "clean":
                return _copy_through(path, picture, out_path, scores)
        restored = with_memory_fallback(runner.restore, picture.rgb, tiling)
    except MemoryError as e:
        return RestoreResult(str(path), error=f"{e}; try a smaller --tile or --memory-mb")
    except ValueError as e:  # the model's answer for this photo is unusable (not finite, ...)
        return RestoreResult(str(path), error=str(e))
    result = dataclasses.replace(picture, rgb=restored, notes=[])
    try:
        notes = write_image(result, out_path)
    except ImageError as e:
        return RestoreResult(str(path), error=str(e))
    except OSError as e:
        return RestoreResult(str(path), error=f"cannot write {out_path} ({e.strerror or e})")
    except Exception as e:  # a codec bug must cost this file only, never the rest of the batch
        return RestoreResult(str(path), error=f"cannot write {out_path} ({type(e).__name__}: {e})")
    return RestoreResult(str(path), str(out_path), notes=picture.notes + notes, scores=scores)


def _copy_through(path: Path, picture: Picture, out_path: Path, scores: dict[str, float]) -> RestoreResult:
    """The output of a photo read as clean: the input's bytes, or its unchanged pixels in
    another format."""
    said = f"read as clean ({scores['clean']:.2f}): not restored, "
    try:
        if out_path.suffix.lower() == path.suffix.lower():
            atomic_write(out_path, lambda tmp: shutil.copyfile(path, tmp))
            return RestoreResult(str(path), str(out_path), notes=[said + "copied unchanged"], scores=scores)
        notes = write_image(dataclasses.replace(picture, notes=[]), out_path)
    except ImageError as e:
        return RestoreResult(str(path), error=str(e), scores=scores)
    except OSError as e:
        return RestoreResult(str(path), error=f"cannot write {out_path} ({e.strerror or e})", scores=scores)
    return RestoreResult(str(path), str(out_path), notes=[said + "pixels written unchanged", *notes], scores=scores)


@dataclass
class Analysis:
    """What the degradation readout says about one input, or why it could not say."""

    input: str
    label: str | None = None
    scores: dict[str, float] = field(default_factory=dict)
    error: str | None = None


def analyze_file(
    runner: Runner, path: Path, tiling: Tiling | None = None, auto: tuple[int, float] | None = None
) -> Analysis:
    """Analyse one input file; an unreadable file or memory that runs out is this file's error."""
    picture = read_input(path)
    if isinstance(picture, str):
        return Analysis(str(path), error=picture)
    try:
        scores = with_memory_fallback(runner.analyze, picture.rgb, tiling_for(picture, tiling, auto))
    except MemoryError as e:
        return Analysis(str(path), error=f"{e}; try a smaller --tile or --memory-mb")
    except ValueError as e:  # the model's answer for this photo is unusable (not finite, ...)
        return Analysis(str(path), error=str(e))
    return Analysis(str(path), label_of(scores), scores)
