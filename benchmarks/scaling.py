"""Train-step throughput (samples/s) against the number of devices, data-parallel.

The step is the one ``fit(..., mesh=...)`` compiles: the batch sharded over a 1-D
mesh of N devices, parameters and Adam's state replicated, XLA adding the
gradients' all-reduce. Each device count runs in its own process: on a machine with
N accelerators it takes the first N; on a CPU it makes N virtual devices
(``--xla_force_host_platform_device_count``), which share the same cores, so there
the table shows the cost of the sharded program, not a speed-up. Compile is timed
apart; every round runs ``--steps`` steps and blocks until they are done; the table
holds medians over rounds.

    python benchmarks/scaling.py --devices 1 2 4 --features 64 --batch-per-device 256

Writes benchmarks/results/scaling.md (``--out`` elsewhere).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path

HERE = Path(__file__).parent


def child(args) -> None:
    """Times the sharded train step on ``args.child`` devices; prints one JSON line."""
    import jax
    import numpy as np
    import optax
    from flax import nnx

    from maf_jax import MAF

    count = args.child
    devices = jax.devices()[:count]
    assert len(devices) == count, f"asked for {count} devices, found {jax.devices()}"
    auto = (jax.sharding.AxisType.Auto,)
    mesh = jax.make_mesh((count,), ("data",), devices=devices, axis_types=auto)
    batch_sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())

    flow = MAF(args.features, transforms=5, hidden_features=(128, 128), rngs=nnx.Rngs(0))
    graphdef, params, rest = nnx.split(flow, nnx.Param, ...)
    optimizer = optax.adam(1e-3)
    params, opt_state, rest = jax.device_put((params, optimizer.init(params), rest), replicated)
    batch = args.batch_per_device * count
    x = np.random.default_rng(0).normal(size=(batch, args.features)).astype(np.float32)
    x = jax.device_put(x, batch_sharding)

    def loss(params, x):
        return -nnx.merge(graphdef, params, rest)().log_prob(x).mean()

    def step(params, opt_state, x):
        value, grads = jax.value_and_grad(loss)(params, x)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, value

    start = time.perf_counter()
    compiled = jax.jit(step, donate_argnums=(0, 1)).lower(params, opt_state, x).compile()
    compile_seconds = time.perf_counter() - start
    params, opt_state, value = compiled(params, opt_state, x)  # warm-up
    jax.block_until_ready(value)
    times = []
    for _ in range(args.rounds):
        start = time.perf_counter()
        for _ in range(args.steps):
            params, opt_state, value = compiled(params, opt_state, x)
        jax.block_until_ready((params, value))
        times.append((time.perf_counter() - start) / args.steps)
    step_seconds = statistics.median(times)
    print(
        json.dumps(
            dict(
                devices=count,
                platform=devices[0].platform,
                batch=batch,
                step_ms=1e3 * step_seconds,
                samples_per_s=batch / step_seconds,
                compile_s=compile_seconds,
            )
        )
    )


def run(args, count: int, virtual: bool) -> dict:
    env = dict(os.environ)
    if virtual:
        flag = f"--xla_force_host_platform_device_count={count}"
        env |= {"XLA_FLAGS": f"{env.get('XLA_FLAGS', '')} {flag}", "JAX_PLATFORMS": "cpu"}
    command = [sys.executable, __file__, "--child", str(count)]
    command += ["--features", str(args.features), "--batch-per-device", str(args.batch_per_device)]
    command += ["--steps", str(args.steps), "--rounds", str(args.rounds)]
    out = subprocess.run(command, env=env, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def table(args, results: list[dict], accelerators: str, load: float) -> str:
    base = results[0]["samples_per_s"] / results[0]["devices"]
    rows = [
        f"| {r['devices']} | {r['platform']} | {r['batch']} | {r['step_ms']:.2f} | "
        f"{r['samples_per_s']:,.0f} | {r['samples_per_s'] / base / r['devices']:.2f} | "
        f"{r['compile_s']:.2f} |"
        for r in results
    ]
    command = "python benchmarks/scaling.py " + " ".join(sys.argv[1:])
    return "\n".join(
        [
            f"`{command}`",
            "",
            f"D={args.features}, 5 transforms, hidden (128, 128), Adam; "
            f"{args.batch_per_device} rows per device, medians of {args.rounds} rounds of "
            f"{args.steps} steps; {accelerators}; JAX {version('jax')}, "
            f"{platform.machine()} with {os.cpu_count()} cores, load average {load:.1f} "
            "when it started (work of other processes slows the timings).",
            "",
            "| devices | platform | global batch | step (ms) | samples/s | efficiency | "
            "compile (s) |",
            "|---|---|---|---|---|---|---|",
            *rows,
            "",
            "Efficiency: samples/s per device against one device's (1.00: linear scaling).",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--features", type=int, default=64)
    parser.add_argument("--batch-per-device", type=int, default=256)
    parser.add_argument("--steps", type=int, default=20, help="steps per timed round")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "scaling.md")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)

    # the devices, seen from another process: this one holds no accelerator memory
    probe = "import jax, json; d = jax.devices(); "
    probe += "print(json.dumps([d[0].platform, len(d), d[0].device_kind]))"
    out = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True)
    kind, found, name = json.loads(out.stdout.strip().splitlines()[-1])
    virtual = kind == "cpu"
    accelerators = (
        f"{os.cpu_count()}-core CPU, virtual devices sharing its cores"
        if virtual
        else f"{found} x {name}"
    )
    load, results = os.getloadavg()[0], []
    for count in args.devices:
        if not virtual and count > found:
            print(f"skipping {count} devices: this machine has {found}", file=sys.stderr)
            continue
        results.append(run(args, count, virtual))
        print(json.dumps(results[-1]), flush=True)
    text = table(args, results, accelerators, load)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
