"""The one atomic write of the project, and the check that no output replaces an input.

A write goes to a hidden temporary file beside the target (``.NAME.XXXX.tmp``), is flushed
and fsynced, gets the mode the umask gives new files, and is renamed onto the target; the
folder is fsynced after the rename. A crash or kill at any point leaves either the old file
or the new one, never half of one; a leftover ``.tmp`` file is never listed as an image.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

TMP_SUFFIX = ".tmp"


def default_file_mode() -> int:
    """The mode ``open()`` would give a new file under the current umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def fsync_path(path: str | Path) -> None:
    """fsync a file or a folder (a folder's entry list holds the rename)."""
    flags = os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if Path(path).is_dir() else 0)
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    except OSError:  # some file systems cannot fsync a folder; the data itself was synced
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | Path, write: Callable[[str], object]) -> Path:
    """Call ``write(tmp_path)``, then fsync and rename onto ``path``; nothing half-written on failure."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, default_file_mode())  # mkstemp creates 0600
        fsync_path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_path(path.parent)
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Atomically write ``data`` to ``path``."""
    return atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def same_file(a: str | Path, b: str | Path) -> bool:
    """True when ``a`` and ``b`` name one file (same path, a symlink or a hard link to it)."""
    a, b = Path(a), Path(b)
    if a.resolve() == b.resolve():
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist yet
        return False


def _inode(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _hard_linked_into(out: Path, folder: Path, limit: int = 100_000) -> Path | None:
    """A file under ``folder`` that is ``out`` by another name (a hard link), if any."""
    inode = _inode(out)
    if inode is None or out.stat().st_nlink < 2:
        return None
    for i, candidate in enumerate(folder.rglob("*")):
        if i >= limit:
            break
        if candidate.is_file() and _inode(candidate) == inode:
            return candidate
    return None


def refuse_wrong_kind(path: str | Path, folder: bool, option: str) -> None:
    """Raise ``ValueError`` before any work if ``path`` cannot be written as a file (``folder``
    False) or created as a folder: it exists as the other kind, a parent of it is a file, or it
    is ``-`` (standard output, where the command prints its table)."""
    if str(path) == "-":  # the convention for standard output, which carries the command's table here
        raise ValueError(f"{option} -: name a file (standard output already carries the table)")
    path = Path(path)
    if path.exists() and path.is_dir() != folder:
        what = "a folder" if path.is_dir() else "a file"
        wanted = "a folder (created if missing)" if folder else "a file path"
        raise ValueError(f"{path}: is {what}; {option} takes {wanted}")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"{path}: its parent {parent} is a file; choose another {option}")
            break


def refuse_overwriting_inputs(inputs: Iterable[str | Path], outputs: Iterable[str | Path]) -> None:
    """Raise ``ValueError`` naming both if an output would replace what the command reads: an
    input file (same path, a symlink or a hard link to it), an existing file inside an input
    folder (or a hard link of one), or an input lying inside an output folder."""
    inputs = [Path(p) for p in inputs if p is not None and str(p) != ""]
    for out in outputs:
        if out is None:
            continue
        out = Path(out)
        for src in inputs:
            inside = out.is_dir() and src.resolve().is_relative_to(out.resolve())
            if same_file(src, out) or inside:
                raise ValueError(f"{out}: would overwrite the input {src}; choose another output path")
            if src.is_dir() and out.exists() and not out.is_dir():
                linked = out if out.resolve().is_relative_to(src.resolve()) else _hard_linked_into(out, src)
                if linked is not None:
                    raise ValueError(
                        f"{out}: would overwrite {linked}, in the input folder {src}; choose another output path"
                    )
