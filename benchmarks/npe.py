"""Neural posterior estimation on box priors: how much posterior mass leaks out of the prior.

Two tasks with uniform box priors, 10,000 simulations, conditional MAFs of 5
transforms with hidden (50, 50) (sbi's default estimator), trained by the loop of
``density.py`` (Adam 1e-3, batch 128, early stopping after 20 epochs):

- ``two_moons`` (sbi's): theta uniform on [-1, 1]^2, x the two-moons simulator;
- ``gaussian_box``: theta uniform on [-3, 3]^5, x = theta + N(0, I): posteriors are
  normals truncated to the box, wide against it.

For maf_jax's MAF and NSF without and with ``bounds`` (the prior's box; ``--link``
picks the map, the library's default if not given), and zuko's and flowjax's MAF and
NSF (``_nsf``: rational-quadratic splines of 8 bins on [-5, 5], the same networks): the
fraction of posterior draws outside the prior (10,000 per observation, for 20
observations of held-out simulations) and of those inside but within 1e-6 of the
box's width of a bound (where mass that a flow spreads past a map's tail lands; the
draws of a flow fit to data rarely come so close), the held-out mean log q(theta | x) on 2,000
fresh simulations (nats, higher is better; the flows without bounds also spend mass
outside the box), the seconds to draw 10,000 accepted samples (draws of 10,000 until
10,000 lie inside, the sampler compiled first; mean over 5 observations), and the
seconds to train. Under the table, each bounded flow's held-out log q minus its
unbounded twin's, paired by seed.

    python benchmarks/npe.py two_moons --seeds 0 1 2
    python benchmarks/npe.py gaussian_box --seeds 0 1 2

Writes benchmarks/results/npe_<task>.json and .md for every library and the default
link, npe_<task>_<link>.* for another ``--link`` or ``--libraries``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from density import train_functional, train_loop

from maf_jax.bijections.support import DEFAULT_LINK, LINKS

HERE = Path(__file__).parent
HIDDEN, TRANSFORMS, SIMULATIONS, TEST, OBSERVATIONS, DRAWS = 50, 5, 10_000, 2_000, 20, 10_000
NEXT_TO_BOUND = 1e-6  # of the box's width
TIMED = 5  # observations whose 10,000 accepted draws are timed


def simulate(task: str, rng: np.random.Generator, n: int):
    """``n`` pairs ``(theta, x)`` and the prior's box ``(low, high)``."""
    if task == "two_moons":
        theta = rng.uniform(-1, 1, (n, 2))
        angle = rng.uniform(-math.pi / 2, math.pi / 2, n)
        radius = rng.normal(0.1, 0.01, n)
        moon = np.stack([radius * np.cos(angle) + 0.25, radius * np.sin(angle)], 1)
        shift = np.stack([-np.abs(theta.sum(1)), theta[:, 1] - theta[:, 0]], 1) / math.sqrt(2)
        return theta, moon + shift, (-1.0, 1.0)
    theta = rng.uniform(-3, 3, (n, 5))
    return theta, theta + rng.normal(size=(n, 5)), (-3.0, 3.0)


def run_maf_jax(data, seed, epochs, nsf=False, bounded=False, link=DEFAULT_LINK):
    from flax import nnx

    from maf_jax import MAF, NSF
    from maf_jax.flows.standardized import Standardized

    (theta, x), (theta_val, x_val), low_high = data
    flow = (NSF if nsf else MAF)(
        theta.shape[1],
        x.shape[1],
        transforms=TRANSFORMS,
        hidden_features=(HIDDEN, HIDDEN),
        bounds=low_high if bounded else None,
        link=link,
        rngs=nnx.Rngs(seed),
    )
    model = Standardized.from_data(flow, theta, x)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    features = theta.shape[1]

    def log_prob(p, rows):
        return nnx.merge(graphdef, p, rest)(rows[:, features:]).log_prob(rows[:, :features])

    def sample(p, x_o, key):
        return nnx.merge(graphdef, p, rest)(x_o).sample(key, (DRAWS,))

    train, val = np.concatenate([theta, x], 1), np.concatenate([theta_val, x_val], 1)
    params, epochs_run = train_functional(
        params, log_prob, jax.jit, jax.grad, optax.apply_updates, train, val, epochs, seed
    )
    return jax.jit(log_prob), jax.jit(sample), params, epochs_run


def standardizer(theta, x):
    """Maps ``(theta, x)`` rows to standardised ones, and back for ``theta``."""
    stats = [(a.mean(0), a.std(0)) for a in (theta, x)]
    forward = lambda t, c: ((t - stats[0][0]) / stats[0][1], (c - stats[1][0]) / stats[1][1])  # noqa: E731
    return forward, lambda t: t * stats[0][1] + stats[0][0], np.log(stats[0][1]).sum()


def run_flowjax(data, seed, epochs, nsf=False):
    import equinox as eqx
    import paramax
    from flowjax.bijections import RationalQuadraticSpline
    from flowjax.distributions import Normal
    from flowjax.flows import masked_autoregressive_flow

    (theta, x), (theta_val, x_val), _ = data
    to_standard, from_standard, log_std = standardizer(theta, x)
    flow = masked_autoregressive_flow(
        jax.random.key(seed), base_dist=Normal(jnp.zeros(theta.shape[1])),
        transformer=RationalQuadraticSpline(knots=8, interval=5) if nsf else None,
        cond_dim=x.shape[1], flow_layers=TRANSFORMS, nn_width=HIDDEN, nn_depth=2, invert=True,
    )  # fmt: skip
    params, static = eqx.partition(
        flow, eqx.is_inexact_array, is_leaf=lambda v: isinstance(v, paramax.NonTrainable)
    )
    features = theta.shape[1]

    def log_prob(p, rows):
        t, c = to_standard(rows[:, :features], rows[:, features:])
        flow = paramax.unwrap(eqx.combine(p, static))
        return flow.log_prob(t, condition=c) - log_std

    def sample(p, x_o, key):
        _, c = to_standard(jnp.zeros(features), x_o)
        draws = paramax.unwrap(eqx.combine(p, static)).sample(key, (DRAWS,), condition=c)
        return from_standard(draws)

    train, val = np.concatenate([theta, x], 1), np.concatenate([theta_val, x_val], 1)
    params, epochs_run = train_functional(
        params, log_prob, eqx.filter_jit, eqx.filter_grad, eqx.apply_updates,
        train, val, epochs, seed,
    )  # fmt: skip
    return eqx.filter_jit(log_prob), eqx.filter_jit(sample), params, epochs_run


def run_zuko(data, seed, epochs, nsf=False):
    import copy

    import torch
    import zuko

    (theta, x), (theta_val, x_val), _ = data
    to_standard, from_standard, log_std = standardizer(theta, x)
    torch.manual_seed(seed)
    flow = (zuko.flows.NSF if nsf else zuko.flows.MAF)(
        theta.shape[1], x.shape[1], transforms=TRANSFORMS, hidden_features=[HIDDEN] * 2
    )
    optimizer = torch.optim.Adam(flow.parameters(), lr=1e-3)
    features = theta.shape[1]

    def tensors(rows):
        t, c = to_standard(rows[:, :features], rows[:, features:])
        return torch.from_numpy(np.asarray(t, np.float32)), torch.from_numpy(
            np.asarray(c, np.float32)
        )

    def step(rows):
        optimizer.zero_grad()
        t, c = tensors(rows)
        (-flow(c).log_prob(t).mean()).backward()
        optimizer.step()

    val = np.concatenate([theta_val, x_val], 1)

    def log_prob(_, rows):
        with torch.no_grad():
            t, c = tensors(np.asarray(rows))
            return flow(c).log_prob(t).numpy() - log_std

    def sample(_, x_o, key):
        with torch.no_grad():
            c = torch.from_numpy(np.asarray(to_standard(np.zeros(features), x_o)[1], np.float32))
            return from_standard(flow(c).sample((DRAWS,)).numpy())

    epochs_run, _ = train_loop(
        step, lambda: -float(log_prob(None, val).mean()), lambda: copy.deepcopy(flow.state_dict()),
        flow.load_state_dict, np.concatenate([theta, x], 1), epochs, seed,
    )  # fmt: skip
    return log_prob, sample, None, epochs_run


def accepted_seconds(sample, params, observation, box) -> float:
    """Seconds to draw ``DRAWS`` samples inside the box by rejection, compiled first."""
    np.asarray(sample(params, observation, jax.random.key(0)))  # compile
    start, accepted, round_ = time.perf_counter(), 0, 0
    while accepted < DRAWS:
        round_ += 1
        draws = np.asarray(sample(params, observation, jax.random.key(round_)))
        accepted += int(np.all((draws > box[0]) & (draws < box[1]), axis=-1).sum())
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("task", choices=["two_moons", "gaussian_box"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--epochs", type=int, default=100, help="most epochs")
    names = [
        f"{library}{kind}"
        for kind in ("", "_nsf")
        for library in ("maf_jax", "maf_jax_bounds", "zuko", "flowjax")
    ]
    names = [name.replace("bounds_nsf", "nsf_bounds") for name in names]
    parser.add_argument("--libraries", nargs="+", default=names, choices=names)
    parser.add_argument(
        "--link", choices=LINKS, default=DEFAULT_LINK, help="the bounded flows' map"
    )
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()

    def runner(name):
        nsf = "_nsf" in name
        if name.startswith("maf_jax"):
            bounded = name.endswith("_bounds")
            return lambda *a: run_maf_jax(*a, nsf=nsf, bounded=bounded, link=args.link)
        return lambda *a: {"zuko": run_zuko, "flowjax": run_flowjax}[name.split("_")[0]](
            *a, nsf=nsf
        )

    runners = {name: runner(name) for name in args.libraries}
    runs = {name: [] for name in args.libraries}
    for seed in args.seeds:
        rng = np.random.default_rng(seed)
        theta, x, box = simulate(args.task, rng, SIMULATIONS)
        split = SIMULATIONS * 9 // 10
        data = ((theta[:split], x[:split]), (theta[split:], x[split:]), box)
        test_theta, test_x, _ = simulate(args.task, rng, TEST)
        test = np.concatenate([test_theta, test_x], 1).astype(np.float32)
        observations = test_x[:OBSERVATIONS].astype(np.float32)
        for name in args.libraries:
            start = time.perf_counter()
            log_prob, sample, params, epochs = runners[name](data, seed, args.epochs)
            seconds = time.perf_counter() - start
            held_out = float(np.mean(np.asarray(log_prob(params, test))))
            keys = jax.random.split(jax.random.key(seed), OBSERVATIONS)
            draws = np.stack([np.asarray(sample(params, o, k)) for o, k in zip(observations, keys)])
            # each draw's distance to the nearest bound, in the box's width: inside if
            # positive; next to a bound, where mass that a flow spread past a map's tail
            # lands, if also below NEXT_TO_BOUND
            gap = np.minimum(draws - box[0], box[1] - draws).min(-1) / (box[1] - box[0])
            inside = gap > 0
            at_bound = inside & (gap < NEXT_TO_BOUND)
            accepted = [accepted_seconds(sample, params, o, box) for o in observations[:TIMED]]
            runs[name].append(
                dict(
                    log_q=held_out,
                    outside=1 - float(inside.mean()),
                    at_bound=float(at_bound.mean()),
                    accepted_seconds=float(np.mean(accepted)),
                    seconds=round(seconds, 1),
                    epochs=epochs,
                )
            )
            print(args.task, name, seed, runs[name][-1], flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    # the full run of the default link is npe_<task>; any other, npe_<task>_<link>
    full = args.link == DEFAULT_LINK and args.libraries == names
    stem = f"npe_{args.task}" + ("" if full else f"_{args.link}")
    (args.out / f"{stem}.json").write_text(json.dumps(runs, indent=1))

    def mean_se(values, digits):
        se = (
            f" ± {np.std(values, ddof=1) / math.sqrt(len(values)):.{digits}f}"
            if len(values) > 1
            else ""
        )
        return f"{np.mean(values):.{digits}f}{se}"

    link = "" if args.link == DEFAULT_LINK else f" --link {args.link}"
    libraries = "" if args.libraries == names else f" --libraries {' '.join(args.libraries)}"
    lines = [
        f"`python benchmarks/npe.py {args.task} --seeds {' '.join(map(str, args.seeds))} "
        f"--epochs {args.epochs}{link}{libraries}`",
        "",
        f"| {args.task} | draws outside the prior | draws next to a bound "
        "| held-out log q(theta \\| x) (nats) | 10,000 accepted draws (s) | training (s) "
        "| epochs |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, per_seed in runs.items():
        outside = mean_se([100 * r["outside"] for r in per_seed], 2)
        at_bound = mean_se([100 * r["at_bound"] for r in per_seed], 2)
        lines.append(
            f"| {name} | {outside} % | {at_bound} % "
            f"| {mean_se([r['log_q'] for r in per_seed], 3)} "
            f"| {mean_se([r['accepted_seconds'] for r in per_seed], 4)} "
            f"| {mean_se([r['seconds'] for r in per_seed], 1)} "
            f"| {', '.join(str(r['epochs']) for r in per_seed)} |"
        )
    pairs = [(n, n.removesuffix("_bounds")) for n in runs if n.endswith("_bounds")]
    pairs = [(bounded, free) for bounded, free in pairs if free in runs]
    if pairs:
        lines.append("")
    for bounded, free in pairs:
        gains = [b["log_q"] - f["log_q"] for b, f in zip(runs[bounded], runs[free])]
        lines.append(
            f"{bounded} - {free}, paired by seed: {mean_se(gains, 3)} nats "
            f"({', '.join(f'{g:+.3f}' for g in gains)})"
        )
    (args.out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
