"""Flax NNX layers: the masked linear layer and the masked MLP (a MADE)."""

from maf_jax._lazy import exports

__all__ = [
    "Mask",
    "MaskedLinear",
    "MaskedMLP",
]

__getattr__, __dir__ = exports(
    __name__,
    {
        "Mask": "maf_jax.nn.layers",
        "MaskedLinear": "maf_jax.nn.layers",
        "MaskedMLP": "maf_jax.nn.layers",
    },
)
