"""The files that need a process of their own (``conftest.OWN_PROCESS``), each run in one.

One class a file, so that ``--dist loadscope`` gives each its own worker, and
``conftest`` schedules them first: they are the longest.
"""

import os
import subprocess
import sys

import pytest
from conftest import HERE, OWN_PROCESS, OWN_PROCESS_ENV


def run_in_own_process(name: str) -> None:
    env = os.environ | OWN_PROCESS[name] | {OWN_PROCESS_ENV: "1"}
    command = [sys.executable, "-m", "pytest", str(HERE / name), "-q", "-n", "0"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, cwd=HERE.parent)
    summary = result.stdout.strip().splitlines()[-1:] or ["(no output)"]
    print(f"{name}: {summary[0]}")
    if result.returncode < 0:
        signal = -result.returncode
        pytest.fail(f"{name}: the process died on signal {signal}\n{result.stderr[-4000:]}")
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert " passed" in summary[0] and "skipped" not in summary[0], summary[0]


class TestFloat64:
    def test_in_own_process(self):
        run_in_own_process("test_float64.py")


class TestInterop:
    def test_in_own_process(self):
        run_in_own_process("interop/test_interop.py")


def test_every_own_process_file_is_run():
    names = {"test_float64.py", "interop/test_interop.py"}
    assert names == set(OWN_PROCESS)
