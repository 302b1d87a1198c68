"""The univariate transforms a file or the command line names, and their parameter shapes.

An entry is ``{"name": "affine"}`` (``MonotonicAffineTransform``) or ``{"name":
"spline", "bins": K, "bound": B, "slope": s}`` (``RationalQuadraticSpline``). This
module is the one place that says which parameters each takes; it needs no JAX, so
the torch side of zuko interop reads it too.
"""

from __future__ import annotations

import math

__all__ = ["UNIVARIATES", "parameter_count", "parameter_shapes"]

# name -> the options of its entry
UNIVARIATES = {"affine": (), "spline": ("bins", "bound", "slope")}


def parameter_shapes(entry: dict) -> tuple[tuple[int, ...], ...]:
    """Per-feature parameter shapes of an entry.

    ``((), ())`` (shift, log-scale) for the affine map; ``((K,), (K,), (K - 1,))``
    (widths, heights, inner derivatives) for a spline of ``K`` bins.
    """
    if entry["name"] == "affine":
        return (), ()
    bins = entry["bins"]
    return (bins,), (bins,), (bins - 1,)


def parameter_count(entry: dict) -> int:
    """The number of univariate parameters per feature."""
    return sum(math.prod(shape) for shape in parameter_shapes(entry))
