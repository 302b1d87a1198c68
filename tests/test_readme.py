"""The snippets of the README and the docs run as written and their commands parse."""

import pytest
from conftest import run_checks


@pytest.fixture(scope="module")
def results():
    # under XLA's defaults, as a user runs them: the one part of the suite that does
    # (11 s with the suite's compile flags, 24 s without)
    flags = "--xla_force_host_platform_device_count=4"
    env = {"XLA_FLAGS": flags, "JAX_PLATFORMS": "cpu"}
    return run_checks("readme_checks.py", env=env, xla_defaults=True)


@pytest.mark.parametrize("name", ["quickstart", "zuko", "scaling_out", "commands"])
def test_readme(results, name):
    assert results[name] == "", results[name]
