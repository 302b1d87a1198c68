"""Models to and from other libraries: zuko (PyTorch).

In one process: ``from_zuko`` and ``to_zuko``. Without torch in the JAX process:
``zuko_file.save`` / ``zuko_file.load`` in a torch process, ``load_zuko`` /
``save_zuko`` in the JAX one. Names are imported on first use, so that the torch
side (``maf_jax.interop.zuko_file``) loads no JAX.
"""

from maf_jax._lazy import exports

__all__ = ["ZukoFileError", "from_zuko", "load_zuko", "save_zuko", "to_zuko", "zuko_file"]

__getattr__, __dir__ = exports(
    __name__,
    dict.fromkeys(["from_zuko", "to_zuko", "load_zuko", "save_zuko"], "maf_jax.interop.zuko")
    | {"ZukoFileError": "maf_jax.interop.zuko_format", "zuko_file": "maf_jax.interop.zuko_file"},
)
