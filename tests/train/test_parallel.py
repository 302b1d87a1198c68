"""Multi-device training with the functional idiom, on virtual CPU devices."""

import pytest
from conftest import run_checks


@pytest.fixture(scope="module")
def results():
    flags = "--xla_force_host_platform_device_count=4"
    return run_checks("pmap_checks.py", env={"XLA_FLAGS": flags, "JAX_PLATFORMS": "cpu"})


@pytest.mark.parametrize(
    "name", ["devices", "pmap", "sharded_jit", "sharded_fit", "batch_norm_sharded_fit"]
)
def test_data_parallel_step_matches_single_device(results, name):
    assert results[name] == "", results[name]
