"""float64 under jax_enable_x64, in a separate process so that the flag does not leak."""

import pytest
from conftest import run_checks

NAMES = [
    "transform_default",
    "transform_passes1_context",
    "transform_passes2",
    "transform_passes3_context",
    "transform_order_elu",
    "scanned_blocks",
    "check_grads",
    "dtype",
]


@pytest.fixture(scope="module")
def results():
    return run_checks("float64_checks.py")


def test_every_check_ran(results):
    assert sorted(results) == sorted(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_float64(results, name):
    assert results[name] == "", results[name]
