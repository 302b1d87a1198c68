"""Training: ``fit``, its loop with early stopping and resumption, batches, processes.

``distributed`` starts a job of several processes (``jax.distributed``) and moves
arrays between them.
"""

from maf_jax._lazy import exports

__all__ = [
    "History",
    "Interrupted",
    "distributed",
    "enable_compilation_cache",
    "fit",
    "log_probs",
    "mean_log_prob",
]

__getattr__, __dir__ = exports(
    __name__,
    {
        "distributed": "maf_jax.train.distributed",
        "enable_compilation_cache": "maf_jax.train.compilation_cache",
        "History": "maf_jax.train.fitting",
        "Interrupted": "maf_jax.train.fitting",
        "fit": "maf_jax.train.fitting",
        "log_probs": "maf_jax.train.fitting",
        "mean_log_prob": "maf_jax.train.fitting",
    },
)
