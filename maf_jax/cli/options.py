"""The options of the ``maf-jax`` command.

Every option has a help text and a default, and argument types refuse bad values in
one line.
"""

from __future__ import annotations

import argparse
import math

from maf_jax import __version__
from maf_jax.bijections.autoregressive import INVERSES
from maf_jax.bijections.support import DEFAULT_LINK, LINKS
from maf_jax.core.network import ACTIVATIONS, PRECISIONS
from maf_jax.data.loaders import SKLEARN
from maf_jax.data.toy import TOY_DENSITIES
from maf_jax.train.statistics import STATISTICS

__all__ = ["CACHE_ENV", "parser"]

DENSITIES = tuple(TOY_DENSITIES)
CACHE_ENV = "MAF_JAX_COMPILATION_CACHE"


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
        f"2-D density ({', '.join(DENSITIES)}) or "
        + ", ".join(f"sklearn:{name}" for name in SKLEARN)
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


def _bounds(text: str) -> list[list[float | None]]:
    """``LOW:HIGH`` pairs separated by commas; an empty side is unbounded."""
    pairs = []
    for pair in text.split(","):
        low, colon, high = pair.partition(":")
        try:
            if not colon:
                raise ValueError
            pairs.append([float(v) if v.strip() else None for v in (low, high)])
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected LOW:HIGH pairs separated by commas (an empty side is unbounded), "
                f"got {text!r}"
            ) from None
    return pairs


def _address(text: str) -> str:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return text


def _add_resume(fit) -> None:
    group = fit.add_argument_group("stopping and resuming")
    group.add_argument(
        "--checkpoint-every", type=_integer(1), metavar="N",
        help="write the training state every N steps; it is always written when SIGINT or "
        "SIGTERM stops the command (exit status 130)",
    )  # fmt: skip
    group.add_argument(
        "--train-checkpoint", metavar="PATH",
        help="the .npz file of the training state (default: OUTPUT with .train.npz); "
        "removed once the model is written",
    )  # fmt: skip
    group.add_argument(
        "--resume", metavar="PATH",
        help="continue the run whose training state PATH holds, with its data, seed and "
        "options; ends with the parameters of a run never stopped",
    )  # fmt: skip


def _add_distributed(fit) -> None:
    group = fit.add_argument_group(
        "several processes (jax.distributed): run the same command in each, every "
        "process reads its own block of the rows, process 0 writes the files"
    )
    group.add_argument(
        "--distributed", action="store_true",
        help="join a job of several processes; settings not given here come from the "
        "environment as jax.distributed reads it (JAX_COORDINATOR_ADDRESS, Slurm, Open MPI)",
    )  # fmt: skip
    group.add_argument(
        "--coordinator", type=_address, metavar="HOST:PORT",
        help="address of process 0, which coordinates the job (implies --distributed)",
    )  # fmt: skip
    group.add_argument(
        "--num-processes", type=_integer(1), metavar="N",
        help="processes in the job (implies --distributed)",
    )  # fmt: skip
    group.add_argument(
        "--process-id", type=_integer(0), metavar="I",
        help="this process's index, 0 to N - 1 (implies --distributed)",
    )  # fmt: skip
    group.add_argument(
        "--timeout", type=_integer(1), default=100, metavar="SECONDS",
        help="how long to wait for the other processes to join, and after how long without "
        "a heartbeat a process counts as dead, which ends the others with an error",
    )  # fmt: skip


def parser() -> argparse.ArgumentParser:
    """The ``maf-jax`` parser: ``fit``, ``eval``, ``sample``, ``plot`` and ``demo``."""
    formatter = argparse.ArgumentDefaultsHelpFormatter
    parser = _Parser(
        prog="maf-jax",
        description="Masked Autoregressive Flows for density estimation.",
        formatter_class=formatter,
    )
    parser.add_argument("--version", action="version", version=f"maf-jax {__version__}")
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
    fit.add_argument(
        "--flow", choices=("maf", "nsf", "maf-mog"), default="maf",
        help="maf: affine univariate maps; nsf: rational-quadratic splines on [-5, 5]; "
        "maf-mog: affine maps on a MADE with a mixture of Gaussians per feature",
    )  # fmt: skip
    fit.add_argument("--bins", type=_integer(2), default=8, help="spline bins of --flow nsf")
    fit.add_argument(
        "--components", type=_integer(1), default=10,
        help="Gaussians per feature in the base of --flow maf-mog",
    )  # fmt: skip
    fit.add_argument("--transforms", type=_integer(1), default=5, help="autoregressive transforms")
    fit.add_argument(
        "--hidden", type=_integer(1), nargs="+", default=[128, 128], metavar="N",
        help="hidden layer sizes of each transform's network",
    )  # fmt: skip
    fit.add_argument(
        "--residual", action="store_true",
        help="masked residual blocks in each network (zuko's residual=True)",
    )  # fmt: skip
    fit.add_argument(
        "--identity-init", action="store_true",
        help="start each network's last layer at zero: the flow starts as the identity",
    )  # fmt: skip
    fit.add_argument(
        "--bounds", type=_bounds, metavar="LOW:HIGH[,...]",
        help="the support of the data, one LOW:HIGH for every feature or one per feature, "
        "an empty side unbounded (0:1,0:,:); the flow's samples stay strictly inside and "
        "rows on or beyond a bound are refused; write --bounds=-1:1 for a negative bound",
    )  # fmt: skip
    fit.add_argument(
        "--link", choices=LINKS, default=DEFAULT_LINK,
        help="the map of a feature with two finite bounds to the real line (default: learned, "
        "the identity but within a share of the width of a bound, where a probit tail takes "
        "over, the share trained per feature from 2%%; probit bends the whole box; linear "
        "keeps the share at 2%%; logit is sbi's)",
    )  # fmt: skip
    fit.add_argument(
        "--batch-norm", action="store_true",
        help="a batch normalisation after every transform (the paper's MAF); the model "
        "evaluates and samples with running averages of the training batches' statistics",
    )  # fmt: skip
    fit.add_argument(
        "--batch-norm-statistics", choices=STATISTICS, default="running",
        help="with --batch-norm, what the model normalises with: running averages (default) "
        "or the statistics of every training row set after training, the paper's choice",
    )  # fmt: skip
    fit.add_argument("--passes", type=_integer(1), help="passes of the inverse (default: features)")
    fit.add_argument("--randperm", action="store_true", help="random feature orders")
    fit.add_argument("--activation", default="relu", help=", ".join(ACTIVATIONS))
    fit.add_argument(
        "--precision", choices=tuple(PRECISIONS), default="highest",
        help="precision of the matrix products: highest is full float32 on every backend",
    )  # fmt: skip
    fit.add_argument(
        "--inverse",
        choices=tuple(INVERSES),
        default="incremental",
        help="the inverse behind sampling, stored in the checkpoint",
    )
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
    fit.add_argument(
        "--devices", type=_integer(1),
        help="data-parallel training over this many devices of each process (default: 1, "
        "every local device under --distributed); the batch size must be a multiple of "
        "the devices of all processes together",
    )  # fmt: skip
    fit.add_argument(
        "--shards", type=_integer(1),
        help="read the rows as this many contiguous shards, each step taking batch-size / "
        "shards rows from each: one process with --shards S repeats a job of S processes "
        "(default: the number of processes)",
    )  # fmt: skip
    _add_resume(fit)
    _add_distributed(fit)
    fit.add_argument("--no-progress", action="store_true", help="no progress bar")

    evaluate = command("eval", "mean log-likelihood of data under a checkpoint")
    evaluate.add_argument("checkpoint", metavar="CKPT", help="a checkpoint written by fit")
    _add_data(evaluate)
    _add_context(evaluate, "contexts, one row per data row")
    evaluate.add_argument("--seed", type=_integer(0), default=1, help="seed of generated data")
    evaluate.add_argument("--no-progress", action="store_true", help="no progress bar")

    sample = command("sample", "draw samples from a checkpoint and write them as .npy")
    sample.add_argument("checkpoint", metavar="CKPT", help="a checkpoint written by fit")
    sample.add_argument("-n", type=_integer(1), required=True, help="number of samples")
    sample.add_argument("-o", "--output", required=True, help="the .npy file to write")
    _add_context(sample, "contexts (rows) of a conditional model: samples (n, rows, features)")
    sample.add_argument("--seed", type=_integer(0), default=0, help="seed of the draw")
    sample.add_argument("--no-progress", action="store_true", help="no progress bar")

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
