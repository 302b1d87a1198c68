"""The training loop, one step at a time: epochs, early stopping, stops and resumes.

Every step runs the same compiled program on a batch rebuilt from the epoch's
key and the step's position, so the loop can stop after any step, write its whole
``State`` (``maf_jax.checkpoint.training``) and later continue as if it had never stopped. A
SIGINT or SIGTERM asks for a stop; the request goes into the next step's program,
which returns whether any process asked, so that every process of a job stops
after the same step.
"""

from __future__ import annotations

import dataclasses
import math
import signal
import threading
import warnings
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from maf_jax.checkpoint import schema as configuration
from maf_jax.checkpoint import training as resume
from maf_jax.checkpoint.model import CheckpointError
from maf_jax.core._pytree import float_dtype
from maf_jax.train.batches import Shards
from maf_jax.train.distributed import global_array, to_host

__all__ = ["History", "Interrupted", "Loop", "State"]


@dataclasses.dataclass
class History:
    """What happened during ``fit``.

    Attributes:
        train_loss: Mean training NLL (nats) of every epoch.
        val_nll: Validation NLL after every epoch (empty without validation).
        best_epoch: Epoch (0-based) whose parameters were kept.
        steps: Optimiser steps taken.
        stopped: Why training ended: ``"completed"``, ``"early stopping"`` or a
            message about a non-finite loss.
    """

    train_loss: list[float] = dataclasses.field(default_factory=list)
    val_nll: list[float] = dataclasses.field(default_factory=list)
    best_epoch: int = -1
    steps: int = 0
    stopped: str = "completed"


class Interrupted(KeyboardInterrupt):
    """Training stopped by SIGINT or SIGTERM after writing its state to ``path``.

    Attributes:
        path: The training checkpoint, to pass as ``fit(..., resume=path)``.
        step: Steps taken when it stopped.
    """

    def __init__(self, path, step: int):
        super().__init__(f"stopped after step {step}; training state in {path}")
        self.path, self.step = Path(path), step


def _copy(tree):
    """New buffers for ``tree``'s arrays: the next step donates the ones it is given."""
    return jax.tree.map(jnp.copy, tree)


def _describe(model) -> dict | None:
    try:
        return configuration.describe(model)
    except configuration.ConfigError:  # a custom flow: the arrays' shapes still checked
        return None


def _mismatch(path, record: dict, settings: dict, config: dict | None) -> str | None:
    saved = record["config"]
    if saved is not None and config is not None and saved != config:
        name = next(k for k in sorted(set(saved) | set(config)) if saved.get(k) != config.get(k))
        return (
            f"written for a model with {name} {saved.get(name)!r}, this one has "
            f"{config.get(name)!r}"
        )
    for name, value in settings.items():
        if record["settings"].get(name) != value:
            if name in ("digests", "train_rows", "validation_rows"):
                return "written for other data"
            if name == "key":
                return "written by a run with another key (seed)"
            return f"written with {name} {record['settings'].get(name)!r}, this run has {value!r}"
    return None


@dataclasses.dataclass
class State:
    """Everything that changes during training; the rest is fixed by the arguments.

    Attributes:
        params: The parameters being trained.
        opt_state: The optimiser's state.
        best_params: The parameters of the best epoch so far.
        step: Steps taken.
        epoch: Epochs closed (validated, in the history).
        position: Steps taken in the current epoch; all of them once its last step is
            taken, until the loop closes it.
        losses: Training losses of those steps.
        best: Best validation NLL so far.
        waited: Epochs since it improved.
        history: The ``History`` so far.
    """

    params: object
    opt_state: object
    best_params: object
    step: int = 0
    epoch: int = 0
    position: int = 0
    losses: list = dataclasses.field(default_factory=list)
    best: float = math.inf
    waited: int = 0
    history: History = dataclasses.field(default_factory=History)

    @classmethod
    def start(cls, params, opt_state) -> State:
        """The state before the first step.

        The step donates ``params`` and ``opt_state`` (their buffers become the
        updated ones), so the state holds copies: the model's own arrays stay valid
        whatever ends the training.
        """
        return cls(_copy(params), _copy(opt_state), params)

    def save(self, path, rest, settings: dict, model) -> None:
        """Writes the state, the model's other variables and ``settings`` atomically."""
        host = {"params": self.params, "opt_state": self.opt_state, "best_params": self.best_params}
        trees = {name: jax.tree.map(to_host, tree) for name, tree in host.items()}
        trees |= dict(
            rest=jax.tree.map(to_host, rest),
            epoch_losses=np.array(
                [to_host(loss) for loss in self.losses], float_dtype(self.params)
            ),
            train_loss=np.array(self.history.train_loss, np.float64),
            val_nll=np.array(self.history.val_nll, np.float64),
        )
        record = dict(
            step=self.step,
            epoch=self.epoch,
            position=self.position,
            steps=self.history.steps,
            best_epoch=self.history.best_epoch,
            waited=self.waited,
            best=None if math.isinf(self.best) else self.best,
            settings=settings,
            config=_describe(model),
        )
        resume.save(path, trees, record)

    @classmethod
    def read(cls, path, start: State, rest, model, settings: dict, optimizer, per_epoch: int):
        """The state in the training checkpoint ``path``, and the model's other variables.

        ``start`` and ``rest`` are the template: the file must hold arrays of their
        names, shapes and dtypes, written by a run with these ``settings``.

        Raises:
            CheckpointError: For a file that is not such a checkpoint.
        """
        record, headers = resume.read_record(path)
        problem = _mismatch(path, record, settings, _describe(model))
        if problem is None and record["position"] > per_epoch:
            problem = f"position {record['position']} is past the epoch's {per_epoch} steps"
        if problem:
            raise CheckpointError(f"{path}: {problem}; resume with the run's own settings")
        vector = jax.ShapeDtypeStruct
        validated = record["epoch"] if sum(settings["validation_rows"]) else 0
        template = dict(
            params=start.params,
            opt_state=jax.eval_shape(lambda p: optimizer.init(p), start.params),
            best_params=start.params,
            rest=rest,
            epoch_losses=vector((record["position"],), float_dtype(start.params)),
            train_loss=vector((record["epoch"],), np.float64),
            val_nll=vector((validated,), np.float64),
        )
        trees = resume.read_arrays(path, headers, template)
        device = {
            k: jax.tree.map(jnp.asarray, trees[k])
            for k in ("params", "opt_state", "best_params", "rest")
        }
        history = History(
            train_loss=trees["train_loss"].tolist(),
            val_nll=trees["val_nll"].tolist(),
            best_epoch=record["best_epoch"],
            steps=record["steps"],
        )
        state = cls(
            device["params"],
            device["opt_state"],
            device["best_params"],
            step=record["step"],
            epoch=record["epoch"],
            position=record["position"],
            losses=list(trees["epoch_losses"]),
            best=math.inf if record["best"] is None else record["best"],
            waited=record["waited"],
            history=history,
        )
        return state, device["rest"]


class _StopRequests:
    """SIGINT and SIGTERM ask for a stop after the current step; a second one stops at once."""

    def __init__(self, enabled: bool):
        self.enabled, self.requested, self.previous = enabled, False, {}

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self):
        if self.enabled and threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self.previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc):
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)


@dataclasses.dataclass
class Loop:
    """What stays fixed while training: data, budget, the compiled step, where to write.

    Attributes:
        shards: The training and validation rows.
        per_shard: Rows per shard and step.
        epochs: Epochs to run at most.
        steps: Steps to run at most, or ``None`` for whole epochs.
        patience: Epochs without improvement before stopping, or ``None``.
        shuffle_key: Epoch ``e`` shuffles with ``fold_in(shuffle_key, e)``.
        step: ``step(state, x, c, stop)`` returns the new parameters and optimiser
            state, the loss, and whether any process asked to stop.
        evaluate: Validation NLL of parameters, or ``None`` without validation rows.
        batch_sharding: How a batch lies over the devices, or ``None`` on one.
        devices: Devices along the batch's axis.
        checkpoint: Where the state is written, or ``None``.
        checkpoint_every: Steps between writes, or ``None``.
        settings: What the state is valid for, stored with it.
        model: The model trained, described in the checkpoint.
        rest: The model's variables other than parameters.
        progress: Whether to show a progress bar (on process 0).
    """

    shards: Shards
    per_shard: int
    epochs: int
    steps: int | None
    patience: int | None
    shuffle_key: jax.Array
    step: Callable
    evaluate: Callable | None
    batch_sharding: object
    devices: int
    checkpoint: object
    checkpoint_every: int | None
    settings: dict
    model: object
    rest: object
    progress: bool

    def count(self, epoch: int) -> int:
        """Steps of epoch ``epoch``: whole epochs but the last under a step budget."""
        per_epoch = self.shards.steps_per_epoch(self.per_shard)
        return per_epoch if self.steps is None else min(per_epoch, self.steps - epoch * per_epoch)

    def _finished(self, state: State, bar) -> bool:
        waited = self.patience is not None and self.evaluate and state.waited >= self.patience
        if waited:
            state.history.stopped = "early stopping"
            if not bar.disable:  # the bar ends short of its total: say why
                bar.write(
                    f"early stopping after epoch {state.epoch - 1}: no validation improvement "
                    f"in {self.patience} epochs; keeping the parameters of epoch "
                    f"{state.history.best_epoch}"
                )
        return bool(waited) or state.epoch >= self.epochs

    def _end_epoch(self, state: State, bar) -> bool:
        """Validation and early-stopping state at the end of an epoch; False to stop."""
        values = np.array([to_host(loss) for loss in state.losses], float_dtype(state.params))
        loss = float(values.mean(dtype=np.float64))
        if not math.isfinite(loss):
            kept = state.epoch - 1 if self.evaluate is None else state.history.best_epoch
            state.history.stopped = (
                f"non-finite training loss at epoch {state.epoch}: stopped, keeping the "
                f"parameters of epoch {kept}"
            )
            if jax.process_index() == 0:
                warnings.warn(state.history.stopped, RuntimeWarning, stacklevel=4)
            return False
        state.history.steps = state.step
        state.history.train_loss.append(loss)
        postfix = {"loss": f"{loss:.4f}"}
        if self.evaluate is not None:
            nll = float(to_host(self.evaluate(state.params)))
            state.history.val_nll.append(nll)
            postfix["val_nll"] = f"{nll:.4f}"
            if nll < state.best:
                state.best, state.best_params, state.waited = nll, _copy(state.params), 0
                state.history.best_epoch = state.epoch
            else:
                state.waited += 1
        else:
            state.best_params, state.history.best_epoch = _copy(state.params), state.epoch
        state.epoch, state.position, state.losses = state.epoch + 1, 0, []
        bar.update(1)
        bar.set_postfix(postfix)
        return True

    def _save(self, state: State) -> None:
        if jax.process_index() == 0:
            state.save(self.checkpoint, self.rest, self.settings, self.model)

    def _global(self, local, rows: int):
        return None if local is None else global_array(local, self.batch_sharding, rows)

    def run(self, state: State) -> History:
        """Steps until the budget is spent or early stopping; returns the ``History``.

        Raises:
            Interrupted: After SIGINT or SIGTERM, once the state is in ``checkpoint``.
        """
        shown = self.progress and jax.process_index() == 0
        rows = self.per_shard * self.shards.count
        flags = self.devices // jax.process_count()
        flags = [self._global(np.full(flags, value), self.devices) for value in (False, True)]
        counts = dict(total=self.epochs, initial=state.epoch, unit="epoch")
        # the bar is closed on any exit, an interrupt too, so that what follows starts a
        # new line; signals are caught before it shows
        with (
            _StopRequests(self.checkpoint is not None) as stop,
            tqdm(**counts, disable=not shown, dynamic_ncols=True) as bar,
        ):
            orders, asked = None, None
            while not self._finished(state, bar):
                # An epoch is closed after its last step's state is written, so that a
                # run resumed from it with a larger step budget goes on with the epoch.
                if state.position == self.count(state.epoch):
                    orders = None
                    if not self._end_epoch(state, bar):
                        break
                    continue
                if orders is None:
                    orders = self.shards.permutations(
                        jax.random.fold_in(self.shuffle_key, state.epoch)
                    )
                x, c = self.shards.batch(orders, state.position, self.per_shard)
                state.params, state.opt_state, loss, asking = self.step(
                    state, self._global(x, rows), self._global(c, rows), flags[stop.requested]
                )
                state.losses.append(loss)
                state.position, state.step = state.position + 1, state.step + 1
                # the previous step's answer: every process stops after the same step
                stopping, asked = asked is not None and bool(to_host(asked)), asking
                if stopping:
                    self._save(state)
                    raise Interrupted(self.checkpoint, state.step)
                if self.checkpoint_every and state.step % self.checkpoint_every == 0:
                    self._save(state)
        return state.history
