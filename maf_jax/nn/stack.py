"""A Flax NNX container of modules of one structure, their variables stacked."""

from __future__ import annotations

from collections.abc import Iterable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

__all__ = ["Stack"]


def _stack(states):
    """Each leaf of ``states`` stacked on a new leading axis.

    Arrays that no device or sharding was asked for (uncommitted) are stacked on the
    host and put back on the default device, as ``jnp.stack`` would put them: built
    outside ``jax.jit``, the stack would otherwise compile a program per shape of
    leaf. Others (placed, traced or keys) are stacked by ``jnp.stack``.
    """

    def on_host(a) -> bool:
        if isinstance(a, jax.core.Tracer) or (isinstance(a, jax.Array) and a.committed):
            return False
        return not jax.dtypes.issubdtype(jnp.result_type(a), jax.dtypes.prng_key)

    if all(on_host(a) for a in jax.tree.leaves(states)):
        return jax.tree.map(lambda *a: jax.device_put(np.stack(a)), *states)
    return jax.tree.map(lambda *a: jnp.stack(a), *states)


class Stack(nnx.Module):
    """Modules of one structure held as one, each variable stacked on a leading axis.

    ``n`` transforms of a flow are ``n`` copies of one program with other numbers:
    stacked, they are one array per kind of variable (a kernel ``(n, in, out)``
    rather than ``n`` kernels), so a compiled step takes, updates and returns a few
    large buffers instead of many small ones, and a ``lax.scan`` over the stack
    traces the module once. Calling the stack calls every module on the same
    arguments, vectorized over the stack (``jax.vmap``).

    Args:
        modules: At least one module, all of one graph structure (equal static
            attributes) with variables of equal shapes and dtypes.

    Raises:
        ValueError: For no modules, or modules that differ in structure or shapes.

    Example:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> stack = Stack(nnx.Linear(3, 2, rngs=nnx.Rngs(i)) for i in range(4))
        >>> len(stack), stack.stacked.kernel.shape
        (4, (4, 3, 2))
        >>> stack(jnp.ones(3)).shape
        (4, 2)
    """

    def __init__(self, modules: Iterable[nnx.Module]):
        splits = [nnx.split(m) for m in modules]
        if not splits:
            raise ValueError("a Stack needs at least one module")
        graphdefs, states = zip(*splits)
        graphdef = graphdefs[0]
        if any(g != graphdef for g in graphdefs[1:]):
            raise ValueError("modules of different structures cannot be stacked")
        shapes = [jax.tree.map(lambda a: (a.shape, a.dtype), s) for s in states]
        if any(s != shapes[0] for s in shapes[1:]):
            raise ValueError("modules whose variables differ in shape or dtype cannot be stacked")
        self.length = len(states)
        self.stacked = nnx.merge(graphdef, _stack(states))

    def __len__(self) -> int:
        return self.length

    def unstack(self) -> list[nnx.Module]:
        """Copies of the modules, one per slice of the stack.

        Copies: changing one leaves the stack as it is (set values through
        ``stacked``, whose variables have the leading axis).
        """
        graphdef, state = nnx.split(self.stacked)
        return [
            nnx.merge(graphdef, jax.tree.map(lambda a, i=i: a[i], state))
            for i in range(self.length)
        ]

    def __call__(self, *args, **kwargs):
        """Every module called on ``args``: each output leaf gains the leading axis.

        The call is a function of the variables (``jax.vmap`` over their stacked
        state), so it may close over a stack from outside a ``jax.jit``; what the
        modules' calls change in their own state is not kept.
        """
        graphdef, state = nnx.split(self.stacked)

        def call(state):
            return nnx.merge(graphdef, state)(*args, **kwargs)

        return jax.vmap(call)(state)
