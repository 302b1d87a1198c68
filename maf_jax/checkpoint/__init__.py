"""Files: model checkpoints, training states, and the untrusted arrays they are made of.

``save(path, model)`` and ``load(path)`` store a model as plain arrays and a checked
JSON configuration, never code; ``training`` holds the state a stopped ``fit``
resumes from; ``arrays`` reads ``.npy``/``.npz`` files as untrusted data; ``files``
writes every output atomically (and needs neither JAX nor Flax: names here are
imported on first use).
"""

from maf_jax._lazy import exports

__all__ = ["CheckpointError", "load", "save", "write"]

__getattr__, __dir__ = exports(__name__, dict.fromkeys(__all__, "maf_jax.checkpoint.model"))
