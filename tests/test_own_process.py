"""The files that need a process of their own (``conftest.OWN_PROCESS``), each run in one."""

import os
import subprocess
import sys

import pytest
from conftest import HERE, OWN_PROCESS, OWN_PROCESS_ENV


@pytest.mark.parametrize("name", OWN_PROCESS)
def test_in_own_process(name):
    env = os.environ | OWN_PROCESS[name] | {OWN_PROCESS_ENV: "1"}
    command = [sys.executable, "-m", "pytest", str(HERE / name), "-q", "-p", "no:cacheprovider"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, cwd=HERE.parent)
    summary = result.stdout.strip().splitlines()[-1:] or ["(no output)"]
    print(f"{name}: {summary[0]}")
    if result.returncode < 0:
        pytest.fail(
            f"{name}: the process died on signal {-result.returncode}\n{result.stderr[-4000:]}"
        )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert " passed" in summary[0] and "skipped" not in summary[0], summary[0]
