import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent

# scripts run in their own process (flags such as x64 must not reach this one)
collect_ignore_glob = ["*_checks.py"]


def run_checks(script: str, env: dict | None = None, timeout: float = 600) -> dict:
    """Runs a check script of this folder in a fresh interpreter; returns its JSON.

    Flags such as ``jax_enable_x64`` or ``XLA_FLAGS`` then apply to that process
    alone. The script prints one JSON object mapping check names to an error
    message, empty when the check passed.
    """
    result = subprocess.run(
        [sys.executable, str(HERE / script)],
        env=os.environ | (env or {}),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])
