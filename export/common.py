"""What every exporter shares: the export context, atomic artifact folders, manifest, golden."""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from baryir.data.photos import EXAMPLES_DIR, read_rgb
from baryir.formats import DEGRADATION_NAME, FORMATS, INPUT_NAME, OUTPUT_NAME, PAD_MULTIPLE
from baryir.io.atomic import fsync_path
from baryir.io.digest import folder_digests
from baryir.model import BaryNet
from baryir.model.rewrites import DEPLOYMENT_REWRITES
from baryir.runtimes.compare import TOLERANCES, compare, compare_degradation
from baryir.runtimes.environment import library_versions

from .wrapper import reference_outputs

#: Camera / preview resolutions (H, W) used as enumerated shapes and TensorRT profile points.
DEFAULT_SHAPES: tuple[tuple[int, int], ...] = ((256, 256), (480, 640), (720, 1280), (1080, 1920))
GOLDEN_EXAMPLE = EXAMPLES_DIR / "rain.png"


class ExportValidationError(RuntimeError):
    """An artifact missed its tolerance against PyTorch (or a static check); it was not written."""


def not_validated_here(reason: str, instead: str) -> dict:
    """Manifest facts for an artifact whose runtime is not on this machine: no numbers under its name."""
    return {
        "validation": [],
        "validated_here": False,
        "validation_note": f"not validated here ({reason}); checked instead: {instead}. "
        "Run `baryir verify` on the target device.",
    }


@dataclass
class ExportContext:
    """The model being exported and the facts every manifest repeats."""

    model: BaryNet
    source: str  # checkpoint path or shipped name
    source_sha256: str
    shapes: tuple[tuple[int, int], ...] = DEFAULT_SHAPES
    options: dict = field(default_factory=dict)
    #: exact rewrites applied to the model's graph (those an INT8 model was quantized with are
    #: applied already and skipped)
    rewrites: tuple[str, ...] = DEPLOYMENT_REWRITES
    #: work the artifacts of one export share (PyTorch references, traced graphs); a context
    #: copied with ``dataclasses.replace`` shares it, so keys name everything they depend on
    shared: dict = field(default_factory=dict, compare=False, repr=False)

    def reference(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """:func:`reference_outputs` of ``self.model`` on ``image``, computed once per image
        however many artifacts are checked against it."""
        key = ("reference", tuple(image.shape), hashlib.sha256(image.numpy().tobytes()).hexdigest())
        if key not in self.shared:
            self.shared[key] = reference_outputs(self.model, image)
        return self.shared[key]


def golden_input() -> torch.Tensor:
    """A real degraded image (bundled rain example), cropped to 128 x 160: (1, 3, H, W)."""
    return read_rgb(GOLDEN_EXAMPLE)[None, :, :128, :160].contiguous()


def export_versions(*packages: str) -> dict[str, str]:
    """What a manifest records: installed versions of torch, numpy and the given distributions
    (missing ones are left out)."""
    return library_versions("torch", "numpy", *packages)


@contextmanager
def atomic_artifact(folder: Path) -> Iterator[Path]:
    """Yield an empty temporary folder; on success its files replace ``folder``'s, else it is
    removed. Files are renamed in one by one, the manifest last, so a reader that finds a
    manifest finds a complete artifact."""
    folder.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".export-", dir=folder.parent))
    try:
        yield tmp
        for file in (f for f in tmp.rglob("*") if f.is_file()):
            fsync_path(file)  # the data is on disk before any name points at it
        entries = sorted(tmp.iterdir(), key=lambda p: p.name == "manifest.json")
        for entry in entries:
            dest = folder / entry.name
            if dest.is_dir():
                shutil.rmtree(dest)
            entry.replace(dest)
        fsync_path(folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_golden(folder: Path, ctx: ExportContext) -> dict:
    """Save ``golden.npz`` (input and the PyTorch FP32 outputs: the restored image, and the
    degradation probabilities where the model has a readout) for on-device validation."""
    image = golden_input()
    restored, degradation = ctx.reference(image)
    arrays = {"input": image.numpy(), "output": restored.numpy()}
    if degradation is not None:
        arrays["degradation"] = degradation.numpy()
    np.savez_compressed(folder / "golden.npz", **arrays)
    return {"file": "golden.npz", "input_shape": list(image.shape), "outputs": [k for k in arrays if k != "input"]}


def write_manifest(
    folder: Path, ctx: ExportContext, fmt: str, precision: str, artifact: str, libraries: dict[str, str], **extra
) -> dict:
    """Write ``manifest.json`` describing the artifact and how to feed it."""
    outputs = [{"name": OUTPUT_NAME, "layout": "NCHW", "color": "RGB", "range": [0.0, 1.0], "dtype": "float32"}]
    readout = ctx.model.readout
    if readout is not None:
        outputs.append(degradation_output(readout.classes, readout.latents))
    manifest = {
        "format": fmt,
        "precision": precision,
        "artifact": artifact,
        "model_config": ctx.model.config.to_dict(),
        "inputs": [{"name": INPUT_NAME, "layout": "NCHW", "color": "RGB", "range": [0.0, 1.0], "dtype": "float32"}],
        "outputs": outputs,
        "pad_multiple": PAD_MULTIPLE,
        "shapes": [list(s) for s in ctx.shapes],
        "source": {"checkpoint": ctx.source, "sha256": ctx.source_sha256},
        "libraries": libraries,
        "tolerance": TOLERANCES.get(precision, {}),
        "files": folder_digests(folder, ("manifest.json", *FORMATS[fmt].built_on_device)),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **extra,
    }
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def degradation_output(classes: tuple[str, ...], latents: tuple[str, ...]) -> dict:
    """The manifest's entry for the second output: probabilities of the readout's classes."""
    return {
        "name": DEGRADATION_NAME,
        "layout": "NC",
        "classes": list(classes),
        "range": [0.0, 1.0],
        "dtype": "float32",
        "from": f"degradation readout on the encoder's {', '.join(latents)} (no decoder)",
    }


def validation_sizes(large: bool) -> list[tuple[int, int]]:
    """Sizes (H, W) every artifact is checked at: square, landscape, portrait, and >= 1024 px."""
    sizes = [(64, 64), (96, 160), (200, 128), (128, 1024)]
    return sizes + [(2048, 2048)] if large else sizes


def validate_runner(
    ctx: ExportContext, runner, sizes: list[tuple[int, int]], analysis=None, contrast=None
) -> list[dict]:
    """Rows of ``runner``'s outputs against the PyTorch reference at ``sizes`` (the comparator);
    with a readout, each row also holds the largest difference of the degradation output, over
    ``runner`` and a second graph for it (``analysis``). ``contrast``, a runner of the same
    artifact at another precision (or the one-line reason it could not be opened here), is
    reported beside each row without deciding it."""
    rows = []
    for h, w in sizes:
        image = validation_image(h, w)
        restored, degradation = ctx.reference(image)
        row = {"size": [h, w], **compare(runner.run(image.numpy()), restored.numpy())}
        if degradation is not None:
            row.update(compare_degradation(runner.run_degradation(image.numpy()), degradation.numpy()))
            if analysis is not None:  # a second graph for the same output: the row keeps the larger gap
                found = compare_degradation(analysis.run_degradation(image.numpy()), degradation.numpy())
                row["degradation_max_abs"] = max(row["degradation_max_abs"], found["degradation_max_abs"])
        if isinstance(contrast, str):
            row["contrast"] = {"error": contrast}
        elif contrast is not None:
            found = compare(contrast.run(image.numpy()), restored.numpy())
            row["contrast"] = {"precision": contrast.info.precision, "max_abs": found["max_abs"], "psnr": found["psnr"]}
        rows.append(row)
    return rows


def validation_image(h: int, w: int) -> torch.Tensor:
    """A reproducible real test input of size h x w: the bundled rain photo, mirrored to size."""
    base = read_rgb(GOLDEN_EXAMPLE).numpy()
    pad = ((0, 0), (0, max(0, h - base.shape[1])), (0, max(0, w - base.shape[2])))
    return torch.from_numpy(np.pad(base, pad, mode="symmetric")[None, :, :h, :w].copy())
