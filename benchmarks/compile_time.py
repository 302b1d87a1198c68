"""Where the jit compile time of the train step and the sampler goes, against flowjax.

For each program: tracing, lowering to StableHLO, and XLA's compile apart, and the
number of fused kernels XLA emits (on CPU, most of the compile is LLVM generating
machine code for each kernel). Besides maf_jax's sampler, its sampler with one group
of blocks (``inverse=Incremental(groups=1)``) and with the full-pass reference inverse
(the simplest sampler program, 20-50x slower to run) show what a smaller sampler
program would save; the gradients through sampling of ``vi.py`` (512 samples) are
timed beside. For the samplers, the first call is timed too: trace, lower, compile and
one call are how long a user waits for a first batch of samples. One
process, rounds interleaved, JAX's trace caches cleared before each compile so that
every round traces from scratch; medians.

    python benchmarks/compile_time.py --features 64 --rounds 3

Writes benchmarks/results/compile_time.md.
"""

from __future__ import annotations

import argparse
import math
import re
import time
from pathlib import Path

import jax
import optax
import speed
import vi

from maf_jax import Incremental

HERE = Path(__file__).parent


def builders(features: int):
    """name -> a function that builds (jitted function, its arguments)."""
    key = jax.random.key(0)
    x = jax.random.normal(key, (speed.TRAIN_BATCH, features))
    optimizer = optax.adam(1e-3)

    def train(params, log_prob, *_):
        return speed.train_step(log_prob, optimizer), (params, optimizer.init(params), x)

    def sample(params, _, draw):
        return jax.jit(draw), (params, key)

    def gradient(params, loss):
        return jax.jit(jax.grad(loss)), (params, key)

    def ours(**settings):
        return speed.maf_jax_model(features, None, **settings)

    def theirs():
        return speed.flowjax_model(features, key)

    return {
        "maf_jax train": lambda: train(*ours()),
        "maf_jax sample": lambda: sample(*ours()),
        "maf_jax sample, groups=1": lambda: sample(*ours(inverse=Incremental(groups=1))),
        "maf_jax sample, full-pass inverse": lambda: sample(*ours(inverse="full_pass")),
        "flowjax train": lambda: train(*theirs()),
        "flowjax sample": lambda: sample(*theirs()),
        "dense MLP train": lambda: train(*speed.dense_model(features, key)),
        "maf_jax grad through sampling": lambda: gradient(*vi.maf_jax_loss(features)),
        "flowjax grad through sampling": lambda: gradient(*vi.flowjax_loss(features)),
    }


def programs(features: int):
    """name -> (jitted function, its arguments)."""
    return {name: build() for name, build in builders(features).items()}


def compile_once(fn, args, call: bool = False) -> dict:
    jax.clear_caches()  # trace from scratch in every round, not from the last one
    start = time.perf_counter()
    traced = fn.trace(*args)
    traced_at = time.perf_counter()
    lowered = traced.lower()
    lowered_at = time.perf_counter()
    compiled = lowered.compile()
    done = time.perf_counter()
    kernels = len(re.findall(r"= \S+ fusion\(", compiled.as_text()))
    first_call = float("nan")
    if call:
        called = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        first_call = time.perf_counter() - called
    return {
        "trace_s": traced_at - start,
        "lower_s": lowered_at - traced_at,
        "compile_s": done - lowered_at,
        "total_s": done - start,
        "kernels": kernels,
        "call_s": first_call,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--features", type=int, nargs="+", default=[64])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    speed.warm_up(jax)
    lines = [
        "| D | program | trace (s) | lower (s) | XLA compile (s) | total (s) | kernels "
        "| first call (s) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    notes = []
    for features in args.features:
        table = programs(features)
        runs = {name: [] for name in table}
        for _ in range(args.rounds):
            for name, (fn, fn_args) in table.items():
                runs[name].append(compile_once(fn, fn_args, call="sample" in name))
        medians = speed.medians(runs)
        for name, m in medians.items():
            call = "" if math.isnan(m["call_s"]) else f"{m['call_s']:.3f}"
            lines.append(
                f"| {features} | {name} | {m['trace_s']:.2f} | {m['lower_s']:.2f} "
                f"| {m['compile_s']:.2f} | {m['total_s']:.2f} | {m['kernels']:.0f} | {call} |"
            )
        flowjax = medians["flowjax train"]["total_s"] + medians["flowjax sample"]["total_s"]
        ours = medians["maf_jax train"]["total_s"]
        for sampler in [name for name in medians if name.startswith("maf_jax sample")]:
            ratio = (ours + medians[sampler]["total_s"]) / flowjax
            notes.append(f"- D={features}: (maf_jax train + {sampler}) / flowjax's: {ratio:.2f}")
        ours_grad, theirs_grad = (
            medians[f"{lib} grad through sampling"]["total_s"] for lib in ("maf_jax", "flowjax")
        )
        ratio = ours_grad / theirs_grad
        notes.append(f"- D={features}: gradient through sampling / flowjax's: {ratio:.2f}")
        first = [
            medians[f"{lib} sample"]["total_s"] + medians[f"{lib} sample"]["call_s"]
            for lib in ("maf_jax", "flowjax")
        ]
        notes.append(
            f"- D={features}: first {speed.BATCH} samples (trace, lower, compile, one call), "
            f"maf_jax / flowjax's: {first[0]:.2f} / {first[1]:.2f} s"
        )
        print("\n".join(lines[-len(table) :] + notes[-5:]), flush=True)
    speed.write_report(args.out, "compile_time.md", lines, notes)


if __name__ == "__main__":
    main()
