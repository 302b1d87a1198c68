"""XLA flags under which the suite's (and the docs build's) programs compile fast.

Most of the suite's time is XLA compiling small programs that then run for
microseconds. Two flags shorten it: LLVM's optimisations off (about a third), and
XLA's older fusion emitters for CPU, whose kernels take a fraction of the newer ones'
time to generate (the gradient of a log-likelihood, a sampler and a gradient through
it, at D = 5 and 13: 4.2 s -> 1.6 s of XLA compile; the 988 tests, LLVM's
optimisations already off: 570 s -> 378 s on 2 cores). Neither reassociates
arithmetic (XLA's CPU code is not fast-math); a program fused otherwise may round
differently in the last place. Benchmarks, users and the README's checks
(``tests/test_readme.py``) keep XLA's defaults.

An XLA that does not know a flag ends the process, so the flags are tried in a fresh
interpreter first, and one by one if XLA refuses them together.

    XLA_FLAGS="$(python tests/xla_flags.py)" python -m sphinx ...
"""

from __future__ import annotations

import os
import subprocess
import sys

FAST_COMPILE = (
    "--xla_backend_optimization_level=0",
    "--xla_cpu_use_fusion_emitters=false",
)


def accepted(flags: str) -> bool:
    """Whether a fresh interpreter's XLA compiles a program under ``flags``."""
    probe = "import jax; jax.jit(lambda x: x + 1)(1.0).block_until_ready()"
    env = os.environ | {"XLA_FLAGS": flags, "JAX_PLATFORMS": "cpu"}
    result = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True)
    return result.returncode == 0


def with_fast_compile(flags: str) -> str:
    """``flags`` (an ``XLA_FLAGS`` value) with those of ``FAST_COMPILE`` XLA accepts.

    A flag ``flags`` already sets, to any value, is left as it is.
    """
    given = {flag.split("=")[0] for flag in flags.split()}
    added = [f for f in FAST_COMPILE if f.split("=")[0] not in given]
    if added and not accepted(" ".join(added)):
        added = [f for f in added if accepted(f)]
    return " ".join([*flags.split(), *added])


if __name__ == "__main__":
    print(with_fast_compile(os.environ.get("XLA_FLAGS", "")))
