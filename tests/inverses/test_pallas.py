"""The Pallas full-pass inverse, in interpret mode on the CPU, against the reference."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import scramble
from flax import nnx
from transform_configs import CONFIGS, CONTEXT, FEATURES

from maf_jax import MAF, MaskedAutoregressiveTransform
from maf_jax.bijections.autoregressive import full_pass_inverse
from maf_jax.inverses.pallas import PallasFullPass

TRANSFORMS = {name: kwargs for name, (kind, kwargs) in CONFIGS.items() if kind == "transform"}


@pytest.mark.parametrize("name", TRANSFORMS)
def test_the_kernel_equals_the_full_pass_reference(name):
    kwargs = TRANSFORMS[name]
    t = MaskedAutoregressiveTransform(
        FEATURES, **kwargs, inverse=PallasFullPass(tile=8), rngs=nnx.Rngs(1)
    )
    context = kwargs.get("context", 0)
    c = jax.random.normal(jax.random.key(7), (context,)) if context else None
    bijection = scramble(t)(c)
    y = jax.random.normal(jax.random.key(1), (10, FEATURES))  # 10 rows: a padded tile
    x, ladj = jax.jit(lambda b, y: b.inverter(b, y))(bijection, y)
    x_full, ladj_full = full_pass_inverse(bijection, y)
    np.testing.assert_allclose(x, x_full, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ladj, ladj_full, rtol=1e-5, atol=1e-5)
    assert not np.allclose(x, y, atol=1e-2)


def test_a_flow_samples_and_differentiates_through_the_kernel():
    """Same weights, same noise: the kernel's samples are the default sampler's, and
    the implicit derivative makes them differentiable."""
    flows = {
        inverse: scramble(
            MAF(FEATURES, context=CONTEXT, transforms=2, inverse=inverse, rngs=nnx.Rngs(3))
        )
        for inverse in ("incremental", "pallas_full_pass")
    }
    c = jnp.linspace(-1.0, 1.0, CONTEXT)
    samples = {k: f(c).sample(jax.random.key(0), (6,)) for k, f in flows.items()}
    np.testing.assert_allclose(samples["pallas_full_pass"], samples["incremental"], atol=1e-5)

    def gradient(flow):
        graphdef, params, rest = nnx.split(flow, nnx.Param, ...)

        def loss(params):
            x, log_q = nnx.merge(graphdef, params, rest)(c).rsample_and_log_prob(
                jax.random.key(1), (4,)
            )
            return (x**2).sum() + log_q.sum()

        return jax.grad(loss)(params)

    got, want = gradient(flows["pallas_full_pass"]), gradient(flows["incremental"])
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
