"""Data sets: files (``.npy``, ``.npz``, text), scikit-learn sets and 2-D toy densities."""

from maf_jax._lazy import exports

__all__ = [
    "DataError",
    "TOY_DENSITIES",
    "check_rows",
    "checkerboard",
    "eight_gaussians",
    "load",
    "load_file",
    "load_sklearn",
    "pinwheel",
    "spirals",
    "split",
    "two_moons",
]

__getattr__, __dir__ = exports(
    __name__,
    {
        "DataError": "maf_jax.data.loaders",
        "check_rows": "maf_jax.data.loaders",
        "load": "maf_jax.data.loaders",
        "load_file": "maf_jax.data.loaders",
        "load_sklearn": "maf_jax.data.loaders",
        "split": "maf_jax.data.loaders",
        "TOY_DENSITIES": "maf_jax.data.toy",
        "checkerboard": "maf_jax.data.toy",
        "eight_gaussians": "maf_jax.data.toy",
        "pinwheel": "maf_jax.data.toy",
        "spirals": "maf_jax.data.toy",
        "two_moons": "maf_jax.data.toy",
    },
)
