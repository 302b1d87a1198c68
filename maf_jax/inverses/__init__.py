"""Inverses of a masked autoregressive transform: the ways ``sample`` can run.

``Incremental`` (about one network pass), ``FullPass`` (the reference, ``passes``
network passes) and ``PallasFullPass`` (the full pass as one kernel); ``implicit``
differentiates any of them by the implicit function theorem, and ``rows`` batches
them under ``jax.vmap`` as one call on more rows. Pure JAX, no Flax.
"""

from maf_jax._lazy import exports

__all__ = [
    "Incremental",
    "PallasFullPass",
    "implicit_inverse",
    "incremental_inverse",
    "pallas_full_pass_inverse",
]

__getattr__, __dir__ = exports(
    __name__,
    {
        "implicit_inverse": "maf_jax.inverses.implicit",
        "Incremental": "maf_jax.inverses.incremental",
        "incremental_inverse": "maf_jax.inverses.incremental",
        "PallasFullPass": "maf_jax.inverses.pallas",
        "pallas_full_pass_inverse": "maf_jax.inverses.pallas",
    },
)
