"""Writing files safely: outputs checked before any work, then replaced whole or not at all."""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path

__all__ = [
    "CHECKPOINTS",
    "FIGURES",
    "OutputError",
    "SAMPLES",
    "SUMMARIES",
    "atomic_write",
    "check_output",
]

# The kinds of file the package writes, by the extensions each may have.
CHECKPOINTS = (".npz",)  # models and training states
SUMMARIES = (".json",)
SAMPLES = (".npy",)
FIGURES = (".png", ".pdf", ".svg")


class OutputError(ValueError):
    """An output path that cannot or must not be written, with the reason."""


def _same(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def check_output(path, suffixes, inputs=(), outputs=()) -> Path:
    """Checks, before any work is done, that ``path`` can be written and should be.

    Args:
        path: The file to be written.
        suffixes: The extensions that fit what is written, e.g. ``(".npz",)``.
        inputs: Files the command reads: none may be overwritten.
        outputs: Other files the command writes: none may be the same file.

    Returns:
        ``path`` as a ``Path``.

    Raises:
        OutputError: If ``path`` has another extension, is a folder, lies in a
            folder that does not exist or cannot be written, or is one of
            ``inputs`` or ``outputs``.
    """
    path = Path(path)
    if path.suffix.lower() not in suffixes:
        raise OutputError(f"{path}: expected a file name ending in {' or '.join(suffixes)}")
    if path.is_dir():
        raise OutputError(f"{path}: is a folder, expected a file")
    folder = path.parent
    if not folder.is_dir():
        raise OutputError(f"{path}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise OutputError(f"{path}: cannot be written (permission denied)")
    for other in inputs:
        if other is not None and (
            _same(path, Path(other)) or path.resolve() == Path(other).resolve()
        ):
            raise OutputError(f"{path}: is also an input; writing it would destroy it")
    for other in outputs:
        if other is not None and path.resolve() == Path(other).resolve():
            raise OutputError(f"{path}: is written twice; give each output its own file")
    return path


def _mode(path: Path) -> int:
    """The permissions of the file at ``path``, or those a new file gets (the umask)."""
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


@contextlib.contextmanager
def atomic_write(path, mode: str = "wb"):
    """Opens a temporary file beside ``path`` that replaces it when the block ends.

    The file is flushed to disk (``fsync``) and renamed over ``path``
    (``os.replace``), with the permissions of the file it replaces or, for a new
    file, those the umask gives. If the block raises (an error, Ctrl-C), the
    temporary file is removed and ``path`` is left as it was.

    Args:
        path: The file to write.
        mode: ``"wb"`` or ``"w"``.

    Yields:
        The open temporary file.

    Example:
        >>> import json, pathlib, tempfile
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "summary.json"
        >>> with atomic_write(path, "w") as f:
        ...     json.dump({"epochs": 3}, f)
        >>> json.loads(path.read_text())
        {'epochs': 3}
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _mode(path))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
