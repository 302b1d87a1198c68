"""``jax.vmap`` over contexts against one batched call, as simulation-based inference does.

A conditional MAF (10 features, 5 context features, 5 transforms, the default hidden
sizes) draws 1000 samples for each of 100 contexts, two ways: ``jax.vmap`` of
``flow(c).sample(k, (1000,))`` over the contexts and their keys, which gives
``(100, 1000, 10)``, and ``flow(C).sample(key, (1000,))`` with ``C`` of shape
``(100, 5)``, which gives ``(sample, batch, features) = (1000, 100, 10)``; the batched
call is timed as it comes and transposed to the vmapped layout. The same for
``sample_and_log_prob``, for ``log_prob`` of ``(100, 1000, 10)`` points
(``flow(C[:, None])`` has the vmapped layout, ``flow(C)`` reads the points as
``(1000, 100, 10)``) and for the gradient of a loss of ``rsample``. Every program is
jitted once and compiled apart; the timings run in interleaved rounds and block until
done; the table gives medians, their range over the rounds, and the transposes and
copies in each compiled program.

    python benchmarks/vmap_contexts.py                 # writes results/vmap_contexts.md
    python benchmarks/vmap_contexts.py --repeat 31 --out /tmp/vmap.md
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import time
from pathlib import Path

import jax
import jax.numpy as jnp
from flax import nnx

from maf_jax import MAF

HERE = Path(__file__).parent
FEATURES, CONTEXT, TRANSFORMS = 10, 5, 5


def programs(contexts: int, samples: int) -> dict[str, dict[str, tuple]]:
    """Per operation, each way of running it: ``(function, args)``, to be jitted."""
    flow = MAF(FEATURES, context=CONTEXT, transforms=TRANSFORMS, rngs=nnx.Rngs(0))
    graphdef, params, rest = nnx.split(flow, nnx.Param, ...)
    keys = jax.random.split(jax.random.key(1), contexts + 1)
    c = jax.random.normal(keys[-1], (contexts, CONTEXT))
    keys, key = keys[:-1], keys[0]
    x = jax.random.normal(jax.random.key(2), (contexts, samples, FEATURES))
    by_context, by_sample = f"({contexts}, {samples})", f"({samples}, {contexts})"

    def dist(p, c):
        return nnx.merge(graphdef, p, rest)(c)

    def vmapped(method):
        def run(p, c, keys):
            return jax.vmap(lambda c, k: getattr(dist(p, c), method)(k, (samples,)))(c, keys)

        return run

    def batched(method, transpose=False):
        def run(p, c, key):
            out = getattr(dist(p, c), method)(key, (samples,))
            return jax.tree.map(lambda a: jnp.swapaxes(a, 0, 1), out) if transpose else out

        return run

    def gradient(draw):
        return lambda p, c, k: jax.grad(lambda p: jnp.mean(draw(p, c, k) ** 2))(p)

    def operation(method):
        return {
            f"vmap, {by_context}": (vmapped(method), (params, c, keys)),
            f"batched, {by_sample}": (batched(method), (params, c, key)),
            f"batched, transposed to {by_context}": (batched(method, True), (params, c, key)),
        }

    return {
        "sample": operation("sample"),
        "sample_and_log_prob": operation("sample_and_log_prob"),
        "log_prob": {
            f"vmap, {by_context}": (
                lambda p, c, x: jax.vmap(lambda c, x: dist(p, c).log_prob(x))(c, x),
                (params, c, x),
            ),
            f"batched flow(C[:, None]), {by_context}": (
                lambda p, c, x: dist(p, c[:, None]).log_prob(x),
                (params, c, x),
            ),
            f"batched flow(C), {by_sample}": (
                lambda p, c, x: dist(p, c).log_prob(x),
                (params, c, jnp.swapaxes(x, 0, 1)),
            ),
        },
        "gradient of mean(rsample ** 2)": {
            "vmap": (gradient(vmapped("rsample")), (params, c, keys)),
            "batched": (gradient(batched("rsample")), (params, c, key)),
        },
    }


def count(text: str, op: str) -> int:
    """Instructions ``op`` in an HLO module's text."""
    return len(re.findall(rf"= \S+ {op}\(", text))


def measure(ways: dict[str, tuple], repeat: int) -> dict[str, dict]:
    """Compile each way apart, then time them in ``repeat`` interleaved rounds."""
    compiled, out = {}, {}
    for name, (fn, args) in ways.items():
        start = time.perf_counter()
        compiled[name] = jax.jit(fn).lower(*args).compile()
        text = compiled[name].as_text()
        out[name] = dict(
            compile=time.perf_counter() - start,
            transposes=count(text, "transpose"),
            copies=count(text, "copy"),
            times=[],
        )
        jax.block_until_ready(compiled[name](*args))  # warm up
    for _ in range(repeat):
        for name, (_, args) in ways.items():
            start = time.perf_counter()
            jax.block_until_ready(compiled[name](*args))
            out[name]["times"].append(1e3 * (time.perf_counter() - start))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--contexts", type=int, default=100)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "vmap_contexts.md")
    args = parser.parse_args()
    lines = [
        f"`python benchmarks/vmap_contexts.py --contexts {args.contexts} --samples "
        f"{args.samples} --repeat {args.repeat}`: MAF({FEATURES}, context={CONTEXT}, "
        f"transforms={TRANSFORMS}), hidden (64, 64); {args.contexts} contexts x "
        f"{args.samples} samples; jax {jax.__version__} on {jax.default_backend()} "
        f"({os.cpu_count()} CPUs); medians of {args.repeat} interleaved rounds, range "
        "over the rounds; ratio to the first batched row.",
        "",
        "| operation | way, layout | time (ms) | range (ms) | ratio | compile (s) "
        "| transposes | copies |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for operation, ways in programs(args.contexts, args.samples).items():
        results = measure(ways, args.repeat)
        medians = {name: statistics.median(r["times"]) for name, r in results.items()}
        batched = next(m for name, m in medians.items() if name.startswith("batched"))
        for name, r in results.items():
            lines.append(
                f"| {operation} | {name} | {medians[name]:.1f} "
                f"| {min(r['times']):.1f}-{max(r['times']):.1f} "
                f"| {medians[name] / batched:.2f} | {r['compile']:.2f} "
                f"| {r['transposes']} | {r['copies']} |"
            )
            print(lines[-1], flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
