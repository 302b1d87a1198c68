"""Where a compiled sampler's time goes, kernel by kernel, from a ``jax.profiler`` trace.

Samples 4096 points from maf_jax's speed.py flow (5 transforms, hidden (128, 128)) under
the profiler, with XLA's per-kernel trace events on, and sums each kernel's time per call
of the sampler. Kernels called more than twice per transform run inside the steps of the
inverse; the others run once per block or per transform.

    python benchmarks/profile_sample.py --features 64
    taskset -c 0 python benchmarks/profile_sample.py --features 64   # on one core

Prints the totals and the costliest kernels.
"""

from __future__ import annotations

import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_cpu_enable_xprof_traceme=true"
).strip()

import argparse  # noqa: E402
import collections  # noqa: E402
import gzip  # noqa: E402
import json  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

import jax  # noqa: E402
import speed  # noqa: E402

# Trace events that are not kernels: host-side calls, the executor, thread pools.
NOT_KERNELS = ("$", "end:", "Thunk", "Slinky", "Pjit", "Parse", "Threadpool", "Common")


def kernel_times(compiled, args, calls: int) -> tuple[dict, dict]:
    """Microseconds and calls per sampler call of every traced kernel."""
    jax.block_until_ready(compiled(*args))
    with tempfile.TemporaryDirectory() as folder:
        with jax.profiler.trace(folder, create_perfetto_trace=True):
            for _ in range(calls):
                jax.block_until_ready(compiled(*args))
        (trace,) = Path(folder).rglob("perfetto_trace.json.gz")
        events = json.load(gzip.open(trace))
    events = events["traceEvents"] if isinstance(events, dict) else events
    micros, counts = collections.Counter(), collections.Counter()
    for event in events:
        if event.get("ph") == "X" and not event["name"].startswith(NOT_KERNELS):
            micros[event["name"]] += event["dur"] / calls
            counts[event["name"]] += 1 / calls
    return micros, counts


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--features", type=int, default=64)
    parser.add_argument("--calls", type=int, default=5)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    params, _, sample = speed.maf_jax_model(args.features, None)
    key = jax.random.key(0)
    compiled = jax.jit(sample).lower(params, key).compile()
    micros, counts = kernel_times(compiled, (params, key), args.calls)
    # while loops are traced around the kernels of their bodies: count those once
    kernels = {k: v for k, v in micros.items() if not k.startswith("while")}
    per_step = {k: v for k, v in kernels.items() if counts[k] > 2 * speed.TRANSFORMS}
    products = ("ynn", "dot", "xnn", "onednn")  # names XLA CPU gives product kernels
    step_products = [v for k, v in per_step.items() if k.startswith(products)]
    total = sum(kernels.values())
    print(f"sampler, D={args.features}: {total / 1e3:.1f} ms of kernels per call")
    print(f"  in the steps of the inverse: {sum(per_step.values()) / 1e3:.1f} ms")
    print(f"    of which matrix products: {sum(step_products) / 1e3:.1f} ms")
    print(f"  once per block or transform: {(total - sum(per_step.values())) / 1e3:.1f} ms")
    print("\n| kernel | us per sampler call | calls | us per call |\n|---|---|---|---|")
    for name, us in sorted(kernels.items(), key=lambda kv: -kv[1])[: args.top]:
        print(f"| {name} | {us:.0f} | {counts[name]:.0f} | {us / counts[name]:.1f} |")


if __name__ == "__main__":
    main()
