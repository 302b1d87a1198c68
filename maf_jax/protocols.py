"""The contracts a user can implement: a bijection, a univariate transform, an inverter.

Structural types (``typing.Protocol``): an object that has the methods is one, no
base class needed. ``isinstance`` checks that the methods exist, not their
signatures; the tests hold every built-in implementation to them.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

__all__ = ["Bijection", "Inverter", "UnivariateTransform"]

Array = np.ndarray  # or a jax.Array: the contracts import no JAX


@runtime_checkable
class Bijection(Protocol):
    """An invertible map with its log-Jacobian determinant, as distrax names them.

    Shapes are ``(*, features)`` for ``x`` and ``y``, ``(*,)`` for the log-determinants.
    """

    def forward(self, x: Array) -> Array:
        """``y = f(x)``."""
        ...

    def inverse(self, y: Array) -> Array:
        """``x = f^{-1}(y)``."""
        ...

    def forward_and_log_det(self, x: Array) -> tuple[Array, Array]:
        """``y`` and ``log|det df/dx|``."""
        ...

    def inverse_and_log_det(self, y: Array) -> tuple[Array, Array]:
        """``x`` and ``log|det df^{-1}/dy|``."""
        ...


@runtime_checkable
class UnivariateTransform(Bijection, Protocol):
    """An elementwise increasing bijection made from per-feature parameters.

    ``MaskedAutoregressiveTransform(univariate=U, shapes=...)`` calls
    ``U(*params)`` with one array per entry of ``shapes``, each of shape
    ``(*, features, *shape)``, and applies the result to ``(*, features)`` arrays.
    The result must be a JAX pytree (``maf_jax.core._pytree.dataclass`` makes one)
    whose ``Bijection`` methods act elementwise: log-determinants have the shape of
    ``x``, not summed. ``U`` itself must be hashable (a class or a frozen dataclass
    of settings), since it is part of the transform's static structure.
    """


@runtime_checkable
class Inverter(Protocol):
    """The ``inverse=`` option: inverts an autoregressive transform.

    Must be hashable (a frozen dataclass of settings), so that ``jax.jit`` sees a
    change of inverse as a change of program, and have a ``name`` under which a
    checkpoint stores it (built-ins: ``maf_jax.bijections.autoregressive.INVERSES``).
    """

    name: str

    def __call__(self, t, y: Array) -> tuple[Array, Array]:
        """``x`` and ``log|det dx/dy|`` of the transform ``t`` at ``y``, shape ``(n, features)``."""
        ...
