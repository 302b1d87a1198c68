"""The pure core of a MADE: graphs and orders, degrees and masks, the network, the schedule.

NumPy and ``jax.numpy`` only, no Flax: every layer above builds on these functions.
"""

from maf_jax._lazy import exports

__all__ = [
    "ACTIVATIONS",
    "DegreeLayout",
    "MadeLayout",
    "PRECISIONS",
    "Wiring",
    "autoregressive_adjacency",
    "matmul",
    "mlp",
    "ranks",
]

__getattr__, __dir__ = exports(
    __name__,
    {
        "DegreeLayout": "maf_jax.core.masks",
        "MadeLayout": "maf_jax.core.masks",
        "autoregressive_adjacency": "maf_jax.core.masks",
        "ranks": "maf_jax.core.masks",
        "ACTIVATIONS": "maf_jax.core.network",
        "PRECISIONS": "maf_jax.core.network",
        "Wiring": "maf_jax.core.network",
        "matmul": "maf_jax.core.network",
        "mlp": "maf_jax.core.network",
    },
)
