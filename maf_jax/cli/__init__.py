"""The ``maf-jax`` command: ``main`` (the commands), ``options``, ``job``, ``plot``."""

__all__: list[str] = []
