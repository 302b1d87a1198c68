"""Train steps, compiles and whole fits of the flows SBI users train by the hundred.

maf_jax against flowjax and an unmasked dense MLP of the same shapes (the floor), each
measurement in its own process, libraries alternating, ``--rounds`` processes each;
the table gives the medians over the processes of each process's median.

- train step: 5 transforms, log_prob + gradient + Adam, at features 2, 5 and 10 with
  hidden (50, 50) (batch 256 and 512) and at 64 and 256 with hidden (128, 128)
  (batch 512); the first compile of the train step plus sampling 4096 rows; and at
  ``--grad-sample`` sizes the compile of the gradient through sampling (variational
  inference: 512 samples).
- fit: a whole ``maf_jax.fit`` against flowjax's ``fit_to_data`` on 10,000 rows of a
  5-D Gaussian mixture, hidden (50, 50), batch 256, ``--epochs`` epochs, 10% validation
  for both, wall time from the call to its return (compiles included).

    python benchmarks/small_flows.py                 # everything, 3 rounds (~15 min)
    python benchmarks/small_flows.py --parts step --sizes 5:50:512

Writes benchmarks/results/small_flows.json and small_flows.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import speed

HERE = Path(__file__).parent
SIZES = ("2:50:256", "5:50:256", "5:50:512", "10:50:512", "64:128:512", "256:128:512")
LIBRARIES = ("maf_jax", "flowjax", "dense")
SAMPLES, VI_SAMPLES, ROWS = 4096, 512, 10_000


def step_child(library: str, features: int, hidden: int, batch: int, grad_sample: bool) -> dict:
    """One process: the train step's median time, its compile, and sampling's compile."""
    import jax
    import jax.numpy as jnp
    import optax

    key = jax.random.key(0)
    speed.warm_up(jax)
    x = jax.random.normal(key, (batch, features))
    optimizer = optax.adam(1e-3)
    sample = None
    if library == "maf_jax":
        from flax import nnx

        graphdef, params, rest = speed.maf_jax_flow(features, hidden=hidden)

        def log_prob(p, x):
            return nnx.merge(graphdef, p, rest)().log_prob(x)

        def sample(p, k, n=SAMPLES):
            return nnx.merge(graphdef, p, rest)().rsample(k, (n,))

    elif library == "flowjax":
        import equinox as eqx

        params, static = speed.flowjax_flow(features, key, hidden=hidden)

        def log_prob(p, x):
            return eqx.combine(p, static).log_prob(x)

        def sample(p, k, n=SAMPLES):
            return eqx.combine(p, static).sample(k, (n,))

    else:
        params, log_prob = speed.dense_model(features, key, hidden)
    state = optimizer.init(params)
    result = {}
    result["compile_train_s"], train = speed.timed_compile(
        speed.train_step(log_prob, optimizer), params, state, x
    )
    if sample is not None:
        result["compile_sample_s"] = speed.timed_compile(jax.jit(sample), params, key)[0]
        if grad_sample:  # the reverse KL's gradient: log q of its own samples

            def reverse_kl(p, k):
                draws = sample(p, k, VI_SAMPLES)
                return jnp.mean(log_prob(p, draws) + 0.5 * jnp.sum(draws**2, -1))

            grad = jax.jit(jax.grad(reverse_kl))
            result["compile_grad_sample_s"] = speed.timed_compile(grad, params, key)[0]
    step = {"train_ms": lambda: jax.block_until_ready(train(params, state, x))}
    return result | speed.median_times(step, 200)


def mixture(rows: int, features: int, seed: int = 0):
    """A 5-D mixture of three Gaussians: data a flow has something to learn from."""
    import numpy as np

    rng = np.random.default_rng(seed)
    means = rng.normal(size=(3, features)) * 3
    which = rng.integers(0, 3, rows)
    return (means[which] + rng.normal(size=(rows, features)) * 0.5).astype(np.float32)


def fit_child(library: str, epochs: int) -> dict:
    """One process: the wall time of a whole fit to ``epochs`` epochs."""
    import jax

    speed.warm_up(jax)
    data = mixture(ROWS, 5)
    key = jax.random.key(0)
    start = time.perf_counter()
    if library == "maf_jax":
        from flax import nnx

        import maf_jax

        flow = maf_jax.MAF(5, transforms=5, hidden_features=(50, 50), rngs=nnx.Rngs(0))
        model, history = maf_jax.fit(
            flow, data, key=key, epochs=epochs, batch_size=256, patience=None, progress=False
        )
        jax.block_until_ready(nnx.state(model))
        losses = history.val_nll
    else:
        import jax.numpy as jnp
        from flowjax.distributions import Normal
        from flowjax.flows import masked_autoregressive_flow
        from flowjax.train import fit_to_data

        flow = masked_autoregressive_flow(
            key, base_dist=Normal(jnp.zeros(5)), flow_layers=5, nn_width=50, nn_depth=2
        )
        flow, losses = fit_to_data(
            key, flow, data, learning_rate=1e-3, max_epochs=epochs, max_patience=epochs,
            batch_size=256, val_prop=0.1, show_progress=False,
        )  # fmt: skip
        jax.block_until_ready(flow)
        losses = [float(v) for v in losses["val"]]
    # maf_jax standardizes the data (a log-det of -sum(log std) reported), flowjax does
    # not: both are the NLL of the raw data, comparable as they are
    return {"fit_s": time.perf_counter() - start, "final_val_nll": losses[-1]}


def run(args: list[str]) -> dict:
    proc = subprocess.run(
        [sys.executable, __file__, "--child", *args], capture_output=True, text=True, env=os.environ
    )
    if proc.returncode:
        raise RuntimeError(f"{args} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def median_over(runs: list[dict]) -> dict:
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def report(steps: dict, fits: dict) -> list[str]:
    lines = []
    if steps:
        lines += [
            "| features | hidden | batch | library | train step (ms) | flowjax / this "
            "| this / dense | compile train + sample (s) | compile grad through sampling (s) |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for size, by in steps.items():
            d, h, b = size.split(":")
            for lib, r in by.items():
                peer = by.get("flowjax", {}).get("train_ms", float("nan"))
                dense = by.get("dense", {}).get("train_ms", float("nan"))
                compile_s = r["compile_train_s"] + r.get("compile_sample_s", float("nan"))
                lines.append(
                    f"| {d} | {h} | {b} | {lib} | {r['train_ms']:.3f} | "
                    f"{peer / r['train_ms']:.2f}x | {r['train_ms'] / dense:.2f} | "
                    f"{compile_s:.2f} | {r.get('compile_grad_sample_s', float('nan')):.2f} |"
                )
    if fits:
        lines += [
            "",
            "| library | whole fit (s) | final validation NLL | flowjax / this |",
            "|---|---|---|---|",
        ]
        for lib, r in fits.items():
            ratio = fits["flowjax"]["fit_s"] / r["fit_s"] if "flowjax" in fits else float("nan")
            lines.append(f"| {lib} | {r['fit_s']:.2f} | {r['final_val_nll']:.3f} | {ratio:.2f}x |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), help="features:hidden:batch")
    parser.add_argument("--grad-sample", nargs="*", default=["5:50:256", "64:128:512"])
    parser.add_argument("--libraries", nargs="+", default=list(LIBRARIES), choices=LIBRARIES)
    parser.add_argument("--parts", nargs="+", default=["step", "fit"], choices=["step", "fit"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, library, *rest = args.child
        if kind == "step":
            d, h, b = map(int, rest[0].split(":"))
            result = step_child(library, d, h, b, rest[0] in args.grad_sample)
        else:
            result = fit_child(library, args.epochs)
        print(json.dumps(result))
        return
    steps, fits = {}, {}
    if "step" in args.parts:
        for size in args.sizes:
            runs = {lib: [] for lib in args.libraries}
            for _ in range(args.rounds):  # libraries alternate, round after round
                for lib in args.libraries:
                    extra = ["--grad-sample", *args.grad_sample]
                    runs[lib].append(run(["step", lib, size, *extra]))
            steps[size] = {lib: median_over(r) for lib, r in runs.items()}
            print(size, json.dumps(steps[size]), flush=True)
    if "fit" in args.parts:
        libs = [lib for lib in args.libraries if lib != "dense"]
        runs = {lib: [] for lib in libs}
        for _ in range(args.rounds):
            for lib in libs:
                runs[lib].append(run(["fit", lib, "--epochs", str(args.epochs)]))
        fits = {lib: median_over(r) for lib, r in runs.items()}
        print("fit", json.dumps(fits), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "small_flows.json").write_text(json.dumps({"steps": steps, "fits": fits}, indent=1))
    speed.write_report(args.out, "small_flows.md", report(steps, fits))


if __name__ == "__main__":
    main()
