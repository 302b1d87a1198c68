"""Time of one transform's incremental inverse against its forward pass, over the
chunk size and the number of blocks (the defaults CHUNK and BLOCKS come from here).

    python benchmarks/inverse_sweep.py --features 16 64 256
"""

import argparse
import time

import jax
import numpy as np
from flax import nnx

from maf_jax import MaskedAutoregressiveTransform
from maf_jax import autoregressive as ar


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
    parser.add_argument("--chunks", type=int, nargs="+", default=[0, 512, 1024, 2048])
    parser.add_argument("--blocks", type=int, nargs="+", default=[0, 4, 8])
    args = parser.parse_args()
    print("| D | blocks | chunk | inverse (ms) | forward (ms) | ratio | compile (s) |")
    print("|---|---|---|---|---|---|---|")
    for d in args.features:
        t = MaskedAutoregressiveTransform(d, hidden_features=(128, 128), rngs=nnx.Rngs(0))()
        y = jax.random.normal(jax.random.key(0), (args.rows, d))
        forward = median_ms(jax.jit(lambda b, y: b.forward(y)).lower(t, y).compile(), t, y)
        for blocks in args.blocks:
            for chunk in args.chunks:
                ar.BLOCKS = blocks or None
                fn = jax.jit(lambda b, y, c=chunk or None: ar.incremental_inverse(b, y, c)[0])
                start = time.perf_counter()
                compiled = fn.lower(t, y).compile()
                compile_s = time.perf_counter() - start
                ms = median_ms(compiled, t, y)
                print(
                    f"| {d} | {blocks or 'default'} | {chunk or 'none'} | {ms:.1f} | {forward:.1f} "
                    f"| {ms / forward:.1f} | {compile_s:.2f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
