"""Flax NNX layers: the masked linear layer, the masked MLP (a MADE), batch norm, the stack."""

from maf_jax._lazy import exports

__all__ = [
    "BatchNorm",
    "Mask",
    "MaskedLinear",
    "MaskedMLP",
    "Stack",
]

__getattr__, __dir__ = exports(
    __name__,
    {
        "BatchNorm": "maf_jax.nn.batch_norm",
        "Mask": "maf_jax.nn.layers",
        "MaskedLinear": "maf_jax.nn.layers",
        "MaskedMLP": "maf_jax.nn.layers",
        "Stack": "maf_jax.nn.stack",
    },
)
