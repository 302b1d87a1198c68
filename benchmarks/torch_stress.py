"""Many XLA compiles in processes that have (or have not) loaded torch: how many die.

Each run is a fresh interpreter that imports torch and zuko first (``--torch``, as
pytest does when it collects the interop tests) or not at all, then compiles
``--compiles`` distinct programs of maf_jax flows (sampling, the gradient of log_prob and
the gradient through rsample under vmap, each at its own shapes so that every one is a
new XLA compile), doing some zuko work between compiles so that torch's thread pools
run beside XLA's. A run that dies on a signal counts as a crash.

    python benchmarks/torch_stress.py --runs 5 --compiles 200 --modes torch no-torch

Writes benchmarks/results/torch_stress.md.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent

WORKER = r"""
import sys
mode, compiles = sys.argv[1], int(sys.argv[2])
if mode == "torch":
    import torch, zuko
import jax, jax.numpy as jnp
from flax import nnx
import maf_jax

if mode == "torch":
    theirs = zuko.flows.MAF(4, 2, transforms=2, hidden_features=(32, 32))
    zx, zc = torch.randn(256, 4), torch.randn(256, 2)
for i in range(compiles):
    features, hidden = 2 + i % 7, 8 + (i // 7) % 9
    flow = maf_jax.MAF(features, 2, transforms=2, hidden_features=(hidden, hidden),
                       rngs=nnx.Rngs(i))
    graphdef, params, rest = nnx.split(flow, nnx.Param, ...)
    c = jnp.ones((3 + i % 5, 2))
    def loss(params, x):
        return -nnx.merge(graphdef, params, rest)(c).log_prob(x).mean()
    def sampled(params, keys):  # a gradient through rsample under vmap over contexts
        draw = lambda c, k: nnx.merge(graphdef, params, rest)(c).rsample(k, (4,)).sum()
        return jax.vmap(draw)(c, keys).sum()
    x = nnx.merge(graphdef, params, rest)(c).sample(jax.random.key(i))
    keys = jax.random.split(jax.random.key(i), len(c))
    grads = jax.jit(jax.grad(loss))(params, x), jax.jit(jax.grad(sampled))(params, keys)
    jax.block_until_ready(grads)
    if mode == "torch":
        theirs(zc).log_prob(zx).sum().backward()
print(compiles)
"""


def run(mode: str, compiles: int, timeout: float) -> tuple[str, float]:
    """One worker process: ``("ok", s)``, ``("SIGSEGV", s)``, ... and its wall time."""
    start = time.perf_counter()
    env = os.environ | {"PYTHONFAULTHANDLER": "1"}
    try:
        result = subprocess.run(
            [sys.executable, "-c", WORKER, mode, str(compiles)],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return "timeout", time.perf_counter() - start
    seconds = time.perf_counter() - start
    if result.returncode < 0:
        return signal.Signals(-result.returncode).name, seconds
    if result.returncode:
        return f"exit {result.returncode}: {result.stderr.strip().splitlines()[-1:]}", seconds
    return "ok", seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="worker processes per mode")
    parser.add_argument("--compiles", type=int, default=200, help="programs per worker")
    parser.add_argument("--modes", nargs="+", default=["torch", "no-torch"])
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "torch_stress.md")
    args = parser.parse_args()
    rows = []
    for mode in args.modes:
        outcomes = []
        for i in range(args.runs):
            outcome, seconds = run(mode, args.compiles, args.timeout)
            print(f"{mode} run {i}: {outcome} ({seconds:.0f} s)", flush=True)
            outcomes.append(outcome)
        crashes = sum(o.startswith("SIG") for o in outcomes)
        rows.append(
            f"| {mode} | {args.runs} | {args.compiles} | {crashes} | {', '.join(outcomes)} |"
        )
    table = [
        f"`python benchmarks/torch_stress.py --runs {args.runs} --compiles {args.compiles} "
        f"--modes {' '.join(args.modes)}`",
        "",
        "| mode | runs | flows per run (4 programs each) | died on a signal | outcomes |",
        "|---|---|---|---|---|",
        *rows,
    ]
    args.out.parent.mkdir(exist_ok=True)
    args.out.write_text("\n".join(table) + "\n")
    print("\n".join(table))


if __name__ == "__main__":
    main()
