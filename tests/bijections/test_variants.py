"""The core bijections with and without ``jax.jit`` (``chex.variants``): eager code
paths (Python branches on shapes, ``lax.scan`` and custom derivatives run op by op)
must agree with the compiled ones."""

import chex
import jax
import jax.numpy as jnp
from absl.testing import parameterized
from conftest import scramble
from flax import nnx

import maf_jax
from maf_jax import MAF, MaskedAutoregressiveTransform
from maf_jax.bijections.autoregressive import full_pass_inverse
from maf_jax.bijections.standardize import Standardize

FEATURES, CONTEXT = 4, 2
SPLINE = maf_jax.RationalQuadraticSpline(bins=4, bound=3.0)
C = jnp.array([0.3, -0.7])


def affine():
    k = jax.random.split(jax.random.key(1), 2)
    shift, scale = (jax.random.normal(key, (FEATURES,)) for key in k)
    return maf_jax.MonotonicAffineTransform(shift, scale)


def spline():
    k = jax.random.split(jax.random.key(2), 3)
    widths, heights = (jax.random.normal(key, (FEATURES, 4)) for key in k[:2])
    return SPLINE(widths, heights, jax.random.normal(k[2], (FEATURES, 3)))


def transform(**kwargs):
    def build():
        t = MaskedAutoregressiveTransform(
            FEATURES, CONTEXT, hidden_features=(8,), rngs=nnx.Rngs(0), **kwargs
        )
        return scramble(t)(C)

    return build


def maf():
    flow = MAF(FEATURES, CONTEXT, transforms=2, hidden_features=(8,), rngs=nnx.Rngs(3))
    return scramble(flow)(C).transform


def standardize():
    return Standardize(jnp.array([1.0, -2.0, 0.5, 0.0]), jnp.array([2.0, 0.5, 1.0, 3.0]))


BIJECTIONS = [
    ("affine", affine),
    ("spline", spline),
    ("transform_incremental", transform(passes=3)),
    ("transform_full_pass", transform(inverse="full_pass")),
    ("maf", maf),
    ("standardize", standardize),
]
X = 1.2 * jax.random.normal(jax.random.key(0), (3, FEATURES))


class BijectionVariants(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(*BIJECTIONS)
    def test_round_trip_and_log_det(self, build):
        @self.variant
        def round_trip(b, x):
            y, ladj = b.forward_and_log_det(x)
            x_back, inverse_ladj = b.inverse_and_log_det(y)
            jacobian = jax.vmap(jax.jacfwd(b.forward))(x)
            return y, ladj, x_back, inverse_ladj, jnp.linalg.slogdet(jacobian)[1]

        y, ladj, x_back, inverse_ladj, logdet = round_trip(build(), X)
        chex.assert_shape((y, x_back), X.shape)
        chex.assert_equal_shape((ladj, inverse_ladj))
        # univariate maps give one log-derivative per feature, the others one per row
        ladj, inverse_ladj = (a.reshape(len(X), -1).sum(-1) for a in (ladj, inverse_ladj))
        chex.assert_trees_all_close(x_back, X, rtol=1e-4, atol=1e-4)
        chex.assert_trees_all_close(ladj, logdet, atol=1e-4)
        chex.assert_trees_all_close(inverse_ladj, -ladj, atol=1e-5)

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(
        ("incremental", dict(passes=3)),
        ("full_pass", dict(inverse="full_pass")),
    )
    def test_the_implicit_derivative_of_the_inverse_is_the_reference(self, kwargs):
        t = MaskedAutoregressiveTransform(
            FEATURES, CONTEXT, hidden_features=(8,), rngs=nnx.Rngs(0), **kwargs
        )
        graphdef, params, rest = nnx.split(scramble(t), nnx.Param, ...)
        y = nnx.merge(graphdef, params, rest)(C).forward(X)

        @self.variant
        def gradients(params, y, c):
            def loss(params, y, c, reference):
                b = nnx.merge(graphdef, params, rest)(c)
                x, ladj = full_pass_inverse(b, y) if reference else b.inverse_and_log_det(y)
                return jnp.sin(x).sum() + ladj.sum()

            return [jax.grad(loss, argnums=(0, 1, 2))(params, y, c, r) for r in (False, True)]

        got, want = gradients(params, y, C)
        chex.assert_trees_all_close(got, want, rtol=1e-3, atol=1e-4)
