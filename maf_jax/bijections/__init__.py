"""Bijections as JAX pytrees: autoregressive, univariate, normalisations, support, chain.

Each exposes ``forward``, ``inverse``, ``forward_and_log_det`` and
``inverse_and_log_det``; none holds Flax state.
"""

from maf_jax._lazy import exports

__all__ = [
    "AutoregressiveTransform",
    "BatchNormalization",
    "Chain",
    "Compose",
    "FullPass",
    "MixtureCDF",
    "MonotonicAffineTransform",
    "MonotonicRQSTransform",
    "RationalQuadraticSpline",
    "Standardize",
    "Support",
    "batch_statistics",
    "full_pass_inverse",
    "normal_quantile",
]

__getattr__, __dir__ = exports(
    __name__,
    {
        "AutoregressiveTransform": "maf_jax.bijections.autoregressive",
        "FullPass": "maf_jax.bijections.autoregressive",
        "BatchNormalization": "maf_jax.bijections.batch_norm",
        "batch_statistics": "maf_jax.bijections.batch_norm",
        "full_pass_inverse": "maf_jax.bijections.autoregressive",
        "Chain": "maf_jax.bijections.chain",
        "MixtureCDF": "maf_jax.bijections.mixture",
        "normal_quantile": "maf_jax.bijections.mixture",
        "MonotonicRQSTransform": "maf_jax.bijections.spline",
        "RationalQuadraticSpline": "maf_jax.bijections.spline",
        "Compose": "maf_jax.bijections.standardize",
        "Standardize": "maf_jax.bijections.standardize",
        "Support": "maf_jax.bijections.support",
        "MonotonicAffineTransform": "maf_jax.bijections.univariate",
    },
)
