"""Flax NNX layers: the masked linear layer, the masked MLP (a MADE) and the stack."""

from maf_jax._lazy import exports

__all__ = [
    "Mask",
    "MaskedLinear",
    "MaskedMLP",
    "Stack",
]

__getattr__, __dir__ = exports(
    __name__,
    {
        "Mask": "maf_jax.nn.layers",
        "MaskedLinear": "maf_jax.nn.layers",
        "MaskedMLP": "maf_jax.nn.layers",
        "Stack": "maf_jax.nn.stack",
    },
)
