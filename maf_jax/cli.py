"""The ``maf-jax`` command: fit, eval, sample, plot and demo."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

__all__ = ["main"]

DENSITIES = ("two_moons", "checkerboard", "eight_gaussians", "pinwheel", "spirals")
CACHE_ENV = "MAF_JAX_COMPILATION_CACHE"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="maf-jax", description="Masked Autoregressive Flows for density estimation."
    )
    parser.add_argument(
        "--no-compilation-cache",
        action="store_true",
        help="compile every program anew instead of keeping compiled programs in "
        f"~/.cache/maf-jax/jax (or ${CACHE_ENV}; {CACHE_ENV}=off also turns it off)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    data_help = (
        "a .npy, .npz or .csv file of rows, a built-in 2-D density "
        f"({', '.join(DENSITIES)}) or sklearn:digits, sklearn:breast_cancer, sklearn:wine"
    )

    fit = commands.add_parser("fit", help="fit a MAF to data and write a checkpoint")
    fit.add_argument("data", metavar="DATA", help=data_help)
    fit.add_argument("--context", metavar="FILE", help="contexts, one row per data row")
    fit.add_argument("-o", "--output", default="model.npz", help="checkpoint to write")
    fit.add_argument("--summary", help="JSON summary to write (default: OUTPUT with .json)")
    fit.add_argument("--transforms", type=int, default=5)
    fit.add_argument("--hidden", type=int, nargs="+", default=[128, 128], metavar="N")
    fit.add_argument("--passes", type=int, help="passes of the inverse (default: features)")
    fit.add_argument("--randperm", action="store_true", help="random feature orders")
    fit.add_argument("--activation", default="relu")
    fit.add_argument(
        "--precision",
        choices=("highest", "high", "default"),
        default="highest",
        help="precision of the matrix products: highest is full float32 on every backend",
    )
    fit.add_argument(
        "--inverse",
        choices=("incremental", "full_pass"),
        default="incremental",
        help="the inverse behind sampling, stored in the checkpoint",
    )
    fit.add_argument("--batch-size", type=int, default=256)
    budget = fit.add_mutually_exclusive_group()
    budget.add_argument("--epochs", type=int)
    budget.add_argument("--steps", type=int)
    fit.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    fit.add_argument("--validation", type=float, default=0.1, help="held-out fraction")
    fit.add_argument("--patience", type=int, default=10, help="epochs without improvement")
    fit.add_argument("--rows", type=int, default=10_000, help="rows of a built-in density")
    fit.add_argument("--seed", type=int, default=0)
    fit.add_argument("--no-progress", action="store_true")

    evaluate = commands.add_parser("eval", help="mean log-likelihood of data under a checkpoint")
    evaluate.add_argument("checkpoint", metavar="CKPT")
    evaluate.add_argument("data", metavar="DATA", help=data_help)
    evaluate.add_argument("--context", metavar="FILE")
    evaluate.add_argument("--rows", type=int, default=10_000)
    evaluate.add_argument("--seed", type=int, default=1)

    sample = commands.add_parser("sample", help="draw samples from a checkpoint")
    sample.add_argument("checkpoint", metavar="CKPT")
    sample.add_argument("-n", type=int, required=True, help="number of samples")
    sample.add_argument("-o", "--output", required=True, help=".npy file to write")
    sample.add_argument(
        "--context", metavar="FILE", help="contexts (rows): samples (n, rows, features)"
    )
    sample.add_argument("--seed", type=int, default=0)

    plot = commands.add_parser("plot", help="plot the density of a checkpoint")
    plot.add_argument("checkpoint", metavar="CKPT")
    plot.add_argument("--data", help="data to draw beside the samples")
    plot.add_argument("--context", metavar="FILE", help="one context row for a conditional model")
    plot.add_argument("-o", "--output", default="density.png")
    plot.add_argument("--seed", type=int, default=0)

    demo = commands.add_parser("demo", help="fit a built-in 2-D density and plot it")
    demo.add_argument("--density", choices=DENSITIES, default="two_moons")
    demo.add_argument("-o", "--output-dir", default="maf-jax-demo")
    demo.add_argument("--epochs", type=int, default=40)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--no-progress", action="store_true")
    return parser


def _write_json(path: Path, payload: dict) -> None:
    from maf_jax.files import atomic_write

    with atomic_write(path, "w") as f:
        json.dump(payload, f, indent=2)


def _context(args, rows: int | None = None):
    from maf_jax.data import DataError, load_file

    if args.context is None:
        return None
    context = load_file(args.context)
    if context.ndim == 1:
        context = context[None] if rows is None else context[:, None]
    if rows is not None and len(context) != rows:
        raise DataError(f"{args.context}: has {len(context)} rows but the data has {rows}")
    return context


def _fit(args, density=None) -> dict:
    import jax
    import optax
    from flax import nnx

    from maf_jax import MAF, checkpoint
    from maf_jax.data import DataError, check_rows, load
    from maf_jax.train import fit

    if args.activation not in checkpoint.ACTIVATIONS:
        raise DataError(
            f"unknown activation {args.activation!r}; one of {sorted(checkpoint.ACTIVATIONS)}"
        )
    output = Path(args.output)
    summary_path = Path(args.summary) if args.summary else output.with_suffix(".json")
    key = jax.random.key(args.seed)
    data = check_rows(load(density or args.data, key, args.rows), "data")
    context = _context(args, len(data))
    flow = MAF(
        data.shape[1],
        0 if context is None else context.shape[1],
        transforms=args.transforms,
        randperm=args.randperm,
        passes=args.passes,
        hidden_features=tuple(args.hidden),
        activation=checkpoint.ACTIVATIONS[args.activation],
        precision=args.precision,
        inverse=args.inverse,
        rngs=nnx.Rngs(args.seed),
    )
    start = time.perf_counter()
    model, history = fit(
        flow,
        data,
        context=context,
        key=jax.random.fold_in(key, 1),
        batch_size=args.batch_size,
        epochs=args.epochs,
        steps=args.steps,
        optimizer=optax.adam(args.lr),
        validation=args.validation,
        patience=args.patience,
        progress=not args.no_progress,
    )
    seconds = time.perf_counter() - start
    if history.steps == 0:
        raise DataError(f"training failed before the first epoch ended: {history.stopped}")
    checkpoint.save(output, model)
    summary = dict(
        data=str(density or args.data),
        rows=len(data),
        features=data.shape[1],
        context=0 if context is None else context.shape[1],
        checkpoint=str(output),
        epochs=len(history.train_loss),
        steps=history.steps,
        best_epoch=history.best_epoch,
        train_nll=history.train_loss[-1],
        val_nll=min(history.val_nll) if history.val_nll else None,
        stopped=history.stopped,
        seconds=round(seconds, 2),
    )
    _write_json(summary_path, summary)
    print(f"wrote {output} and {summary_path}: {json.dumps(summary)}")
    return summary


def _eval(args) -> None:
    import jax

    from maf_jax import checkpoint
    from maf_jax.data import check_rows, load
    from maf_jax.train import mean_log_prob

    model = checkpoint.load(args.checkpoint)
    data = check_rows(load(args.data, jax.random.key(args.seed), args.rows), "data", model.features)
    mean, stderr = mean_log_prob(model, data, _context(args, len(data)))
    print(json.dumps(dict(log_likelihood=mean, standard_error=stderr, rows=len(data))))
    print(
        f"mean log-likelihood: {mean:.4f} ± {stderr:.4f} nats ({len(data)} rows)", file=sys.stderr
    )


def _sample(args) -> None:
    import jax
    import numpy as np

    from maf_jax import checkpoint
    from maf_jax.data import DataError, check_rows
    from maf_jax.files import atomic_write

    if args.n < 1:
        raise DataError(f"-n must be a positive number of samples, got {args.n}")
    model = checkpoint.load(args.checkpoint)
    context = _context(args)
    if context is not None:
        context = check_rows(context, "context", model.context)
    dist = model(context)
    samples = np.asarray(jax.jit(lambda k: dist.sample(k, (args.n,)))(jax.random.key(args.seed)))
    output = Path(args.output)
    with atomic_write(output) as f:
        np.save(f, samples)
    print(f"wrote {output}: samples of shape {samples.shape}")


def _plot(args, data=None) -> None:
    import jax

    from maf_jax import checkpoint
    from maf_jax.data import DataError, check_rows, load_file
    from maf_jax.plot import plot

    model = checkpoint.load(args.checkpoint)
    if data is None and args.data:
        data = check_rows(load_file(args.data), "data", model.features)
    context = _context(args)
    if context is not None:
        if len(context) != 1:
            raise DataError("plot takes a single context row")
        context = check_rows(context, "context", model.context)[0]
    elif model.context:
        raise DataError("the model is conditional: give --context FILE with one row")
    path = plot(model, args.output, data=data, key=jax.random.key(args.seed), c=context)
    print(f"wrote {path}")


def _demo(args) -> None:
    import jax
    import numpy as np

    from maf_jax.data import load

    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    fit_args = _parser().parse_args(
        [
            "fit",
            args.density,
            "-o",
            str(out / "model.npz"),
            "--epochs",
            str(args.epochs),
            "--transforms",
            "5",
            "--hidden",
            "64",
            "64",
            "--batch-size",
            "256",
            "--lr",
            "3e-3",
            "--seed",
            str(args.seed),
            "--rows",
            "20000",
            *(["--no-progress"] if args.no_progress else []),
        ]
    )
    summary = _fit(fit_args, density=args.density)
    data = np.asarray(load(args.density, jax.random.key(args.seed + 100), 5000))
    plot_args = argparse.Namespace(
        checkpoint=str(out / "model.npz"),
        data=None,
        context=None,
        output=str(out / "density.png"),
        seed=args.seed,
    )
    _plot(plot_args, data=data)
    print(
        f"demo: {args.density}, validation NLL {summary['val_nll']:.3f} nats, "
        f"{summary['seconds']:.0f} s of training; see {out / 'density.png'}"
    )


def _compilation_cache(args) -> None:
    """Keeps compiled programs on disk unless the option or the environment says not to."""
    setting = os.environ.get(CACHE_ENV, "")
    if args.no_compilation_cache or setting.lower() in ("off", "0", "false", "no"):
        return
    from maf_jax.compilation_cache import enable_compilation_cache

    try:
        enable_compilation_cache(setting or None)
    except OSError as error:  # a read-only home, say: run without the cache
        print(f"maf-jax: compilation cache off ({error})", file=sys.stderr)


def main(argv=None) -> int:
    """Runs the command line; returns the exit status."""
    args = _parser().parse_args(argv)
    _compilation_cache(args)
    from maf_jax.checkpoint import CheckpointError
    from maf_jax.data import DataError

    commands = dict(fit=_fit, eval=_eval, sample=_sample, plot=_plot, demo=_demo)
    try:
        commands[args.command](args)
    except (DataError, CheckpointError, OSError) as error:
        print(f"maf-jax {args.command}: error: {error}", file=sys.stderr)
        return 2
    except ValueError as error:  # bad options that reached the library
        print(f"maf-jax {args.command}: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
