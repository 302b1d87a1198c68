"""Held-out log-likelihood of maf_jax, zuko and flowjax MAFs and NSFs trained the same way.

One protocol for every library: the same standardised splits, 5 transforms with
random feature orders (flowjax's default; randperm=True for the others), hidden
(256, 256), Adam 1e-3, batch 128, at most --epochs epochs, early stopping after 20
epochs without validation improvement, the best parameters kept; mean test
log-likelihood (nats) with its standard error, beside a full-covariance Gaussian.

    python benchmarks/density.py digits                           # sklearn digits, 80/10/10
    python benchmarks/density.py miniboone --data ../shared/data/miniboone --seeds 0 1 2
    python benchmarks/density.py two_moons                        # 2-D, 20000/2000/2000

A name with ``_nsf`` (``maf_jax_nsf``, ``zuko_nsf``, ``flowjax_nsf``) trains the library's
neural spline flow (8 bins on [-5, 5]) with the same network sizes; ``maf_jax_bn`` a MAF
with batch norms after every transform (evaluated with the running averages;
``maf_jax_bn_data`` with the statistics of the training rows set after training),
``maf_jax_mog`` the paper's MAF MoG (10 components), ``maf_jax_identity`` a MAF whose
networks start at zero (``identity_init``). Several ``--seeds`` give the mean over
seeds and its standard error (splits, initial weights and shuffles change with it).

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


def train_functional(
    params, log_prob, jit, grad, apply_updates, train, val, epochs, seed,
    train_log_prob=None, after_update=None,
):  # fmt: skip
    """The shared loop for the JAX libraries, given their jit, grad and update.

    ``train_log_prob`` is the density the steps train (batch statistics for batch
    norms; ``log_prob`` if ``None``), ``after_update(old, new, x)`` changes what the
    optimiser returned (running averages). Returns the best parameters and the
    epochs run.
    """
    optimizer = optax.adam(LR)
    state = {"params": params, "opt": optimizer.init(params)}
    log_prob = jit(log_prob)
    train_log_prob = train_log_prob or log_prob

    @jit
    def update(params, opt, x):
        grads = grad(lambda p: -train_log_prob(p, x).mean())(params)
        updates, opt = optimizer.update(grads, opt, params)
        new = apply_updates(params, updates)
        return (new if after_update is None else after_update(params, new, x)), opt

    def step(x):
        state["params"], state["opt"] = update(state["params"], state["opt"], x)

    def val_nll():
        return -float(log_prob(state["params"], val).mean())

    def restore(params):
        state["params"] = params

    epochs_run, _ = train_loop(step, val_nll, lambda: state["params"], restore, train, epochs, seed)
    return state["params"], epochs_run


def fit_functional(
    params, log_prob, jit, grad, apply_updates, train, val, test, epochs, seed, **kw
):
    """``train_functional``, then the test log-likelihood and its standard error."""
    params, epochs_run = train_functional(
        params, log_prob, jit, grad, apply_updates, train, val, epochs, seed, **kw
    )
    return summary(jit(log_prob)(params, test)), epochs_run


def run_maf_jax(train, val, test, epochs, seed, kind="maf"):
    """maf_jax's MAF (``maf``), NSF (``nsf``), MAF with batch norms (``bn``: running
    averages; ``bn_data``: then the statistics of every training row, the paper's
    choice), MAF MoG with 10 components (``mog``) or MAF started as the identity
    (``identity``)."""
    from flax import nnx

    from maf_jax import MAF, NSF, MAFMoG

    cls = {"nsf": NSF, "mog": MAFMoG}.get(kind, MAF)
    flow = cls(
        train.shape[1],
        transforms=TRANSFORMS,
        randperm=True,
        hidden_features=(HIDDEN, HIDDEN),
        batch_norm=kind.startswith("bn"),
        identity_init=kind == "identity",
        rngs=nnx.Rngs(seed),
    )
    flow.eval()
    eval_def = nnx.graphdef(flow)
    flow.train()  # batch norms: batch statistics in the steps
    graphdef, params, rest = nnx.split(flow, nnx.Any(nnx.Param, nnx.BatchStat), ...)

    def log_prob(p, x, graphdef=eval_def):
        return nnx.merge(graphdef, p, rest)().log_prob(x)

    def after_update(old, new, x):  # the running averages of the batch norms
        model = nnx.merge(graphdef, old, rest)
        model.update_batch_norms(x)
        return nnx.State.merge(new, nnx.state(model, nnx.BatchStat))

    params, epochs_run = train_functional(
        params, log_prob, jax.jit, jax.grad, optax.apply_updates, train, val, epochs, seed,
        train_log_prob=lambda p, x: log_prob(p, x, graphdef),
        after_update=after_update if kind.startswith("bn") else None,
    )  # fmt: skip
    if kind == "bn_data":  # the paper's statistics: those of every training row
        model = nnx.merge(eval_def, params, rest)
        model.set_batch_norms(jnp.asarray(train))
        params = nnx.state(model, nnx.Any(nnx.Param, nnx.BatchStat))
    return summary(jax.jit(log_prob)(params, test)), epochs_run


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


def parse(name: str) -> tuple[str, str]:
    """``maf_jax_nsf`` -> ``("maf_jax", "nsf")``, ``zuko`` -> ``("zuko", "maf")``."""
    for library in ("maf_jax", "zuko", "flowjax"):
        if name.startswith(library):
            return library, name[len(library) + 1 :] or "maf"
    raise ValueError(name)


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("dataset", choices=["digits", "miniboone", "two_moons"])
    parser.add_argument("--data", type=Path, help="folder of val.npy and test.npy (miniboone)")
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="one run per seed")
    names = [f"{lib}{kind}" for kind in ("", "_nsf") for lib in ("maf_jax", "zuko", "flowjax")]
    names += [f"maf_jax_{kind}" for kind in ("bn", "bn_data", "mog", "identity")]
    parser.add_argument("--libraries", nargs="+", default=names, choices=names)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    runners = dict(maf_jax=run_maf_jax, zuko=run_zuko, flowjax=run_flowjax)
    runs = {name: [] for name in ["gaussian", *args.libraries]}
    for seed in args.seeds:
        train, val, test = splits(args.dataset, args.data, seed)
        print(f"{args.dataset} seed {seed}: train {train.shape}, validation {val.shape}, "
              f"test {test.shape}")  # fmt: skip
        runs["gaussian"].append(dict(zip(("log_likelihood", "stderr"), gaussian(train, test))))
        for name in args.libraries:
            start = time.perf_counter()
            library, kind = parse(name)
            (ll, se), epochs = runners[library](train, val, test, args.epochs, seed, kind)
            seconds = round(time.perf_counter() - start, 1)
            runs[name].append(dict(log_likelihood=ll, stderr=se, epochs=epochs, seconds=seconds))
            print(name, seed, runs[name][-1], flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"density_{args.dataset}" + (f"_{len(args.seeds)}_seeds" if len(args.seeds) > 1 else "")
    (args.out / f"{stem}.json").write_text(json.dumps(runs, indent=1))
    seeds = " ".join(map(str, args.seeds))
    data = " --data ../shared/data/miniboone" if args.dataset == "miniboone" else ""
    libraries = " ".join(args.libraries)
    lines = [
        f"`python benchmarks/density.py {args.dataset}{data} --seeds {seeds} "
        f"--libraries {libraries}`",
        "",
        f"| {args.dataset} | test log-likelihood (nats), mean over seeds ± their standard "
        "error | per seed (± standard error over test rows) | epochs | seconds |",
        "|---|---|---|---|---|",
    ]
    for name, per_seed in runs.items():
        values = [r["log_likelihood"] for r in per_seed]
        spread = (
            f" ± {np.std(values, ddof=1) / math.sqrt(len(values)):.2f}" if len(values) > 1 else ""
        )
        each = ", ".join(f"{r['log_likelihood']:.2f} ± {r['stderr']:.2f}" for r in per_seed)
        epochs = ", ".join(str(r["epochs"]) for r in per_seed if "epochs" in r)
        seconds = ", ".join(str(r["seconds"]) for r in per_seed if "seconds" in r)
        lines.append(f"| {name} | {np.mean(values):.2f}{spread} | {each} | {epochs} | {seconds} |")
    (args.out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
