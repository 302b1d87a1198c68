"""Time to build a flow outside ``jax.jit``, against flowjax, each in a fresh process.

A flow is built eagerly, once per shape: what it compiles there is paid again by every
new process and every new size (an SBI study that trains a flow per task, a test
suite, a notebook). Each round starts one process per library, which builds, in turn:
the first flow of the process (5 features, context 3, hidden (50, 50), 5 transforms),
a flow of new shapes (64 features, hidden (128, 128)), and the first again (every
program compiled by then). Rounds alternate the libraries; medians.

    python benchmarks/build_time.py --rounds 5

Writes benchmarks/results/build_time.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent
TRANSFORMS = 5
# (features, context, hidden): the first flow of the process, then one of new shapes
FIRST, NEW = (5, 3, 50), (64, 0, 128)
STAGES = ("first flow", "new shapes", "first flow again")


def maf_jax_builder():
    from flax import nnx

    from maf_jax import MAF

    def build(features, context, hidden):
        flow = MAF(features, context, TRANSFORMS, hidden_features=(hidden,) * 2, rngs=nnx.Rngs(0))
        return nnx.state(flow)

    return build


def flowjax_builder():
    import jax
    import jax.numpy as jnp
    from flowjax.distributions import Normal
    from flowjax.flows import masked_autoregressive_flow

    def build(features, context, hidden):
        return masked_autoregressive_flow(
            jax.random.key(0),
            base_dist=Normal(jnp.zeros(features)),
            cond_dim=context or None,
            flow_layers=TRANSFORMS,
            nn_width=hidden,
            nn_depth=2,
            invert=True,
        )

    return build


def child(library: str) -> None:
    """Builds the three flows in this process and prints their wall times as JSON."""
    import jax

    jax.block_until_ready(jax.numpy.ones(1))  # the backend is up before timing
    build = {"maf_jax": maf_jax_builder, "flowjax": flowjax_builder}[library]()
    times = []
    for sizes in (FIRST, NEW, FIRST):
        start = time.perf_counter()
        jax.block_until_ready(jax.tree.leaves(build(*sizes)))
        times.append(time.perf_counter() - start)
    print(json.dumps(dict(zip(STAGES, times))))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--libraries", nargs="+", default=["maf_jax", "flowjax"])
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child)
    runs = {name: [] for name in args.libraries}
    for _ in range(args.rounds):
        for name in args.libraries:
            command = [sys.executable, __file__, "--child", name]
            out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
            runs[name].append(json.loads(out.strip().splitlines()[-1]))
    lines = [
        "| library | " + " | ".join(f"{s} (s)" for s in STAGES) + " |",
        "|---|" + "---|" * len(STAGES),
    ]
    for name, rows in runs.items():
        cells = [f"{statistics.median(r[s] for r in rows):.3f}" for s in STAGES]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    footer = (
        f"Medians of {args.rounds} fresh processes per library: a flow of {FIRST[0]} "
        f"features, context {FIRST[1]}, hidden ({FIRST[2]}, {FIRST[2]}); then {NEW[0]} "
        f"features, hidden ({NEW[2]}, {NEW[2]}); {TRANSFORMS} transforms each."
    )
    import speed  # not at the top: the children time their imports

    speed.write_report(args.out, "build_time.md", lines, footer)


if __name__ == "__main__":
    main()
