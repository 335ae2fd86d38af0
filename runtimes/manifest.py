"""``manifest.json`` read as untrusted input: every field the runtime acts on is checked for its
type and range before anything uses it, so a damaged or hand-edited manifest is a one-line error
naming the file and the field, never a crash deep in a runner."""

from __future__ import annotations

from pathlib import Path

from baryir.formats import FORMATS, PRECISIONS
from baryir.io.text import clip, read_json

#: The widest model a manifest may describe (the published model has ``dim`` 48).
MAX_MODEL_DIM = 4096


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


#: Each field the runtime reads: (required, what it must be, the check).
_FIELDS = {
    "format": (True, f"one of {', '.join(FORMATS)}", lambda v: isinstance(v, str) and v in FORMATS),
    "artifact": (True, "a file name", lambda v: isinstance(v, str) and bool(v)),
    "precision": (True, f"one of {', '.join(PRECISIONS)}", lambda v: isinstance(v, str) and v in PRECISIONS),
    "model_config": (
        True,
        f"a model configuration with an integer dim of 1 to {MAX_MODEL_DIM}",
        lambda v: isinstance(v, dict) and _is_int(v.get("dim")) and 1 <= v["dim"] <= MAX_MODEL_DIM,
    ),
    "outputs": (True, "a list of outputs", lambda v: isinstance(v, list)),
    "analysis_artifact": (False, "a file name", lambda v: isinstance(v, str) and bool(v)),
    "weight_levels": (
        False,
        "two integers, low < 0 < high, within -128..127",
        lambda v: isinstance(v, list) and len(v) == 2 and all(map(_is_int, v)) and -128 <= v[0] < 0 < v[1] <= 127,
    ),
    "io": (False, "image or tensor", lambda v: v in ("image", "tensor")),
}


def read_manifest(path: str | Path) -> dict:
    """The manifest at ``path`` (bounded read, :func:`~baryir.io.text.read_json`) with the fields
    the runtime reads checked; anything else is a ``ValueError`` naming the file and the fix."""
    path = Path(path)
    manifest = read_json(path)
    if not isinstance(manifest, dict):
        raise ValueError(f"{path}: not a baryir manifest (a JSON object); re-export the artifact")
    for key, (required, expected, valid) in _FIELDS.items():
        if key not in manifest:
            if required:
                raise ValueError(f"{path}: has no {key}; re-export the artifact with baryir export")
        elif not valid(manifest[key]):
            raise ValueError(f"{path}: its {key} {clip(manifest[key])} is not {expected}; re-export the artifact")
    return manifest
