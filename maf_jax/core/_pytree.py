"""Frozen dataclasses registered as JAX pytrees, without Flax."""

from __future__ import annotations

import dataclasses

import jax

__all__ = ["dataclass", "static"]


def dataclass(cls):
    """A frozen dataclass whose fields are pytree children unless marked ``static``.

    Static fields are part of the tree structure: ``jax.jit`` traces again when
    one of them changes, so they must be hashable.
    """
    return jax.tree_util.register_dataclass(dataclasses.dataclass(frozen=True)(cls))


def static(**kwargs):
    """A dataclass field that is tree structure, not a child."""
    return dataclasses.field(metadata=dict(static=True), **kwargs)
