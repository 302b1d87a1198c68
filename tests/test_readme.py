"""The snippets of the README and the docs run as written and their commands parse."""

import pytest
from conftest import run_checks


@pytest.fixture(scope="module")
def results():
    flags = "--xla_force_host_platform_device_count=4"
    return run_checks("readme_checks.py", env={"XLA_FLAGS": flags, "JAX_PLATFORMS": "cpu"})


@pytest.mark.parametrize("name", ["quickstart", "zuko", "scaling_out", "commands"])
def test_readme(results, name):
    assert results[name] == "", results[name]
