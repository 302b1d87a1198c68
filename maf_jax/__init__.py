"""Masked Autoregressive Flows in JAX and Flax NNX, with the interface of zuko."""

from maf_jax import checkpoint, data
from maf_jax.autoregressive import AutoregressiveTransform, full_pass_inverse, incremental_inverse
from maf_jax.chain import Chain
from maf_jax.distributions import DiagNormal, NormalizingFlow
from maf_jax.flows import MAF, MaskedAutoregressiveTransform, Order
from maf_jax.masks import MadeLayout, autoregressive_adjacency, ranks
from maf_jax.nn import Mask, MaskedLinear, MaskedMLP, mlp
from maf_jax.standardize import Standardized
from maf_jax.train import History, fit, mean_log_prob
from maf_jax.univariate import MonotonicAffineTransform

__version__ = "0.1.0"

__all__ = [
    "MAF",
    "AutoregressiveTransform",
    "Chain",
    "DiagNormal",
    "MadeLayout",
    "Mask",
    "MaskedAutoregressiveTransform",
    "MaskedLinear",
    "MaskedMLP",
    "MonotonicAffineTransform",
    "NormalizingFlow",
    "History",
    "Standardized",
    "checkpoint",
    "data",
    "fit",
    "mean_log_prob",
    "Order",
    "autoregressive_adjacency",
    "full_pass_inverse",
    "incremental_inverse",
    "mlp",
    "ranks",
]
