"""Held-out log-likelihood of maf_jax, zuko and flowjax MAFs and NSFs trained the same way.

One protocol for every library: the same standardised splits, 5 transforms with
random feature orders (flowjax's default; randperm=True for the others), hidden
(256, 256), Adam 1e-3, batch 128, at most --epochs epochs, early stopping after 20
epochs without validation improvement, the best parameters kept; mean test
log-likelihood (nats) with its standard error, beside a full-covariance Gaussian.

    python benchmarks/density.py digits                           # sklearn digits, 80/10/10
    python benchmarks/density.py miniboone --data ../shared/data/miniboone
    python benchmarks/density.py two_moons                        # 2-D, 20000/2000/2000

A name with ``_nsf`` (``maf_jax_nsf``, ``zuko_nsf``, ``flowjax_nsf``) trains the library's
neural spline flow (8 bins on [-5, 5]) with the same network sizes.

digits: dequantised with uniform noise, standardised with the training split.
miniboone: the MAF paper's preprocessing; trains on val.npy (90/10 for early
stopping) and reports on test.npy, the training split not being available.
Writes benchmarks/results/density_<name>.json and .md.
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

HIDDEN, TRANSFORMS, BATCH, LR, PATIENCE = 256, 5, 128, 1e-3, 20
HERE = Path(__file__).parent


def splits(name: str, data_dir: Path | None, seed: int):
    rng = np.random.default_rng(seed)
    if name == "two_moons":
        from maf_jax.data.toy import two_moons

        x = np.asarray(two_moons(jax.random.key(seed), 24000), np.float64)
        test, val, train = x[:2000], x[2000:4000], x[4000:]
    elif name == "digits":
        from sklearn.datasets import load_digits

        x = load_digits().data.astype(np.float64)
        x = x + rng.uniform(size=x.shape)
        perm = rng.permutation(len(x))
        n_val = n_test = len(x) // 10
        test, val, train = (
            x[perm[:n_test]],
            x[perm[n_test : n_test + n_val]],
            x[perm[n_test + n_val :]],
        )
    else:
        if data_dir is None:
            raise SystemExit("miniboone needs --data FOLDER with val.npy and test.npy")
        pool = np.load(data_dir / "val.npy", allow_pickle=False)
        test = np.load(data_dir / "test.npy", allow_pickle=False)
        perm = rng.permutation(len(pool))
        n_val = len(pool) // 10
        val, train = pool[perm[:n_val]], pool[perm[n_val:]]
    mean, std = train.mean(0), train.std(0)
    std = np.where(std > 1e-12, std, 1.0)
    return [((a - mean) / std).astype(np.float32) for a in (train, val, test)]


def summary(log_probs: np.ndarray) -> tuple[float, float]:
    log_probs = np.asarray(log_probs, np.float64)
    return float(log_probs.mean()), float(log_probs.std(ddof=1) / math.sqrt(len(log_probs)))


def gaussian(train, test):
    mean, cov = train.mean(0), np.cov(train, rowvar=False) + 1e-6 * np.eye(train.shape[1])
    diff = test - mean
    _, logdet = np.linalg.slogdet(2 * np.pi * cov)
    return summary(-0.5 * (np.einsum("ni,ij,nj->n", diff, np.linalg.inv(cov), diff) + logdet))


def train_loop(step, val_nll, get, set_, train, epochs, seed):
    """Shared loop: shuffled batches, validation after each epoch, early stopping."""
    rng = np.random.default_rng(seed)
    best, best_state, waited, epoch = math.inf, get(), 0, 0
    for epoch in range(epochs):  # noqa: B007 (the count is returned)
        perm = rng.permutation(len(train))
        for i in range(len(train) // BATCH):
            step(train[perm[i * BATCH : (i + 1) * BATCH]])
        nll = val_nll()
        if nll < best:
            best, best_state, waited = nll, get(), 0
        else:
            waited += 1
            if waited >= PATIENCE:
                break
    set_(best_state)
    return epoch + 1, best


def fit_functional(params, log_prob, jit, grad, apply_updates, train, val, test, epochs, seed):
    """The shared loop for the JAX libraries, given their jit, grad and update."""
    optimizer = optax.adam(LR)
    state = {"params": params, "opt": optimizer.init(params)}
    log_prob = jit(log_prob)

    @jit
    def update(params, opt, x):
        grads = grad(lambda p: -log_prob(p, x).mean())(params)
        updates, opt = optimizer.update(grads, opt, params)
        return apply_updates(params, updates), opt

    def step(x):
        state["params"], state["opt"] = update(state["params"], state["opt"], x)

    def val_nll():
        return -float(log_prob(state["params"], val).mean())

    def restore(params):
        state["params"] = params

    epochs_run, _ = train_loop(step, val_nll, lambda: state["params"], restore, train, epochs, seed)
    return summary(log_prob(state["params"], test)), epochs_run


def run_maf_jax(train, val, test, epochs, seed, kind="maf"):
    from flax import nnx

    from maf_jax import MAF, NSF

    flow = (NSF if kind == "nsf" else MAF)(
        train.shape[1],
        transforms=TRANSFORMS,
        randperm=True,
        hidden_features=(HIDDEN, HIDDEN),
        rngs=nnx.Rngs(seed),
    )
    graphdef, params, rest = nnx.split(flow, nnx.Param, ...)

    def log_prob(p, x):
        return nnx.merge(graphdef, p, rest)().log_prob(x)

    return fit_functional(
        params, log_prob, jax.jit, jax.grad, optax.apply_updates, train, val, test, epochs, seed
    )


def run_flowjax(train, val, test, epochs, seed, kind="maf"):
    import equinox as eqx
    import paramax
    from flowjax.bijections import RationalQuadraticSpline
    from flowjax.distributions import Normal
    from flowjax.flows import masked_autoregressive_flow

    flow = masked_autoregressive_flow(
        jax.random.key(seed),
        base_dist=Normal(jnp.zeros(train.shape[1])),
        transformer=RationalQuadraticSpline(knots=8, interval=5) if kind == "nsf" else None,
        flow_layers=TRANSFORMS,
        nn_width=HIDDEN,
        nn_depth=2,
        invert=True,
    )
    params, static = eqx.partition(
        flow, eqx.is_inexact_array, is_leaf=lambda x: isinstance(x, paramax.NonTrainable)
    )

    def log_prob(p, x):
        return paramax.unwrap(eqx.combine(p, static)).log_prob(x)

    return fit_functional(
        params,
        log_prob,
        eqx.filter_jit,
        eqx.filter_grad,
        eqx.apply_updates,
        train,
        val,
        test,
        epochs,
        seed,
    )


def run_zuko(train, val, test, epochs, seed, kind="maf"):
    import copy

    import torch
    import zuko

    torch.manual_seed(seed)
    flow = (zuko.flows.NSF if kind == "nsf" else zuko.flows.MAF)(
        train.shape[1], transforms=TRANSFORMS, randperm=True, hidden_features=[HIDDEN, HIDDEN]
    )
    optimizer = torch.optim.Adam(flow.parameters(), lr=LR)
    val_t, test_t = torch.from_numpy(val), torch.from_numpy(test)

    def step(x):
        optimizer.zero_grad()
        loss = -flow().log_prob(torch.from_numpy(x)).mean()
        loss.backward()
        optimizer.step()

    def val_nll():
        with torch.no_grad():
            return -float(flow().log_prob(val_t).mean())

    epochs_run, _ = train_loop(
        step,
        val_nll,
        lambda: copy.deepcopy(flow.state_dict()),
        flow.load_state_dict,
        train,
        epochs,
        seed,
    )
    with torch.no_grad():
        return summary(flow().log_prob(test_t).numpy()), epochs_run


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("dataset", choices=["digits", "miniboone", "two_moons"])
    parser.add_argument("--data", type=Path, help="folder of val.npy and test.npy (miniboone)")
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    names = [f"{lib}{kind}" for kind in ("", "_nsf") for lib in ("maf_jax", "zuko", "flowjax")]
    parser.add_argument("--libraries", nargs="+", default=names, choices=names)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    train, val, test = splits(args.dataset, args.data, args.seed)
    print(f"{args.dataset}: train {train.shape}, validation {val.shape}, test {test.shape}")
    results = {"gaussian": dict(zip(("log_likelihood", "stderr"), gaussian(train, test)))}
    runners = dict(maf_jax=run_maf_jax, zuko=run_zuko, flowjax=run_flowjax)
    for name in args.libraries:
        start = time.perf_counter()
        library, nsf, _ = name.partition("_nsf")
        kind = "nsf" if nsf else "maf"
        (ll, se), epochs = runners[library](train, val, test, args.epochs, args.seed, kind)
        results[name] = dict(
            log_likelihood=ll,
            stderr=se,
            epochs=epochs,
            seconds=round(time.perf_counter() - start, 1),
        )
        print(name, results[name], flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"density_{args.dataset}.json").write_text(json.dumps(results, indent=1))
    lines = [
        f"| {args.dataset} | test log-likelihood (nats) | epochs | seconds |",
        "|---|---|---|---|",
    ]
    for name, r in results.items():
        lines.append(
            f"| {name} | {r['log_likelihood']:.2f} ± {r['stderr']:.2f} "
            f"| {r.get('epochs', '')} | {r.get('seconds', '')} |"
        )
    (args.out / f"density_{args.dataset}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
