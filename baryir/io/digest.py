"""SHA-256 digests of files: what ties an export to its checkpoint, and what lets an export
folder show that its files are the ones its export wrote."""

from __future__ import annotations

import hashlib
from pathlib import Path


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file, read in 1 MB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def folder_digests(folder: Path, leave_out: tuple[str, ...] = ()) -> dict[str, str]:
    """``{path relative to folder (POSIX): SHA-256}`` of every file under ``folder`` (a package
    folder such as ``model.mlpackage`` file by file), in name order, but those in ``leave_out``."""
    files = sorted(f for f in folder.rglob("*") if f.is_file())
    return {name: file_sha256(f) for f in files if (name := f.relative_to(folder).as_posix()) not in leave_out}
