"""Compile time of ``maf-jax sample`` in a new process, with and without the cache.

The command keeps compiled programs in a cache folder (JAX's persistent compilation
cache), so a second process loads them instead of compiling. Each run is a fresh
process that samples from one checkpoint (the speed workload: 5 transforms, hidden
(128, 128)); it sums JAX's compile events (XLA compiles, and cache reads) and the
wall time of the command. Runs: the cache off, a cold cache (empty folder), a warm
cache (the folder the cold run filled); medians over rounds.

    python benchmarks/compile_cache.py --features 64 --rounds 3

Writes benchmarks/results/compile_cache.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import speed

HERE = Path(__file__).parent
COMPILE_EVENTS = ("/jax/core/compile/backend_compile_duration",)
CACHE_EVENTS = ("/jax/compilation_cache/cache_retrieval_time_sec",)


def child(argv: list[str]) -> None:
    """Runs ``maf-jax`` with ``argv`` in this process and prints its compile seconds."""
    import jax

    seconds = {"compile": 0.0, "cache_read": 0.0}

    def listen(event, duration, **_):
        if event in COMPILE_EVENTS:
            seconds["compile"] += duration
        elif event in CACHE_EVENTS:
            seconds["cache_read"] += duration

    jax.monitoring.register_event_duration_secs_listener(listen)
    from maf_jax.cli.main import main

    start = time.perf_counter()
    status = main(argv)
    seconds["command"] = time.perf_counter() - start
    assert status == 0, status
    print(json.dumps(seconds))


def run(argv: list[str], cache: str) -> dict:
    env = os.environ | {"MAF_JAX_COMPILATION_CACHE": cache, "JAX_PLATFORMS": "cpu"}
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, __file__, "--child", *argv],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    result = json.loads(out.strip().splitlines()[-1])
    return result | {"process": time.perf_counter() - start}


def checkpoint(features: int, path: Path) -> None:
    from flax import nnx

    from maf_jax import MAF, checkpoint

    flow = MAF(features, transforms=5, hidden_features=(128, 128), rngs=nnx.Rngs(0))
    checkpoint.save(path, flow)


def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        return child(sys.argv[2:])
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--features", type=int, nargs="+", default=[64])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("-n", type=int, default=4096, help="samples")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    lines = [
        "| D | cache | XLA compile (s) | cache reads (s) | command (s) | process (s) |",
        "|---|---|---|---|---|---|",
    ]
    notes = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for features in args.features:
            model = tmp / f"model-{features}.npz"
            checkpoint(features, model)
            argv = ["sample", str(model), "-n", str(args.n), "-o", str(tmp / "samples.npy")]
            runs = {"off": [], "cold": [], "warm": []}
            for round_ in range(args.rounds):
                folder = tmp / f"cache-{features}-{round_}"
                runs["off"].append(run(argv, "off"))
                runs["cold"].append(run(argv, str(folder)))
                runs["warm"].append(run(argv, str(folder)))
            medians = speed.medians(runs)
            for name, m in medians.items():
                lines.append(
                    f"| {features} | {name} | {m['compile']:.2f} | {m['cache_read']:.2f} "
                    f"| {m['command']:.2f} | {m['process']:.2f} |"
                )
            off, warm = medians["off"], medians["warm"]
            notes.append(
                f"- D={features}: a second process with the cache compiles "
                f"{warm['compile'] + warm['cache_read']:.2f} s instead of {off['compile']:.2f} s; "
                f"the command takes {warm['command']:.2f} s instead of {off['command']:.2f} s"
            )
            print("\n".join(lines[-3:] + notes[-1:]), flush=True)
    command = (
        f"`python benchmarks/compile_cache.py --features {' '.join(map(str, args.features))} "
        f"--rounds {args.rounds}`, {args.n} samples, medians."
    )
    speed.write_report(args.out, "compile_cache.md", command, lines, notes)


if __name__ == "__main__":
    main()
