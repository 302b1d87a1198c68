"""Masked Autoregressive Flows in JAX and Flax NNX, with the interface of zuko."""

from maf_jax import checkpoint, data
from maf_jax.autoregressive import (
    AutoregressiveTransform,
    FullPass,
    full_pass_inverse,
)
from maf_jax.chain import Chain
from maf_jax.compilation_cache import enable_compilation_cache
from maf_jax.distributions import DiagNormal, NormalizingFlow
from maf_jax.flows import MAF, NSF, MaskedAutoregressiveTransform, Order
from maf_jax.incremental import Incremental, incremental_inverse
from maf_jax.masks import MadeLayout, autoregressive_adjacency, ranks
from maf_jax.network import mlp
from maf_jax.nn import Mask, MaskedLinear, MaskedMLP
from maf_jax.pallas import PallasFullPass
from maf_jax.spline import MonotonicRQSTransform, RationalQuadraticSpline
from maf_jax.standardized import Standardized
from maf_jax.train import History, fit, mean_log_prob
from maf_jax.univariate import MonotonicAffineTransform

__version__ = "0.1.0"

__all__ = [
    "MAF",
    "AutoregressiveTransform",
    "Chain",
    "DiagNormal",
    "FullPass",
    "History",
    "Incremental",
    "MadeLayout",
    "Mask",
    "MaskedAutoregressiveTransform",
    "MaskedLinear",
    "MaskedMLP",
    "MonotonicAffineTransform",
    "MonotonicRQSTransform",
    "NSF",
    "NormalizingFlow",
    "Order",
    "PallasFullPass",
    "RationalQuadraticSpline",
    "Standardized",
    "autoregressive_adjacency",
    "checkpoint",
    "data",
    "enable_compilation_cache",
    "fit",
    "full_pass_inverse",
    "incremental_inverse",
    "mean_log_prob",
    "mlp",
    "ranks",
]
