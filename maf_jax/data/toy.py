"""Built-in 2-D densities, generated in code from an explicit PRNG key."""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["TOY_DENSITIES", "checkerboard", "eight_gaussians", "pinwheel", "spirals", "two_moons"]


def two_moons(key: jax.Array, n: int, noise: float = 0.1) -> jax.Array:
    """Two interleaving half circles with Gaussian noise; shape ``(n, 2)``."""
    k_angle, k_side, k_noise = jax.random.split(key, 3)
    angle = jax.random.uniform(k_angle, (n,), minval=0, maxval=jnp.pi)
    side = jax.random.bernoulli(k_side, 0.5, (n,))
    upper = jnp.stack([jnp.cos(angle), jnp.sin(angle)], axis=-1)
    lower = jnp.stack([1 - jnp.cos(angle), 0.5 - jnp.sin(angle)], axis=-1)
    x = jnp.where(side[:, None], upper, lower)
    return x + noise * jax.random.normal(k_noise, (n, 2))


def checkerboard(key: jax.Array, n: int) -> jax.Array:
    """Uniform on the dark squares of a 4 x 4 board on ``[-4, 4]^2``; ``(n, 2)``."""
    k_u, k_v, k_row = jax.random.split(key, 3)
    u = jax.random.uniform(k_u, (n,), minval=-2, maxval=2)
    v = jax.random.uniform(k_v, (n,)) - 2 * jax.random.randint(k_row, (n,), 0, 2)
    v = v + jnp.floor(u) % 2
    return 2 * jnp.stack([u, v], axis=-1)


def eight_gaussians(key: jax.Array, n: int, radius: float = 2.0, std: float = 0.2) -> jax.Array:
    """Mixture of eight Gaussians on a circle; shape ``(n, 2)``."""
    k_centre, k_noise = jax.random.split(key)
    angle = jax.random.randint(k_centre, (n,), 0, 8) * (jnp.pi / 4)
    centres = radius * jnp.stack([jnp.cos(angle), jnp.sin(angle)], axis=-1)
    return centres + std * jax.random.normal(k_noise, (n, 2))


def pinwheel(key: jax.Array, n: int, arms: int = 5, rate: float = 0.25) -> jax.Array:
    """Pinwheel of ``arms`` curved Gaussian arms; shape ``(n, 2)``."""
    k_arm, k_noise = jax.random.split(key)
    arm = jax.random.randint(k_arm, (n,), 0, arms)
    radial, tangential = 0.3, 0.05
    point = jax.random.normal(k_noise, (n, 2)) * jnp.array([radial, tangential])
    point = point + jnp.array([1.0, 0.0])
    angle = arm * (2 * jnp.pi / arms) + rate * jnp.exp(point[:, 0])
    rotation = jnp.stack(
        [jnp.cos(angle), -jnp.sin(angle), jnp.sin(angle), jnp.cos(angle)], axis=-1
    ).reshape(n, 2, 2)
    return 2 * jnp.einsum("nij,nj->ni", rotation, point)


def spirals(key: jax.Array, n: int, noise: float = 0.1) -> jax.Array:
    """Two interleaved spirals; shape ``(n, 2)``."""
    k_t, k_side, k_noise = jax.random.split(key, 3)
    t = jnp.sqrt(jax.random.uniform(k_t, (n,))) * 3 * jnp.pi
    sign = jnp.where(jax.random.bernoulli(k_side, 0.5, (n,)), 1.0, -1.0)
    x = sign[:, None] * jnp.stack([t * jnp.cos(t), t * jnp.sin(t)], axis=-1) / 3
    return x + noise * jax.random.normal(k_noise, (n, 2))


#: The built-in 2-D densities by name, each ``f(key, n) -> (n, 2)``.
TOY_DENSITIES = {
    "two_moons": two_moons,
    "checkerboard": checkerboard,
    "eight_gaussians": eight_gaussians,
    "pinwheel": pinwheel,
    "spirals": spirals,
}
