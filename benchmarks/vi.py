"""Variational inference: one gradient of the reverse-KL loss through reparameterized samples.

The loss is ``mean(log q(x) - log p(x))`` over ``x ~ q`` drawn with ``rsample``, for a
standard normal target ``p``: each step differentiates through the sequential inverse,
the direction a MAF is slow in. maf_jax (``rsample_and_log_prob``, differentiated by the
implicit function theorem, and, for one release, by autodiff through the inverse), flowjax
(``masked_autoregressive_flow(invert=True)``, ``sample_and_log_prob``) and zuko
(``rsample_and_log_prob``) with the workload of ``speed.py``: 5 transforms, hidden
(128, 128), 512 samples. All in one process, timings in interleaved rounds (medians);
compile of the JAX gradients timed apart, with the XLA temporary memory of each
gradient program, and that of maf_jax's maximum-likelihood train step on 512 rows for
scale.

    python benchmarks/vi.py --features 16 64 256

Writes benchmarks/results/vi.md.
"""

from __future__ import annotations

import argparse
import importlib.util
import time
from pathlib import Path

import jax
import speed

HERE = Path(__file__).parent
SAMPLES = 512


def standard_normal(x):
    return -0.5 * (x**2).sum(-1)


def maf_jax_loss(features: int, derivative: str = "implicit"):
    from flax import nnx

    graphdef, params, rest = speed.maf_jax_flow(features, derivative=derivative)

    def loss(p, key):
        x, log_q = nnx.merge(graphdef, p, rest)().rsample_and_log_prob(key, (SAMPLES,))
        return (log_q - standard_normal(x)).mean()

    return params, loss


def flowjax_loss(features: int):
    import equinox as eqx

    params, static = speed.flowjax_flow(features, jax.random.key(0))

    def loss(p, key):
        x, log_q = eqx.combine(p, static).sample_and_log_prob(key, (SAMPLES,))
        return (log_q - standard_normal(x)).mean()

    return params, loss


def zuko_step(features: int):
    import torch
    import zuko

    torch.manual_seed(0)
    flow = zuko.flows.MAF(features, transforms=speed.TRANSFORMS, hidden_features=[speed.HIDDEN] * 2)

    def step():
        flow.zero_grad()
        x, log_q = flow().rsample_and_log_prob((SAMPLES,))
        (log_q + 0.5 * (x**2).sum(-1)).mean().backward()

    return step


def train_step_temp_mb(features: int) -> float:
    """XLA temporary memory of maf_jax's train step on ``SAMPLES`` rows."""
    import optax

    params, log_prob, _ = speed.maf_jax_model(features, None)
    optimizer = optax.adam(1e-3)
    x = jax.random.normal(jax.random.key(0), (SAMPLES, features))
    step = speed.train_step(log_prob, optimizer)
    compiled = step.lower(params, optimizer.init(params), x).compile()
    return compiled.memory_analysis().temp_size_in_bytes / 2**20


def run(features: int, repeat: int) -> dict:
    key = jax.random.key(1)
    losses = {
        "maf_jax": maf_jax_loss(features),
        "maf_jax autodiff": maf_jax_loss(features, "autodiff"),
    }
    if importlib.util.find_spec("flowjax"):
        losses["flowjax"] = flowjax_loss(features)
    fns, result = {}, {"train_temp_mb": train_step_temp_mb(features)}
    for name, (params, loss) in losses.items():
        start = time.perf_counter()
        compiled = jax.jit(jax.grad(loss)).lower(params, key).compile()
        result[f"{name}_compile_s"] = time.perf_counter() - start
        result[f"{name}_temp_mb"] = compiled.memory_analysis().temp_size_in_bytes / 2**20
        fns[name] = lambda c=compiled, p=params: jax.block_until_ready(c(p, key))
    if importlib.util.find_spec("zuko"):
        fns["zuko"] = zuko_step(features)
    times = speed.median_times(fns, repeat, slow=("flowjax", "zuko"))
    result.update({f"{name}_ms": ms for name, ms in times.items()})
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--features", type=int, nargs="+", default=[16, 64, 256])
    parser.add_argument("--repeat", type=int, default=9)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    speed.warm_up(jax)
    lines = [
        "| D | library | gradient step (ms) | compile (s) | XLA temp (MB) |",
        "|---|---|---|---|---|",
    ]
    notes = []
    for features in args.features:
        result = run(features, args.repeat)
        for name in ("maf_jax", "maf_jax autodiff", "flowjax", "zuko"):
            if f"{name}_ms" in result:
                compile_s = result.get(f"{name}_compile_s")
                compile_s = "n/a" if compile_s is None else f"{compile_s:.2f}"
                temp = result.get(f"{name}_temp_mb")
                temp = "n/a" if temp is None else f"{temp:.1f}"
                ms = result[f"{name}_ms"]
                lines.append(f"| {features} | {name} | {ms:.1f} | {compile_s} | {temp} |")
        ours = result["maf_jax_ms"]
        note = (
            f"- D={features}: gradient temp / train-step temp "
            f"{result['maf_jax_temp_mb'] / result['train_temp_mb']:.2f} "
            f"(train step {result['train_temp_mb']:.1f} MB); autodiff path / implicit "
            f"{result['maf_jax autodiff_ms'] / ours:.2f}x time, compile "
            f"{result['maf_jax autodiff_compile_s'] / result['maf_jax_compile_s']:.2f}x"
        )
        if "flowjax_ms" in result:
            note += (
                f"; flowjax / ours {result['flowjax_ms'] / ours:.1f}x time, compile ours / "
                f"flowjax {result['maf_jax_compile_s'] / result['flowjax_compile_s']:.2f}"
            )
        if "zuko_ms" in result:
            note += f"; zuko / ours {result['zuko_ms'] / ours:.1f}x"
        notes.append(note)
        print("\n".join(lines[-4:] + notes[-1:]), flush=True)
    speed.write_report(args.out, "vi.md", lines, notes)


if __name__ == "__main__":
    main()
