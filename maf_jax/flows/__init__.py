"""Flax NNX flows: ``flow(c)`` returns the distribution ``p(x | c)``.

``MAF`` and ``NSF`` stack masked autoregressive transforms on a standard normal,
``MAFMoG`` on a MADE with a mixture of Gaussians per feature (``MADEMoG``);
``Standardized`` evaluates a flow fitted on standardised data in the data's units.
"""

from maf_jax._lazy import exports

__all__ = [
    "MADEMoG",
    "MAF",
    "MAFMoG",
    "MaskedAutoregressiveTransform",
    "NSF",
    "Order",
    "Standardization",
    "Standardized",
]

__getattr__, __dir__ = exports(
    __name__,
    {
        "MADEMoG": "maf_jax.flows.mog",
        "MAF": "maf_jax.flows.autoregressive",
        "MAFMoG": "maf_jax.flows.mog",
        "MaskedAutoregressiveTransform": "maf_jax.flows.transform",
        "NSF": "maf_jax.flows.autoregressive",
        "Order": "maf_jax.flows.transform",
        "Standardization": "maf_jax.flows.standardized",
        "Standardized": "maf_jax.flows.standardized",
    },
)
