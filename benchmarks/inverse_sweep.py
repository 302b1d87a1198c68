"""Time of one transform's incremental inverse against its forward pass, over the
chunk size, the number of blocks and of groups (the defaults of ``maf_jax.Incremental``
come from here), with the full-pass reference inverse as the first row of each D (and,
with ``--pallas``, the full-pass inverse as one Pallas kernel: for GPUs, interpreted on
a CPU).

    python benchmarks/inverse_sweep.py --features 16 64 256
"""

import argparse
import itertools
import time

import jax
import numpy as np
from flax import nnx

from maf_jax import FullPass, Incremental, MaskedAutoregressiveTransform
from maf_jax.inverses.pallas import PallasFullPass


def median_ms(compiled, *args, repeat=9):
    jax.block_until_ready(compiled(*args))
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times))


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--features", type=int, nargs="+", default=[16, 64, 256])
    parser.add_argument("--rows", type=int, default=4096)
    parser.add_argument("--chunks", type=int, nargs="+", default=[0, 1024])
    parser.add_argument("--blocks", type=int, nargs="+", default=[0, 4, 8])
    parser.add_argument("--groups", type=int, nargs="+", default=[Incremental().groups, 1])
    parser.add_argument(
        "--pallas", action="store_true", help="time the Pallas full-pass kernel too (GPU)"
    )
    args = parser.parse_args()
    print("| D | blocks | groups | chunk | inverse (ms) | forward (ms) | ratio | compile (s) |")
    print("|---|---|---|---|---|---|---|---|")
    for d in args.features:
        t = MaskedAutoregressiveTransform(d, hidden_features=(128, 128), rngs=nnx.Rngs(0))()
        y = jax.random.normal(jax.random.key(0), (args.rows, d))
        forward = median_ms(jax.jit(lambda b, y: b.forward(y)).lower(t, y).compile(), t, y)
        configs = [("full pass", "", "", FullPass())]
        if args.pallas:
            configs.append(("pallas full pass", "", "", PallasFullPass()))
        for blocks, groups, chunk in itertools.product(args.blocks, args.groups, args.chunks):
            inverse = Incremental(chunk=chunk or None, blocks=blocks or None, groups=groups)
            configs.append((blocks or "default", groups, chunk or "none", inverse))
        for blocks, groups, chunk, inverse in configs:
            fn = jax.jit(lambda b, y, inverse=inverse: inverse(b, y)[0])
            start = time.perf_counter()
            compiled = fn.lower(t, y).compile()
            compile_s = time.perf_counter() - start
            ms = median_ms(compiled, t, y)
            print(
                f"| {d} | {blocks} | {groups} | {chunk} | {ms:.1f} "
                f"| {forward:.1f} | {ms / forward:.1f} | {compile_s:.2f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
