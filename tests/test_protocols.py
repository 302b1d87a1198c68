"""Every built-in implementation satisfies the contract a user would implement."""

import inspect

import jax.numpy as jnp
import pytest
from flax import nnx

import maf_jax
from maf_jax import Bijection, Inverter, UnivariateTransform
from maf_jax.bijections import BatchNormalization, Compose, Standardize, Support
from maf_jax.bijections.autoregressive import INVERSES

ONES = jnp.ones(3)
UNIVARIATES = {
    "affine": lambda: maf_jax.MonotonicAffineTransform(ONES, ONES),
    "spline": lambda: maf_jax.RationalQuadraticSpline(bins=4)(
        jnp.ones((3, 4)), jnp.ones((3, 4)), jnp.ones((3, 3))
    ),
}
BIJECTIONS = {
    "autoregressive": lambda: maf_jax.MaskedAutoregressiveTransform(3, rngs=nnx.Rngs(0))(),
    "chain": lambda: maf_jax.MAF(3, rngs=nnx.Rngs(0))().transform,
    "standardize": lambda: Standardize(ONES, ONES),
    "compose": lambda: Compose(Standardize(ONES, ONES), Standardize(ONES, ONES)),
    "support": lambda: Support.of((0, 1), 2),
    "batch_norm": lambda: BatchNormalization(ONES, ONES, ONES, ONES),
    **UNIVARIATES,
}
INVERTERS = {name: cls for name, cls in INVERSES.items()} | {
    "incremental_blocks": lambda: maf_jax.Incremental(blocks=2)
}


@pytest.mark.parametrize("name", BIJECTIONS)
def test_every_bijection_is_a_bijection(name):
    assert isinstance(BIJECTIONS[name](), Bijection)


@pytest.mark.parametrize("name", UNIVARIATES)
def test_every_univariate_transform_is_one(name):
    assert isinstance(UNIVARIATES[name](), UnivariateTransform)


@pytest.mark.parametrize("name", INVERTERS)
def test_every_inverter_is_one_hashable_and_named(name):
    inverter = INVERTERS[name]()
    assert isinstance(inverter, Inverter)
    assert hash(inverter) == hash(INVERTERS[name]())
    assert INVERSES[inverter.name] is type(inverter)
    assert list(inspect.signature(inverter).parameters) == ["t", "y"]


def test_the_checks_can_fail():
    class Forward:
        def forward(self, x):
            return x

    assert not isinstance(Forward(), Bijection)
    assert not isinstance(Forward(), UnivariateTransform)
    assert not isinstance(Forward(), Inverter)
