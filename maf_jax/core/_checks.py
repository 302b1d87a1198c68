"""Input checks shared by the public entry points, with messages that name what was expected."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["as_float", "check_event", "positive_int"]


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
