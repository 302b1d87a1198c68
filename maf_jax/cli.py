"""The ``maf-jax`` command: fit, eval, sample, plot and demo.

Every error a user can cause (a bad option, file or checkpoint) ends the command
with exit status 2 and one line on stderr; outputs are checked before any work and
written atomically at the end, so a failed or interrupted command (Ctrl-C, SIGTERM:
exit status 130) leaves every existing file as it was.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import math
import os
import signal
import sys
import time
from pathlib import Path

__all__ = ["main"]

DENSITIES = ("two_moons", "checkerboard", "eight_gaussians", "pinwheel", "spirals")
CACHE_ENV = "MAF_JAX_COMPILATION_CACHE"
CHECKPOINTS, SUMMARIES, SAMPLES = (".npz",), (".json",), (".npy",)
FIGURES = (".png", ".pdf", ".svg")
SAMPLE_BATCH = 65_536  # samples drawn per compiled call: bounded memory for any -n


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        """Ends with one line, not the usage: ``maf-jax fit: error: ...``."""
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _integer(minimum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {value}")
        return value

    return parse


def _real(low: float, high: float = math.inf, low_open: bool = False):
    """A number in ``[low, high)``, or ``(low, high)`` if ``low_open``."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not (low < value if low_open else low <= value) or not value < high:
            interval = f"{'(' if low_open else '['}{low}, {high})"
            raise argparse.ArgumentTypeError(f"expected a number in {interval}, got {text}")
        return value

    return parse


def _add_data(parser, name: str = "data", flag: str | None = None) -> None:
    """The data argument, its ``--key``, its context and the context's key."""
    what = (
        "a .npy, .npz or text file of rows (comma, tab or space separated), a built-in "
        f"2-D density ({', '.join(DENSITIES)}) or sklearn:digits, sklearn:breast_cancer, "
        "sklearn:wine"
    )
    if flag is None:
        parser.add_argument(name, metavar="DATA", help=what)
    else:
        parser.add_argument(flag, dest=name, metavar="DATA", help=f"data to draw: {what}")
    parser.add_argument("--key", metavar="NAME", help="the array of a .npz DATA holding several")
    parser.add_argument(
        "--rows", type=_integer(1), default=10_000, help="rows of a built-in density"
    )


def _add_context(parser, help: str) -> None:
    parser.add_argument("--context", metavar="FILE", help=help)
    parser.add_argument("--context-key", metavar="NAME", help="the array of a .npz context")


def _parser() -> argparse.ArgumentParser:
    formatter = argparse.ArgumentDefaultsHelpFormatter
    parser = _Parser(
        prog="maf-jax",
        description="Masked Autoregressive Flows for density estimation.",
        formatter_class=formatter,
    )
    parser.add_argument(
        "--version", action="version", version=f"maf-jax {importlib.metadata.version('maf-jax')}"
    )
    parser.add_argument(
        "--no-compilation-cache",
        action="store_true",
        help="compile every program anew instead of keeping compiled programs in "
        f"~/.cache/maf-jax/jax (or ${CACHE_ENV}; {CACHE_ENV}=off also turns it off)",
    )
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_Parser
    )

    def command(name: str, help: str):
        return commands.add_parser(name, help=help, description=help, formatter_class=formatter)

    fit = command("fit", "fit a MAF to data and write a checkpoint")
    _add_data(fit)
    _add_context(fit, "contexts, one row per data row, for a conditional model")
    fit.add_argument("-o", "--output", default="model.npz", help="the .npz checkpoint to write")
    fit.add_argument("--summary", help="the JSON summary to write (default: OUTPUT with .json)")
    fit.add_argument("--transforms", type=_integer(1), default=5, help="autoregressive transforms")
    fit.add_argument(
        "--hidden", type=_integer(1), nargs="+", default=[128, 128], metavar="N",
        help="hidden layer sizes of each transform's network",
    )  # fmt: skip
    fit.add_argument("--passes", type=_integer(1), help="passes of the inverse (default: features)")
    fit.add_argument("--randperm", action="store_true", help="random feature orders")
    fit.add_argument(
        "--activation", default="relu", help="relu, elu, gelu, silu, tanh or leaky_relu"
    )
    fit.add_argument(
        "--precision", choices=("highest", "high", "default"), default="highest",
        help="precision of the matrix products: highest is full float32 on every backend",
    )  # fmt: skip
    fit.add_argument(
        "--inverse", choices=("incremental", "full_pass"), default="incremental",
        help="the inverse behind sampling, stored in the checkpoint",
    )  # fmt: skip
    fit.add_argument("--batch-size", type=_integer(1), default=256, help="rows per step")
    budget = fit.add_mutually_exclusive_group()
    budget.add_argument("--epochs", type=_integer(1), help="passes over the data (default: 20)")
    budget.add_argument("--steps", type=_integer(1), help="optimiser steps, instead of epochs")
    fit.add_argument("--lr", type=_real(0, low_open=True), default=1e-3, help="Adam learning rate")
    fit.add_argument(
        "--validation", type=_real(0, 1), default=0.1, help="fraction of rows held out"
    )
    fit.add_argument(
        "--patience", type=_integer(1), default=10,
        help="epochs without validation improvement before stopping",
    )  # fmt: skip
    fit.add_argument("--seed", type=_integer(0), default=0, help="seed of every random draw")
    fit.add_argument("--no-progress", action="store_true", help="no progress bar")

    evaluate = command("eval", "mean log-likelihood of data under a checkpoint")
    evaluate.add_argument("checkpoint", metavar="CKPT", help="a checkpoint written by fit")
    _add_data(evaluate)
    _add_context(evaluate, "contexts, one row per data row")
    evaluate.add_argument("--seed", type=_integer(0), default=1, help="seed of generated data")

    sample = command("sample", "draw samples from a checkpoint and write them as .npy")
    sample.add_argument("checkpoint", metavar="CKPT", help="a checkpoint written by fit")
    sample.add_argument("-n", type=_integer(1), required=True, help="number of samples")
    sample.add_argument("-o", "--output", required=True, help="the .npy file to write")
    _add_context(sample, "contexts (rows) of a conditional model: samples (n, rows, features)")
    sample.add_argument("--seed", type=_integer(0), default=0, help="seed of the draw")

    plot = command("plot", "plot the density and samples of a checkpoint")
    plot.add_argument("checkpoint", metavar="CKPT", help="a checkpoint written by fit")
    _add_data(plot, "data", flag="--data")
    _add_context(plot, "one context row, for a conditional model")
    plot.add_argument("-o", "--output", default="density.png", help="figure: .png, .pdf or .svg")
    plot.add_argument("--seed", type=_integer(0), default=0, help="seed of the samples")

    demo = command("demo", "fit a built-in 2-D density and plot it")
    demo.add_argument("--density", choices=DENSITIES, default="two_moons", help="the density")
    demo.add_argument("-o", "--output-dir", default="maf-jax-demo", help="folder of the outputs")
    demo.add_argument("--epochs", type=_integer(1), default=40, help="most epochs")
    demo.add_argument("--seed", type=_integer(0), default=0, help="seed of every random draw")
    demo.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def _write_json(path: Path, payload: dict) -> None:
    from maf_jax.files import atomic_write

    with atomic_write(path, "w") as f:
        json.dump(payload, f, indent=2, allow_nan=False)


def _data(args, key, features: int | None = None):
    """The rows of ``args.data``, checked; built-in densities drawn from ``key``."""
    from maf_jax.data import check_rows, load

    return check_rows(load(args.data, key, args.rows, array=args.key), "data", features)


def _context(args, rows: int | None = None, features: int | None = None):
    from maf_jax.data import DataError, check_rows, load_file

    if args.context is None:
        return None
    context = load_file(args.context, args.context_key)
    if context.ndim == 1:
        context = context[None] if rows is None else context[:, None]
    context = check_rows(context, "context", features)
    if rows is not None and len(context) != rows:
        raise DataError(f"{args.context}: has {len(context)} rows but the data has {rows}")
    return context


def _fit(args) -> dict:
    import jax
    import optax
    from flax import nnx

    from maf_jax import MAF, checkpoint
    from maf_jax.data import DataError
    from maf_jax.files import check_output
    from maf_jax.train import fit

    if args.activation not in checkpoint.ACTIVATIONS:
        raise DataError(
            f"unknown activation {args.activation!r}; one of {sorted(checkpoint.ACTIVATIONS)}"
        )
    inputs = [args.data, args.context]
    output = check_output(args.output, CHECKPOINTS, inputs)
    summary_path = check_output(
        args.summary or output.with_suffix(".json"), SUMMARIES, inputs, [output]
    )
    key = jax.random.key(args.seed)
    data = _data(args, key)
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
        data=str(args.data),
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
    if history.stopped == "early stopping":
        print(
            f"early stopping after epoch {len(history.train_loss) - 1}: no validation "
            f"improvement in {args.patience} epochs; kept epoch {history.best_epoch}",
            file=sys.stderr,
        )
    print(f"wrote {output} and {summary_path}: {json.dumps(summary)}")
    return summary


def _eval(args) -> None:
    import jax
    import numpy as np

    from maf_jax import checkpoint
    from maf_jax.data import DataError
    from maf_jax.train import log_probs

    model = checkpoint.load(args.checkpoint)
    data = _data(args, jax.random.key(args.seed), model.features)
    values = log_probs(model, data, _context(args, len(data), model.context or None))
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        raise DataError(
            f"data: the log-likelihood of {bad.size} row(s) is not finite (rows "
            f"{', '.join(map(str, bad[:5]))}{', ...' if bad.size > 5 else ''}): they lie where "
            "the model's float32 arithmetic overflows, far outside what it was fitted on"
        )
    mean = float(values.mean())
    stderr = float(values.std(ddof=1) / math.sqrt(len(values))) if len(values) > 1 else None
    result = dict(log_likelihood=mean, standard_error=stderr, rows=len(values))
    print(json.dumps(result, allow_nan=False))
    spread = f" ± {stderr:.4f}" if stderr is not None else ""
    print(f"mean log-likelihood: {mean:.4f}{spread} nats ({len(values)} rows)", file=sys.stderr)


def _sample(args) -> None:
    import jax
    import numpy as np

    from maf_jax import checkpoint
    from maf_jax.data import DataError
    from maf_jax.files import atomic_write, check_output

    output = check_output(args.output, SAMPLES, [args.checkpoint, args.context])
    model = checkpoint.load(args.checkpoint)
    context = _context(args, features=model.context or None)
    if model.context and context is None:
        raise DataError("the model is conditional: give --context FILE with one row per context")
    if context is not None and not model.context:
        raise DataError("the model is unconditional (context=0): give no --context")
    dist = model(context)
    shape = (args.n, *dist.batch_shape, model.features)
    batch = max(1, SAMPLE_BATCH // math.prod(dist.batch_shape))
    batch = min(batch, args.n)
    draw = jax.jit(lambda key: dist.sample(key, (batch,)))
    header = dict(descr=np.lib.format.dtype_to_descr(np.dtype(np.float32)), fortran_order=False)
    with atomic_write(output) as f:
        np.lib.format.write_array_header_2_0(f, header | {"shape": shape})
        for i, start in enumerate(range(0, args.n, batch)):
            samples = np.asarray(draw(jax.random.fold_in(jax.random.key(args.seed), i)))
            f.write(samples[: args.n - start].astype(np.float32).tobytes())
    print(f"wrote {output}: samples of shape {shape}")


def _plot(args, data=None) -> None:
    import jax

    from maf_jax import checkpoint
    from maf_jax.data import DataError
    from maf_jax.files import check_output
    from maf_jax.plot import plot

    output = check_output(args.output, FIGURES, [args.checkpoint, args.data, args.context])
    model = checkpoint.load(args.checkpoint)
    if data is None and args.data:
        data = _data(args, jax.random.key(args.seed + 100), model.features)
    context = _context(args, features=model.context or None)
    if context is not None:
        if not model.context:
            raise DataError("the model is unconditional (context=0): give no --context")
        if len(context) != 1:
            raise DataError(f"plot takes a single context row, got {len(context)}")
        context = context[0]
    elif model.context:
        raise DataError("the model is conditional: give --context FILE with one row")
    path = plot(model, output, data=data, key=jax.random.key(args.seed), c=context)
    print(f"wrote {path}")


def _demo(args) -> None:
    import jax
    import numpy as np

    from maf_jax.data import DataError, load

    out = Path(args.output_dir)
    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: is a file, expected a folder for the demo's outputs")
    out.mkdir(parents=True, exist_ok=True)
    fit_args = _parser().parse_args(
        ["fit", args.density, "-o", str(out / "model.npz"), "--epochs", str(args.epochs),
         "--transforms", "5", "--hidden", "64", "64", "--batch-size", "256", "--lr", "3e-3",
         "--seed", str(args.seed), "--rows", "20000",
         *(["--no-progress"] if args.no_progress else [])]
    )  # fmt: skip
    summary = _fit(fit_args)
    data = np.asarray(load(args.density, jax.random.key(args.seed + 100), 5000))
    plot_args = _parser().parse_args(
        ["plot", str(out / "model.npz"), "-o", str(out / "density.png"), "--seed", str(args.seed)]
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


@contextlib.contextmanager
def _terminate_as_interrupt():
    """SIGTERM raises ``KeyboardInterrupt`` as Ctrl-C does, so clean-up runs."""

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv=None) -> int:
    """Runs the command line; returns the exit status (0, 2 for bad input, 130 interrupted)."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exit:  # --help, --version and bad options
        return exit.code if isinstance(exit.code, int) else 2
    commands = dict(fit=_fit, eval=_eval, sample=_sample, plot=_plot, demo=_demo)
    name = f"maf-jax {args.command}"
    with _terminate_as_interrupt():
        try:
            _compilation_cache(args)
            from maf_jax.checkpoint import CheckpointError
            from maf_jax.data import DataError
            from maf_jax.files import OutputError

            commands[args.command](args)
        except KeyboardInterrupt:
            print(f"{name}: interrupted; no file was written or changed", file=sys.stderr)
            return 130
        except (DataError, CheckpointError, OutputError) as error:
            print(f"{name}: error: {error}", file=sys.stderr)
            return 2
        except OSError as error:
            where = f"{error.filename}: " if error.filename else ""
            print(f"{name}: error: {where}{error.strerror or error}", file=sys.stderr)
            return 2
        except ValueError as error:  # bad options that reached the library
            print(f"{name}: error: {error}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
