"""Maximum-likelihood training: ``fit`` a flow to data with early stopping."""

from __future__ import annotations

import dataclasses
import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from tqdm.auto import tqdm

from maf_jax.data import DataError, check_rows, split
from maf_jax.standardized import Standardized

__all__ = ["History", "fit", "log_probs", "mean_log_prob"]


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


def _nll(model_def, params, rest, x, c):
    return -nnx.merge(model_def, params, rest)(c).log_prob(x)


def log_probs(model, data, context=None, batch_size: int = 4096) -> np.ndarray:
    """The log-likelihood of every row of ``data`` in nats, ``(n,)``, in jitted batches.

    Args:
        model: A flow, called as ``model(c)``.
        data: Array ``(n, features)``.
        context: Array ``(n, context)`` or ``None``.
        batch_size: Rows per jitted evaluation.
    """
    graphdef, state = nnx.split(model)

    @jax.jit
    def log_prob(state, x, c):
        return nnx.merge(graphdef, state)(c).log_prob(x)

    out = []
    for start in range(0, len(data), batch_size):
        c = None if context is None else context[start : start + batch_size]
        out.append(np.asarray(log_prob(state, data[start : start + batch_size], c)))
    return np.concatenate(out).astype(np.float64) if out else np.zeros(0)


def mean_log_prob(model, data, context=None, batch_size: int = 4096) -> tuple[float, float]:
    """Mean log-likelihood of the rows of ``data`` in nats, and its standard error.

    The standard error is NaN for a single row. Arguments as ``log_probs``.
    """
    values = log_probs(model, data, context, batch_size)
    stderr = values.std(ddof=1) / math.sqrt(len(values)) if len(values) > 1 else math.nan
    return float(values.mean()), float(stderr)


def _sharding(mesh, batch: int):
    """The function that lays a batch out over ``mesh``'s first axis (identity without)."""
    if mesh is None:
        return lambda a: a
    axis = mesh.axis_names[0]
    if batch % mesh.shape[axis]:
        raise ValueError(
            f"batch_size {batch} must be a multiple of the {mesh.shape[axis]} devices of "
            f"mesh axis {axis!r}"
        )
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(axis))
    return lambda a: jax.lax.with_sharding_constraint(a, sharding)


def fit(
    flow: nnx.Module,
    data,
    *,
    key: jax.Array,
    context=None,
    batch_size: int = 256,
    epochs: int | None = None,
    steps: int | None = None,
    optimizer: optax.GradientTransformation | None = None,
    validation: float = 0.1,
    patience: int | None = 10,
    standardize: bool = True,
    progress: bool = True,
    mesh: jax.sharding.Mesh | None = None,
) -> tuple[nnx.Module, History]:
    """Fits ``flow`` to ``data`` by maximum likelihood with one jitted train step.

    Rows are shuffled and a ``validation`` fraction held out; after every epoch
    the validation NLL is measured, the best parameters are kept and training
    stops after ``patience`` epochs without improvement. A non-finite loss stops
    training with a warning and keeps the last good parameters.

    Args:
        flow: The flow, e.g. ``MAF(features, context)``; trained in place.
        data: Array ``(n, features)``.
        key: PRNG key for the split and the shuffling.
        context: Array ``(n, context)`` for a conditional flow, else ``None``.
        batch_size: Rows per step.
        epochs: Passes over the training rows (default 20 when ``steps`` is not
            given).
        steps: Optimiser steps, instead of ``epochs``.
        optimizer: An optax transformation; Adam with learning rate 1e-3 if
            ``None``.
        validation: Fraction of rows held out, in ``[0, 1)``.
        patience: Epochs without validation improvement before stopping; ``None``
            never stops early.
        standardize: Whether to fit on standardised data, the statistics being
            stored in the returned ``Standardized`` model.
        progress: Whether to show a progress bar.
        mesh: Data-parallel training over the devices of this mesh: each step's
            batch is sharded along the mesh's first axis, parameters and optimiser
            state are replicated, and XLA adds the gradients' all-reduce; one
            compiled step. ``batch_size`` must be a multiple of that axis' size.
            The result equals single-device training up to the order of float sums.

    Returns:
        The trained model (``Standardized(flow, ...)`` when ``standardize``) and the
        ``History``.
    """
    data = check_rows(data, "data", flow.features)
    if flow.context and context is None:
        raise DataError(f"the flow is conditional: give a context of shape (rows, {flow.context})")
    if context is not None:
        if not flow.context:
            raise DataError("the flow is unconditional (context=0) but a context was given")
        context = check_rows(context, "context", flow.context)
        if len(context) != len(data):
            raise DataError(
                f"context has {len(context)} rows but data has {len(data)}: they must match"
            )
    if epochs is not None and steps is not None:
        raise ValueError("give epochs or steps, not both")
    if not 0 <= validation < 1:
        raise ValueError(f"validation must be a fraction in [0, 1), got {validation}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size}")
    if mesh is not None:  # the batch's layout is set, XLA places the rest: Auto axes
        auto = (jax.sharding.AxisType.Auto,) * len(mesh.axis_names)
        mesh = jax.sharding.Mesh(mesh.devices, mesh.axis_names, axis_types=auto)
    shard = _sharding(mesh, min(batch_size, len(data)))

    split_key, key = jax.random.split(key)
    train, val = split(len(data), (1 - validation, validation), split_key)

    def pick(a, rows):
        return None if a is None else jnp.asarray(a[rows], jnp.float32)

    x_train, c_train, x_val, c_val = (
        pick(data, train),
        pick(context, train),
        pick(data, val),
        pick(context, val),
    )
    model = flow
    if standardize and not isinstance(flow, Standardized):
        model = Standardized.from_data(
            flow, data[train], None if context is None else context[train]
        )

    optimizer = optimizer or optax.adam(1e-3)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    opt_state = optimizer.init(params)
    if mesh is not None:
        replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
        params, opt_state = jax.device_put((params, opt_state), replicated)
    batch = min(batch_size, len(train))
    per_epoch = len(train) // batch
    if steps is not None:
        epochs = math.ceil(steps / per_epoch)
    epochs = 20 if epochs is None else epochs

    @jax.jit
    def evaluate(params):
        return _nll(graphdef, params, rest, x_val, c_val).mean()

    @jax.jit
    def run(params, opt_state, rows):
        def step(carry, rows):
            params, opt_state = carry
            x, c = shard(x_train[rows]), None if c_train is None else shard(c_train[rows])
            loss, grads = jax.value_and_grad(lambda p: _nll(graphdef, p, rest, x, c).mean())(params)
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), loss

        (params, opt_state), losses = jax.lax.scan(step, (params, opt_state), rows)
        return params, opt_state, losses

    history, best, best_params, waited = History(), math.inf, params, 0
    # closed on any exit, an interrupt too, so that what follows starts a new line
    with tqdm(range(epochs), disable=not progress, unit="epoch", dynamic_ncols=True) as bar:
        for epoch in bar:
            key, shuffle = jax.random.split(key)
            count = per_epoch if steps is None else min(per_epoch, steps - history.steps)
            rows = jax.random.permutation(shuffle, len(train))[: count * batch].reshape(
                count, batch
            )
            new_params, new_state, losses = run(params, opt_state, rows)
            loss = float(losses.mean())
            if not math.isfinite(loss):
                history.stopped = (
                    f"non-finite training loss at epoch {epoch}: stopped, keeping the "
                    f"parameters of epoch {epoch - 1 if validation == 0 else history.best_epoch}"
                )
                warnings.warn(history.stopped, RuntimeWarning, stacklevel=2)
                break
            params, opt_state = new_params, new_state
            history.steps += count
            history.train_loss.append(loss)
            postfix = {"loss": f"{loss:.4f}"}
            if len(val):
                nll = float(evaluate(params))
                history.val_nll.append(nll)
                postfix["val_nll"] = f"{nll:.4f}"
                if nll < best:
                    best, best_params, history.best_epoch, waited = nll, params, epoch, 0
                else:
                    waited += 1
            else:
                best_params, history.best_epoch = params, epoch
            bar.set_postfix(postfix)
            if patience is not None and len(val) and waited >= patience:
                history.stopped = "early stopping"
                if progress:  # the bar ends short of its total: say why
                    bar.write(
                        f"early stopping after epoch {epoch}: no validation improvement in "
                        f"{patience} epochs; keeping the parameters of epoch {history.best_epoch}"
                    )
                break
    nnx.update(model, best_params)
    return model, history
