"""Speed of maf_jax against zuko, flowjax and an unmasked dense MLP, side by side.

Each (library, D) runs in its own process, for an honest peak-memory figure and so
that one library's threads do not disturb another's. Workload: 5 transforms, hidden
(128, 128); train step (log_prob + grad + Adam) at batch 512; log_prob at batch 4096;
sampling 4096, fully autoregressive and with passes=2 where the library has it.
Within a process the timings run in interleaved rounds (medians), and the maf_jax
process times the dense MLP's and flowjax's train steps too, for same-process ratios.

    python benchmarks/speed.py                       # D in 8 16 64 256, all libraries
    python benchmarks/speed.py --features 64 --libraries maf_jax dense
    python benchmarks/speed.py --features 64 --flow nsf   # neural spline flows, 8 bins
    python benchmarks/speed.py --features 64 --residual   # masked residual blocks
    python benchmarks/speed.py --flow maf-mog --libraries maf_jax   # the paper's MAF MoG

Writes benchmarks/results/speed.json, speed.md and speed.png (speed-nsf.* for --flow nsf,
speed-maf-mog.* for --flow maf-mog, speed-residual.* for --residual).
With ``--flow nsf`` every library builds its NSF: maf_jax's ``NSF(bins=8)``, zuko's
``NSF(bins=8)``, flowjax's ``masked_autoregressive_flow`` with a
``RationalQuadraticSpline(knots=8, interval=5)`` transformer; the dense MLP is left out.
With ``--residual`` maf_jax and zuko build ``residual=True`` networks (a linear layer and
a residual block per hidden size); flowjax has no masked residual network and the dense
MLP none either, so both are left out. With ``--flow maf-mog`` (maf_jax's ``MAFMoG``,
10 components per feature, the paper's default) only maf_jax runs, and its process times
the plain MAF of the same sizes too (``maf_*_ms``: train step, log_prob and sampling), for
same-process ratios; the peers have no MADE MoG base.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

TRANSFORMS, HIDDEN, TRAIN_BATCH, BATCH, BINS, COMPONENTS = 5, 128, 512, 4096, 8, 10
FLOWS = ("maf", "nsf", "maf-mog")
LIBRARIES = ("maf_jax", "dense", "flowjax", "zuko")
HERE = Path(__file__).parent


def write_report(directory: Path, name: str, *sections) -> None:
    """Writes and prints a report: ``sections`` (strings, or lists of lines) a blank line apart."""
    text = "\n\n".join(s if isinstance(s, str) else "\n".join(s) for s in sections) + "\n"
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_text(text)
    print(text)


def median_times(fns: dict, repeat: int, slow=()) -> dict:
    """Median wall time in ms of each ``fns[name]()``, which must block until done.

    The functions run in interleaved rounds, so that a slower spell of the machine
    weighs on all of them alike; those named in ``slow`` (seconds per call) run in
    the first ``max(3, repeat // 3)`` rounds only.
    """
    times = {name: [] for name in fns}
    for fn in fns.values():
        fn()  # warm up
    for i in range(repeat):
        for name, fn in fns.items():
            if name in slow and i >= max(3, repeat // 3):
                continue
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: 1e3 * sorted(t)[len(t) // 2] for name, t in times.items()}


def medians(runs: dict[str, list[dict]]) -> dict[str, dict]:
    """Per name, the median of each measure over the rounds ``runs[name]``."""
    return {
        name: {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
        for name, rounds in runs.items()
    }


def timed_compile(jitted, *args):
    """Compile time of a jitted function, and the compiled executable."""
    start = time.perf_counter()
    compiled = jitted.lower(*args).compile()
    return time.perf_counter() - start, compiled


def maf_jax_flow(features: int, passes=None, flow: str = "maf", hidden=HIDDEN, **settings):
    """maf_jax's flow (``FLOWS``) of the workload, split into ``(graphdef, params, rest)``.

    ``params`` are plain dicts, as the README's functional idiom holds them.
    ``settings`` (``inverse``, ``precision``, ``unroll``) go to the constructor.
    """
    from flax import nnx

    from maf_jax import MAF, NSF, MAFMoG

    if flow == "nsf":
        settings = dict(bins=BINS) | settings
    if flow == "maf-mog":
        settings = dict(components=COMPONENTS) | settings
    flow = {"maf": MAF, "nsf": NSF, "maf-mog": MAFMoG}[flow](
        features,
        transforms=TRANSFORMS,
        hidden_features=(hidden, hidden),
        passes=passes,
        rngs=nnx.Rngs(0),
        **settings,
    )
    graphdef, params, rest = nnx.split(flow, nnx.Param, ...)
    return graphdef, params.to_pure_dict(), rest


def maf_jax_model(features: int, passes, flow: str = "maf", **settings):
    from flax import nnx

    graphdef, params, rest = maf_jax_flow(features, passes, flow, **settings)

    def log_prob(p, x):
        return nnx.merge(graphdef, p, rest)().log_prob(x)

    def sample(p, k):
        return nnx.merge(graphdef, p, rest)().sample(k, (BATCH,))

    return params, log_prob, sample


def flowjax_flow(features: int, key, flow: str = "maf", hidden=HIDDEN):
    """flowjax's MAF (or NSF) of the workload, partitioned into ``(params, static)``."""
    import equinox as eqx
    import jax.numpy as jnp
    from flowjax.bijections import RationalQuadraticSpline
    from flowjax.distributions import Normal
    from flowjax.flows import masked_autoregressive_flow

    spline = RationalQuadraticSpline(knots=BINS, interval=5) if flow == "nsf" else None
    flow = masked_autoregressive_flow(
        key,
        base_dist=Normal(jnp.zeros(features)),
        transformer=spline,
        flow_layers=TRANSFORMS,
        nn_width=hidden,
        nn_depth=2,
        invert=True,
    )
    return eqx.partition(flow, eqx.is_inexact_array)


def flowjax_model(features: int, key, flow: str = "maf", hidden=HIDDEN):
    import equinox as eqx

    params, static = flowjax_flow(features, key, flow, hidden)

    def log_prob(p, x):
        return eqx.combine(p, static).log_prob(x)

    def sample(p, k):
        return eqx.combine(p, static).sample(k, (BATCH,))

    return params, log_prob, sample


def dense_model(features: int, key, hidden=HIDDEN):
    """The unmasked MLP of the same shapes, the roofline for training.

    Its transforms are stacked as maf_jax's are (one array per kind of weight), so
    that it pays the same number of buffers per step; the loop over them unrolls.
    """
    import jax
    import jax.numpy as jnp

    sizes = [features, hidden, hidden, 2 * features]
    keys = jax.random.split(key, len(sizes) - 1)
    params = [
        (jax.random.normal(k, (TRANSFORMS, a, b)) / a**0.5, jnp.zeros((TRANSFORMS, b)))
        for k, a, b in zip(keys, sizes[:-1], sizes[1:])
    ]

    def log_prob(params, x):
        ladj = 0.0
        for t in range(TRANSFORMS):
            h = x
            for w, b in params[:-1]:
                h = jax.nn.relu(h @ w[t] + b[t])
            shift, scale = jnp.split(h @ params[-1][0][t] + params[-1][1][t], 2, axis=-1)
            x = x * jnp.exp(scale) + shift
            ladj = ladj + scale.sum(-1)
        return -0.5 * (x**2).sum(-1) + ladj

    return params, log_prob


def train_step(log_prob, optimizer):
    """A jitted step of maximum likelihood with ``optimizer``: log_prob, gradient, update."""
    import jax
    import optax

    @jax.jit
    def step(params, state, x):
        loss, grads = jax.value_and_grad(lambda p: -log_prob(p, x).mean())(params)
        updates, state = optimizer.update(grads, state, params)
        return optax.apply_updates(params, updates), state, loss

    return step


def warm_up(jax) -> None:
    """Pays the first compile of a process, which sets up JAX and the compiler (and,
    on GPU, the matrix-product libraries and their autotuner), outside the timings."""
    import jax.numpy as jnp

    a = jnp.ones((64, 64))
    jax.jit(lambda a: jax.nn.relu(a @ a).sum())(a).block_until_ready()


def run_jax(library: str, features: int, repeat: int, flow: str = "maf") -> dict:
    import jax
    import optax

    key = jax.random.key(0)
    warm_up(jax)
    x_train = jax.random.normal(key, (TRAIN_BATCH, features))
    x = jax.random.normal(key, (BATCH, features))
    optimizer = optax.adam(1e-3)
    result = {}

    flow, residual = flow.removesuffix("_residual"), flow.endswith("_residual")
    if library == "maf_jax":
        params, log_prob, sample = maf_jax_model(features, None, flow, residual=residual)
        params2, _, sample2 = maf_jax_model(features, 2, flow, residual=residual)
    elif library == "flowjax":
        params, log_prob, sample = flowjax_model(features, key, flow)
        sample2 = None
    else:
        params, log_prob = dense_model(features, key)
        sample = sample2 = None

    make_train_step = functools.partial(train_step, optimizer=optimizer)

    state = optimizer.init(params)
    result["compile_train_s"], train_c = timed_compile(
        make_train_step(log_prob), params, state, x_train
    )
    _, lp_c = timed_compile(jax.jit(log_prob), params, x)
    fns = {
        "train_ms": lambda: jax.block_until_ready(train_c(params, state, x_train)),
        "log_prob_ms": lambda: jax.block_until_ready(lp_c(params, x)),
    }
    memory = [train_c.memory_analysis(), lp_c.memory_analysis()]
    if sample is not None:
        result["compile_sample_s"], sample_c = timed_compile(jax.jit(sample), params, key)
        fns["sample_ms"] = lambda: jax.block_until_ready(sample_c(params, key))
        memory.append(sample_c.memory_analysis())
    if sample2 is not None:
        _, sample2_c = timed_compile(jax.jit(sample2), params2, key)
        fns["sample_passes2_ms"] = lambda: jax.block_until_ready(sample2_c(params2, key))
    if library == "maf_jax" and flow == "maf-mog":  # the plain MAF, for same-process ratios
        maf, maf_log_prob, maf_sample = maf_jax_model(features, None, "maf")
        programs = {
            "maf_train_ms": (make_train_step(maf_log_prob), maf, optimizer.init(maf), x_train),
            "maf_log_prob_ms": (jax.jit(maf_log_prob), maf, x),
            "maf_sample_ms": (jax.jit(maf_sample), maf, key),
        }
        for name, (jitted, *args) in programs.items():
            fns[name] = functools.partial(
                lambda c, *a: jax.block_until_ready(c(*a)), timed_compile(jitted, *args)[1], *args
            )
    if library == "maf_jax" and not residual and flow != "maf-mog":  # the peers again
        references = {"dense": dense_model(features, key)} if flow == "maf" else {}
        if importlib.util.find_spec("flowjax"):
            references["flowjax"] = flowjax_model(features, key, flow)
        for name, (ref, ref_log_prob, *ref_sample) in references.items():
            ref_state = optimizer.init(ref)
            seconds, ref_c = timed_compile(make_train_step(ref_log_prob), ref, ref_state, x_train)
            fns[f"{name}_train_ms"] = functools.partial(
                lambda c, *args: jax.block_until_ready(c(*args)), ref_c, ref, ref_state, x_train
            )
            if ref_sample:  # compiled, not run: it takes seconds
                seconds += timed_compile(jax.jit(ref_sample[0]), ref, key)[0]
                result[f"{name}_compile_train_sample_s"] = seconds
    slow = ("sample_ms",) if library == "flowjax" else ()
    result.update(median_times(fns, repeat, slow))
    result["xla_temp_mb"] = max(m.temp_size_in_bytes for m in memory if m is not None) / 2**20
    return result


def run_zuko(features: int, repeat: int, kind: str = "maf") -> dict:
    import torch
    import zuko

    torch.manual_seed(0)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    kind, residual = kind.removesuffix("_residual"), kind.endswith("_residual")
    build = functools.partial(zuko.flows.NSF, bins=BINS) if kind == "nsf" else zuko.flows.MAF
    kwargs = dict(transforms=TRANSFORMS, hidden_features=[HIDDEN, HIDDEN], residual=residual)
    flow = build(features, **kwargs).to(device)
    flow2 = build(features, passes=2, **kwargs).to(device)
    optimizer = torch.optim.Adam(flow.parameters(), lr=1e-3)
    x_train = torch.randn(TRAIN_BATCH, features, device=device)
    x = torch.randn(BATCH, features, device=device)

    def train_step():
        optimizer.zero_grad()
        loss = -flow().log_prob(x_train).mean()
        loss.backward()
        optimizer.step()
        sync()

    def no_grad(fn):
        def run():
            with torch.no_grad():
                fn()
            sync()

        return run

    fns = dict(
        train_ms=train_step,
        log_prob_ms=no_grad(lambda: flow().log_prob(x)),
        sample_ms=no_grad(lambda: flow().sample((BATCH,))),
        sample_passes2_ms=no_grad(lambda: flow2().sample((BATCH,))),
    )
    return median_times(fns, repeat, slow=("sample_ms",))


def child(library: str, features: int, repeat: int, flow: str) -> None:
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if library == "zuko":
        result = run_zuko(features, repeat, flow)
    else:
        result = run_jax(library, features, repeat, flow)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result.update(library=library, features=features, peak_rss_delta_mb=(peak - baseline) / 1024)
    if library != "zuko":
        import jax

        result["device"] = str(jax.devices()[0])
    print(json.dumps(result))


def table(results: list[dict]) -> str:
    """Markdown table with ratios against maf_jax at the same D."""
    by = {(r["library"], r["features"]): r for r in results}
    lines = [
        "| D | library | train step (ms) | log_prob (ms) | sample (ms) | sample / log_prob "
        "| sample passes=2 (ms) | compile train+sample (s) | XLA temp (MB) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]

    def fmt(v, f="{:.1f}"):
        return "n/a" if v is None else f.format(v)

    for d in sorted({r["features"] for r in results}):
        for lib in LIBRARIES:
            r = by.get((lib, d))
            if r is None:
                continue
            compile_s = None
            if "compile_sample_s" in r:
                compile_s = r["compile_train_s"] + r["compile_sample_s"]
            ratio = r["sample_ms"] / r["log_prob_ms"] if r.get("sample_ms") else None
            lines.append(
                f"| {d} | {lib} | {fmt(r['train_ms'])} | {fmt(r['log_prob_ms'])} | "
                f"{fmt(r.get('sample_ms'))} | {fmt(ratio)} | {fmt(r.get('sample_passes2_ms'))} | "
                f"{fmt(compile_s, '{:.2f}')} | {fmt(r.get('xla_temp_mb'))} |"
            )
    return "\n".join(lines)


def ratios(results: list[dict]) -> str:
    """The targets of the fast path, at each D."""
    by = {(r["library"], r["features"]): r for r in results}
    out = []
    for d in sorted({r["features"] for r in results}):
        m = by.get(("maf_jax", d))
        if m is None:
            continue
        line = [
            f"D={d}: sample/log_prob {m['sample_ms'] / m['log_prob_ms']:.2f}",
            f"passes=2 sample/log_prob {m['sample_passes2_ms'] / m['log_prob_ms']:.2f}",
        ]
        if "maf_train_ms" in m:
            line += [
                f"{name} / MAF (same process) {m[f'{name}_ms'] / m[f'maf_{name}_ms']:.2f}"
                for name in ("train", "log_prob", "sample")
            ]
        if "dense_train_ms" in m:
            line.append(
                f"train / dense MLP (same process) {m['train_ms'] / m['dense_train_ms']:.2f}"
            )
        if "flowjax_train_ms" in m:
            ratio = m["flowjax_train_ms"] / m["train_ms"]
            line.append(f"flowjax train / ours (same process) {ratio:.2f}x")
            ours = m["compile_train_s"] + m["compile_sample_s"]
            ratio = ours / m["flowjax_compile_train_sample_s"]
            line.append(f"compile ours / flowjax (same process) {ratio:.2f}")
        for peer in ("zuko", "flowjax"):
            if (peer, d) in by:
                p = by[(peer, d)]
                line.append(f"{peer} sample / ours {p['sample_ms'] / m['sample_ms']:.1f}x")
                line.append(f"{peer} train / ours {p['train_ms'] / m['train_ms']:.2f}x")
        if ("flowjax", d) in by:
            f = by[("flowjax", d)]
            ours = m["compile_train_s"] + m["compile_sample_s"]
            theirs = f["compile_train_s"] + f["compile_sample_s"]
            line.append(f"compile ours / flowjax {ours / theirs:.2f}")
        out.append("- " + ", ".join(line))
    return "\n".join(out)


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 4), constrained_layout=True)
    for ax, metric in zip(axes, ("train_ms", "log_prob_ms", "sample_ms")):
        for lib in LIBRARIES:
            rows = sorted(
                (r["features"], r[metric]) for r in results if r["library"] == lib and r.get(metric)
            )
            if rows:
                ax.plot(*zip(*rows), marker="o", label=lib)
        ax.set(xscale="log", yscale="log", xlabel="features D", ylabel="ms", title=metric[:-3])
        ax.legend()
    fig.savefig(path, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--features", type=int, nargs="+", default=[8, 16, 64, 256])
    parser.add_argument("--libraries", nargs="+", default=list(LIBRARIES), choices=LIBRARIES)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--flow", choices=FLOWS, default="maf")
    parser.add_argument("--residual", action="store_true", help="residual=True networks")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    kind = args.flow + ("_residual" if args.residual else "")
    if args.child:
        child(args.child[0], int(args.child[1]), args.repeat, kind)
        return
    args.out.mkdir(parents=True, exist_ok=True)
    results = []
    left_out = {"dense", "flowjax"} if args.residual else {"dense"} if args.flow == "nsf" else ()
    if args.flow == "maf-mog":  # no peer has a MADE MoG base
        left_out = {"dense", "flowjax", "zuko"}
    libraries = [lib for lib in args.libraries if lib not in left_out]
    for d in args.features:
        for lib in libraries:
            cmd = [sys.executable, __file__, "--child", lib, str(d), "--repeat", str(args.repeat)]
            cmd += ["--flow", args.flow] + ["--residual"] * args.residual
            proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ)
            if proc.returncode:
                print(f"{lib} D={d} failed:\n{proc.stderr[-2000:]}", file=sys.stderr)
                continue
            results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            print(json.dumps(results[-1]), flush=True)
    name = "-".join(["speed", *[args.flow] * (args.flow != "maf"), *["residual"] * args.residual])
    (args.out / f"{name}.json").write_text(json.dumps(results, indent=1))
    plot(results, args.out / f"{name}.png")
    write_report(args.out, f"{name}.md", table(results), ratios(results))


if __name__ == "__main__":
    main()
