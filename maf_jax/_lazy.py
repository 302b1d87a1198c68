"""Packages whose public names are imported on first use (PEP 562)."""

from __future__ import annotations

import importlib

__all__ = ["exports"]


def exports(package: str, names: dict[str, str]):
    """``__getattr__`` and ``__dir__`` for ``package``, which re-exports ``names``.

    Args:
        package: The package's ``__name__``.
        names: Each public name and the module it comes from; a name that is the
            module's own last component is the module itself.

    Returns:
        The two functions, to be bound to the package's module-level names.
    """

    def __getattr__(name: str):
        if name not in names:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module = importlib.import_module(names[name])
        value = module if module.__name__.rsplit(".", 1)[-1] == name else getattr(module, name)
        setattr(importlib.import_module(package), name, value)
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(importlib.import_module(package))) | set(names))

    return __getattr__, __dir__
