"""Masked Autoregressive Flows in JAX and Flax NNX, with the interface of zuko.

The names below are what a user of the flows needs; the layers they come from are
subpackages, each importing only from those before it:

- ``maf_jax.core``: graphs, orders, degrees and masks, the network, the inverse's
  schedule (NumPy and ``jax.numpy``);
- ``maf_jax.inverses``: the incremental, full-pass and Pallas inverses, their
  implicit derivative and their batching rule;
- ``maf_jax.bijections`` and ``maf_jax.distributions``: pytrees with no Flax state;
- ``maf_jax.nn`` and ``maf_jax.flows``: the Flax NNX modules that hold parameters;
- ``maf_jax.checkpoint``: files (models, training states, untrusted arrays);
- ``maf_jax.data`` and ``maf_jax.train``: data sets, ``fit`` and its machinery,
  ``maf_jax.distributed`` (an alias of ``maf_jax.train.distributed``);
- ``maf_jax.interop``: zuko models in and out;
- ``maf_jax.cli``: the ``maf-jax`` command.

Names are imported on first use, so ``import maf_jax`` alone loads neither JAX nor
Flax (the torch side of ``maf_jax.interop.zuko_file`` relies on it).
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

from maf_jax._lazy import exports

try:
    __version__ = version("maf-jax")
except PackageNotFoundError:  # a source tree on sys.path, not installed
    __version__ = "0+unknown"

__all__ = [
    "AutoregressiveTransform",
    "Bijection",
    "Chain",
    "DiagNormal",
    "FullPass",
    "History",
    "Incremental",
    "Interrupted",
    "Inverter",
    "MAF",
    "MAFMoG",
    "MaskedAutoregressiveTransform",
    "MonotonicAffineTransform",
    "MonotonicRQSTransform",
    "NSF",
    "NormalizingFlow",
    "PallasFullPass",
    "RationalQuadraticSpline",
    "Standardized",
    "UnivariateTransform",
    "__version__",
    "checkpoint",
    "data",
    "distributed",
    "enable_compilation_cache",
    "fit",
    "interop",
    "mean_log_prob",
]

# public name -> the module that defines it (a module: itself)
_EXPORTS = {
    "MAF": "maf_jax.flows",
    "MAFMoG": "maf_jax.flows",
    "NSF": "maf_jax.flows",
    "MaskedAutoregressiveTransform": "maf_jax.flows",
    "Standardized": "maf_jax.flows",
    "AutoregressiveTransform": "maf_jax.bijections",
    "Chain": "maf_jax.bijections",
    "MonotonicAffineTransform": "maf_jax.bijections",
    "MonotonicRQSTransform": "maf_jax.bijections",
    "RationalQuadraticSpline": "maf_jax.bijections",
    "FullPass": "maf_jax.bijections",
    "Incremental": "maf_jax.inverses",
    "PallasFullPass": "maf_jax.inverses",
    "Bijection": "maf_jax.protocols",
    "Inverter": "maf_jax.protocols",
    "UnivariateTransform": "maf_jax.protocols",
    "DiagNormal": "maf_jax.distributions",
    "NormalizingFlow": "maf_jax.distributions",
    "History": "maf_jax.train",
    "Interrupted": "maf_jax.train",
    "fit": "maf_jax.train",
    "mean_log_prob": "maf_jax.train",
    "enable_compilation_cache": "maf_jax.train",
    "checkpoint": "maf_jax.checkpoint",
    "data": "maf_jax.data",
    "distributed": "maf_jax.train.distributed",
    "interop": "maf_jax.interop",
}
__getattr__, __dir__ = exports(__name__, _EXPORTS)

if TYPE_CHECKING:  # the same names, for type checkers and editors
    from maf_jax import checkpoint, data, interop
    from maf_jax.bijections import (
        AutoregressiveTransform,
        Chain,
        FullPass,
        MonotonicAffineTransform,
        MonotonicRQSTransform,
        RationalQuadraticSpline,
    )
    from maf_jax.distributions import DiagNormal, NormalizingFlow
    from maf_jax.flows import MAF, NSF, MAFMoG, MaskedAutoregressiveTransform, Standardized
    from maf_jax.inverses import Incremental, PallasFullPass
    from maf_jax.protocols import Bijection, Inverter, UnivariateTransform
    from maf_jax.train import (
        History,
        Interrupted,
        distributed,
        enable_compilation_cache,
        fit,
        mean_log_prob,
    )
