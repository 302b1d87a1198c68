"""JAX's persistent compilation cache in a user cache folder: compile once per machine."""

from __future__ import annotations

import os
from pathlib import Path

import jax

__all__ = ["default_cache_dir", "enable_compilation_cache"]


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/maf-jax/jax``, or ``~/.cache/maf-jax/jax``."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "maf-jax" / "jax"


def enable_compilation_cache(path=None, min_compile_time: float = 0.0) -> Path:
    """Keeps compiled programs on disk, so that later processes skip their compile.

    This sets JAX's global configuration (``jax_compilation_cache_dir``) for the
    whole process: call it once, before anything is compiled. maf_jax never calls
    it on import; the ``maf-jax`` command calls it unless told not to.

    Args:
        path: The cache folder; ``default_cache_dir()`` if ``None``.
        min_compile_time: Programs that compile faster than this (seconds) are
            not stored; every one by default, since reading even the small ones back
            is faster (``maf-jax sample`` at D=64: 0.17 s of compile in a second
            process, 0.49 s when programs under 0.1 s were compiled anew,
            ``benchmarks/compile_cache.py``).

    Returns:
        The cache folder.
    """
    path = Path(path or default_cache_dir()).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", min_compile_time)
    return path
