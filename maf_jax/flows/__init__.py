"""Flax NNX flows: ``flow(c)`` returns the distribution ``p(x | c)``.

``MAF`` and ``NSF`` stack masked autoregressive transforms on a standard normal;
``Standardized`` evaluates a flow fitted on standardised data in the data's units.
"""

from maf_jax._lazy import exports

__all__ = [
    "MAF",
    "MaskedAutoregressiveTransform",
    "NSF",
    "Order",
    "Standardization",
    "Standardized",
]

__getattr__, __dir__ = exports(
    __name__,
    {
        "MAF": "maf_jax.flows.autoregressive",
        "MaskedAutoregressiveTransform": "maf_jax.flows.autoregressive",
        "NSF": "maf_jax.flows.autoregressive",
        "Order": "maf_jax.flows.autoregressive",
        "Standardization": "maf_jax.flows.standardized",
        "Standardized": "maf_jax.flows.standardized",
    },
)
