"""Univariate transforms to and from the entries that files name (``entries.py``)."""

from __future__ import annotations

import dataclasses

from maf_jax.bijections.spline import RationalQuadraticSpline
from maf_jax.bijections.univariate import MonotonicAffineTransform

__all__ = ["entry_of", "univariate_of"]


def entry_of(univariate) -> dict:
    """The entry of a built-in univariate transform.

    Raises:
        ValueError: For any other, naming it.
    """
    if univariate is MonotonicAffineTransform:
        return {"name": "affine"}
    if isinstance(univariate, RationalQuadraticSpline):
        return {"name": "spline", **dataclasses.asdict(univariate)}
    raise ValueError(
        f"univariate {univariate!r} is not a built-in one: MonotonicAffineTransform "
        "(MAF) or maf_jax.RationalQuadraticSpline (NSF)"
    )


def univariate_of(entry: dict):
    """The univariate transform of an entry.

    Raises:
        ValueError: For spline settings ``RationalQuadraticSpline`` refuses.
    """
    if entry["name"] == "affine":
        return MonotonicAffineTransform
    return RationalQuadraticSpline(entry["bins"], entry["bound"], entry["slope"])
