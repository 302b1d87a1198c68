"""Atomic file writes: a file is replaced whole or left as it was."""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path

__all__ = ["atomic_write"]


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
