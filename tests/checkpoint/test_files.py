"""Atomic writes: every file the package writes is replaced whole or not at all."""

import os
import stat
from pathlib import Path

import pytest

import maf_jax
from maf_jax.checkpoint.files import atomic_write

PACKAGE = Path(maf_jax.__file__).parent


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "out.json"
    path.write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_write(path, "w") as f:
            f.write("half")
            raise KeyboardInterrupt
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


@pytest.mark.parametrize(
    "umask,existing,expected", [(0o022, None, 0o644), (0o077, None, 0o600), (0o022, 0o640, 0o640)]
)
def test_written_files_follow_the_umask_or_keep_their_mode(tmp_path, umask, existing, expected):
    path = tmp_path / "out.bin"
    if existing is not None:
        path.write_bytes(b"old")
        path.chmod(existing)
    old = os.umask(umask)
    try:
        with atomic_write(path) as f:
            f.write(b"new")
    finally:
        os.umask(old)
    assert path.read_bytes() == b"new"
    assert stat.S_IMODE(path.stat().st_mode) == expected


def test_every_file_the_package_writes_goes_through_atomic_write():
    for path in PACKAGE.rglob("*.py"):
        if path.relative_to(PACKAGE) == Path("checkpoint", "files.py"):
            continue
        text = path.read_text()
        for call in ("tempfile.", "os.replace", "savefig(path", ".write_text(", ".write_bytes("):
            assert call not in text, f"{path.relative_to(PACKAGE)} writes with {call}"
