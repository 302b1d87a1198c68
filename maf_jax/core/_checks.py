"""Input checks shared by the public entry points, with messages that name what was expected."""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["as_float", "check_event", "deprecated", "positive_int"]

# Frames in these packages are not the user's: a warning points past them.
_INTERNAL = tuple(
    f"{Path(module.__file__).parent}{os.sep}"
    for module in (sys.modules[__name__.split(".")[0]], jax)
)


def as_float(x) -> jax.Array:
    """Returns ``x`` as a JAX array, integers promoted to the default float dtype."""
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.result_type(float))
    return x


def check_event(x, size: int, name: str, what: str = "features") -> jax.Array:
    """Returns ``x`` as a float array after checking that its shape is ``(*, size)``."""
    x = as_float(x)
    if x.ndim == 0 or x.shape[-1] != size:
        raise ValueError(
            f"expected {name} of shape (*, {size}) ({what}={size}), got shape {x.shape}"
        )
    return x


def positive_int(value, name: str, minimum: int = 1) -> int:
    """Returns ``value`` as an int after checking that it is an integer ``>= minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        kind = "a positive" if minimum == 1 else "a non-negative"
        raise ValueError(f"{name} must be {kind} integer, got {value!r}")
    return int(value)


def deprecated(message: str) -> None:
    """Emits a ``DeprecationWarning`` attributed to the user's call.

    The warning points at the first frame outside ``maf_jax``, Flax and JAX, so that
    it names the user's line however deep the call: ``MAF(...)``, a transform built
    inside a flow, or ``maf_jax.checkpoint.load``.
    """
    internal = (*_INTERNAL, *_flax_paths())
    frame, level = sys._getframe(0), 1
    while frame is not None and frame.f_code.co_filename.startswith(internal):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, DeprecationWarning, stacklevel=level)


def _flax_paths() -> tuple[str, ...]:
    flax = sys.modules.get("flax")  # imported by whoever builds a module, never here
    return () if flax is None else (f"{Path(flax.__file__).parent}{os.sep}",)
