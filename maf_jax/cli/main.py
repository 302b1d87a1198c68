"""The ``maf-jax`` command: fit, eval, sample, plot and demo.

Every error a user can cause (a bad option, file or checkpoint) ends the command
with exit status 2 and one line on stderr; outputs are checked before any work and
written atomically at the end, so a failed or interrupted command (Ctrl-C, SIGTERM:
exit status 130) leaves every existing file as it was.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import signal
import sys
import time
from pathlib import Path

import jax
import numpy as np
import optax
from flax import nnx
from tqdm.auto import tqdm

from maf_jax import checkpoint
from maf_jax.bijections.entries import parameter_shapes
from maf_jax.checkpoint.files import (
    CHECKPOINTS,
    FIGURES,
    SAMPLES,
    SUMMARIES,
    OutputError,
    atomic_write,
    check_output,
)
from maf_jax.checkpoint.model import CheckpointError
from maf_jax.checkpoint.schema import size
from maf_jax.cli.job import in_job, join, mesh_of, train_checkpoint
from maf_jax.cli.options import CACHE_ENV, parser
from maf_jax.cli.plot import plot
from maf_jax.core.network import ACTIVATIONS
from maf_jax.data.loaders import DataError, check_rows, load, load_file
from maf_jax.flows import MAF, NSF, MAFMoG
from maf_jax.train.compilation_cache import enable_compilation_cache
from maf_jax.train.distributed import process_rows
from maf_jax.train.fitting import fit, log_probs, mean_and_standard_error
from maf_jax.train.loop import Interrupted

__all__ = ["main"]

SAMPLE_BATCH = 65_536  # samples drawn per compiled call: bounded memory for any -n
EVAL_BATCH = 4096  # rows evaluated per compiled call


def _data(args, key, features: int | None = None):
    """The rows of ``args.data``, checked; built-in densities drawn from ``key``."""
    return check_rows(load(args.data, key, args.rows, array=args.key), "data", features)


def _context(args, rows: int | None = None, features: int | None = None):

    if args.context is None:
        return None
    context = load_file(args.context, args.context_key)
    if context.ndim == 1:
        context = context[None] if rows is None else context[:, None]
    context = check_rows(context, "context", features)
    if rows is not None and len(context) != rows:
        raise DataError(f"{args.context}: has {len(context)} rows but the data has {rows}")
    return context


def _check_fits_in_memory(parameters: int) -> None:
    """Refuses, before building it, a model whose training state exceeds the memory."""
    needed = 4 * 4 * parameters  # float32 parameters, gradients and Adam's two moments
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return
    if needed > memory:
        raise DataError(
            f"a model of {parameters:,} parameters needs about {needed / 2**30:.0f} GiB to "
            f"train, more than this machine's {memory / 2**30:.0f} GiB: use smaller "
            "--hidden or fewer --transforms"
        )


def _fit(args) -> dict:

    distributed = join(args)  # before any other JAX call

    main = jax.process_index() == 0
    if args.activation not in ACTIVATIONS:
        raise DataError(f"unknown activation {args.activation!r}; one of {sorted(ACTIVATIONS)}")
    if args.batch_norm_statistics != "running" and not args.batch_norm:
        raise DataError("--batch-norm-statistics sets batch normalisations: add --batch-norm")
    inputs = [args.data, args.context]
    output = check_output(args.output, CHECKPOINTS, inputs)
    summary_path = check_output(
        args.summary or output.with_suffix(".json"), SUMMARIES, inputs, [output]
    )
    args.train_state = train_checkpoint(args, output, summary_path)
    key = jax.random.key(args.seed)
    data = _data(args, key)
    context = _context(args, len(data))
    rows = len(data)
    if distributed:  # each process keeps its own block of rows
        block = process_rows(rows)
        data, context = data[block], None if context is None else context[block]
    univariate = {"name": "spline", "bins": args.bins} if args.flow == "nsf" else {"name": "affine"}
    sizes = dict(
        features=data.shape[1],
        context=0 if context is None else context.shape[1],
        transforms=args.transforms,
        hidden_features=args.hidden,
        residual=args.residual,
        shapes=[list(shape) for shape in parameter_shapes(univariate)],
        standardized=True,
        batch_norm=args.batch_norm,
        base={"name": "mog", "components": args.components}
        if args.flow == "maf-mog"
        else {"name": "normal"},
    )
    _check_fits_in_memory(size(sizes))
    flows = {
        "maf": MAF,
        "nsf": functools.partial(NSF, bins=args.bins),
        "maf-mog": functools.partial(MAFMoG, components=args.components),
    }
    flow = flows[args.flow](
        data.shape[1],
        0 if context is None else context.shape[1],
        transforms=args.transforms,
        randperm=args.randperm,
        bounds=args.bounds,
        link=args.link,
        batch_norm=args.batch_norm,
        passes=args.passes,
        hidden_features=tuple(args.hidden),
        residual=args.residual,
        identity_init=args.identity_init,
        activation=ACTIVATIONS[args.activation],
        precision=args.precision,
        inverse=args.inverse,
        rngs=nnx.Rngs(args.seed),
    )
    mesh = mesh_of(args, distributed)
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
        mesh=mesh,
        shards=args.shards,
        checkpoint=args.train_state,
        checkpoint_every=args.checkpoint_every,
        resume=args.resume,
        batch_norm_statistics=args.batch_norm_statistics,
    )
    seconds = time.perf_counter() - start
    if history.steps == 0:
        raise DataError(f"training failed before the first epoch ended: {history.stopped}")
    summary = dict(
        data=str(args.data),
        rows=rows,
        features=data.shape[1],
        context=0 if context is None else context.shape[1],
        checkpoint=str(output),
        epochs=len(history.train_loss),
        steps=history.steps,
        best_epoch=history.best_epoch,
        train_nll=history.train_loss[-1],
        val_nll=min(history.val_nll) if history.val_nll else None,
        stopped=history.stopped,
        resumed_from=args.resume,
        processes=jax.process_count(),
        devices=1 if mesh is None else mesh.size,
        seconds=round(seconds, 2),
    )
    if not main:
        return summary
    # Both written to temporary files, then both renamed: an interrupt before the
    # renames leaves every file as it was.
    with atomic_write(output) as model_file, atomic_write(summary_path, "w") as summary_file:
        checkpoint.write(model_file, model)
        json.dump(summary, summary_file, indent=2, allow_nan=False)
    args.train_state.unlink(missing_ok=True)  # the model supersedes it
    if history.stopped == "early stopping" and args.no_progress:  # else the bar said so
        print(
            f"early stopping after epoch {len(history.train_loss) - 1}: no validation "
            f"improvement in {args.patience} epochs; kept epoch {history.best_epoch}",
            file=sys.stderr,
        )
    print(f"wrote {output} and {summary_path}: {json.dumps(summary)}")
    return summary


def _eval(args) -> None:

    model = checkpoint.load(args.checkpoint)
    data = _data(args, jax.random.key(args.seed), model.features)
    context = _context(args, len(data), model.context or None)
    values = log_probs(model, data, context, EVAL_BATCH, progress=not args.no_progress)
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        raise DataError(
            f"data: the log-likelihood of {bad.size} row(s) is not finite (rows "
            f"{', '.join(map(str, bad[:5]))}{', ...' if bad.size > 5 else ''}): they lie where "
            "the model's arithmetic overflows, far outside what it was fitted on"
        )
    mean, stderr = mean_and_standard_error(values)
    stderr = None if math.isnan(stderr) else stderr
    result = dict(log_likelihood=mean, standard_error=stderr, rows=len(values))
    print(json.dumps(result, allow_nan=False))
    spread = f" ± {stderr:.4f}" if stderr is not None else ""
    print(f"mean log-likelihood: {mean:.4f}{spread} nats ({len(values)} rows)", file=sys.stderr)


def _sample(args) -> None:

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
    dtype = np.dtype(jax.eval_shape(draw, jax.random.key(0)).dtype)  # the model's
    header = dict(descr=np.lib.format.dtype_to_descr(dtype), fortran_order=False)
    shown = not args.no_progress and args.n > batch  # as fit's bar: on stderr
    counts = dict(total=args.n, unit="sample", unit_scale=True)
    with (
        atomic_write(output) as f,
        tqdm(**counts, disable=not shown, dynamic_ncols=True) as bar,
    ):
        np.lib.format.write_array_header_2_0(f, header | {"shape": shape})
        for i, start in enumerate(range(0, args.n, batch)):
            samples = np.asarray(draw(jax.random.fold_in(jax.random.key(args.seed), i)))
            f.write(samples[: args.n - start].tobytes())
            bar.update(min(batch, args.n - start))
    print(f"wrote {output}: samples of shape {shape}")


def _plot(args, data=None) -> None:

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

    out = Path(args.output_dir)
    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: is a file, expected a folder for the demo's outputs")
    out.mkdir(parents=True, exist_ok=True)
    fit_args = parser().parse_args(
        ["fit", args.density, "-o", str(out / "model.npz"), "--epochs", str(args.epochs),
         "--transforms", "5", "--hidden", "64", "64", "--batch-size", "256", "--lr", "3e-3",
         "--seed", str(args.seed), "--rows", "20000",
         *(["--no-progress"] if args.no_progress else [])]
    )  # fmt: skip
    summary = _fit(fit_args)
    data = np.asarray(load(args.density, jax.random.key(args.seed + 100), 5000))
    plot_args = parser().parse_args(
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


def _interrupted(name: str, args, started: float, stop) -> int:
    if stop is not None:
        print(
            f"{name}: interrupted after step {stop.step}; the training state is in {stop.path}: "
            f"continue with --resume {stop.path}",
            file=sys.stderr,
        )
        return 130
    saved = getattr(args, "train_state", None)  # written every --checkpoint-every steps
    if saved is not None and saved.exists() and saved.stat().st_mtime >= started:
        print(
            f"{name}: interrupted; the training state of the last checkpoint is in {saved}: "
            f"continue with --resume {saved}",
            file=sys.stderr,
        )
    else:
        print(f"{name}: interrupted; no file was written or changed", file=sys.stderr)
    return 130


def main(argv=None) -> int:
    """Runs the command line; returns the exit status.

    0 on success, 1 when another process of a job failed, 2 for bad input, 130 when
    interrupted.
    """
    try:
        args = parser().parse_args(argv)
    except SystemExit as exit:  # --help, --version and bad options
        return exit.code if isinstance(exit.code, int) else 2
    commands = dict(fit=_fit, eval=_eval, sample=_sample, plot=_plot, demo=_demo)
    name = f"maf-jax {args.command}"
    started = time.time()
    with _terminate_as_interrupt():
        try:
            _compilation_cache(args)

            commands[args.command](args)
        except Interrupted as stop:
            return _interrupted(name, args, started, stop)
        except KeyboardInterrupt:
            return _interrupted(name, args, started, None)
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
        except MemoryError:
            print(f"{name}: error: out of memory; try smaller sizes", file=sys.stderr)
            return 2
        except RuntimeError as error:  # XLA's errors: out of memory on a device, say
            first = str(error).strip().splitlines()[0]
            if "RESOURCE_EXHAUSTED" in str(error):
                print(f"{name}: error: out of memory; try smaller sizes ({first})", file=sys.stderr)
                return 2
            if in_job():
                print(
                    f"{name}: error: another process of the job failed or stopped answering "
                    f"({first})",
                    file=sys.stderr,
                )
                return 1
            raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
