"""Maximum-likelihood training: ``fit`` a flow to data with early stopping."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from tqdm.auto import tqdm

from maf_jax.checkpoint.training import path_name
from maf_jax.core._pytree import float_dtype
from maf_jax.data.loaders import DataError, check_rows
from maf_jax.flows.standardized import Standardized, unwrapped
from maf_jax.train.batches import make_shards
from maf_jax.train.distributed import global_array, replicate, to_host
from maf_jax.train.loop import History, Interrupted, Loop, State
from maf_jax.train.statistics import STATISTICS, set_training_statistics

__all__ = [
    "History",
    "Interrupted",
    "fit",
    "log_probs",
    "mean_and_standard_error",
    "mean_log_prob",
]


def _nll(model_def, params, rest, x, c):
    return -nnx.merge(model_def, params, rest)(c).log_prob(x)


def _flat(tree):
    """``tree``'s leaves by name, and the function that rebuilds ``tree`` from such a dict.

    A flat dict crosses ``jax.jit`` faster than NNX state, and names the arrays of a
    training checkpoint.
    """
    leaves, treedef = jax.tree_util.tree_flatten_with_path(tree)
    names = [path_name(path) for path, _ in leaves]
    flat = dict(zip(names, (leaf for _, leaf in leaves)))
    return flat, lambda flat: jax.tree.unflatten(treedef, [flat[name] for name in names])


def log_probs(
    model, data, context=None, batch_size: int = 4096, progress: bool = False
) -> np.ndarray:
    """The log-likelihood of every row of ``data`` in nats, ``(n,)``, in jitted batches.

    Args:
        model: A flow, called as ``model(c)``.
        data: Array ``(n, features)``.
        context: Array ``(n, context)`` or ``None``.
        batch_size: Rows per jitted evaluation.
        progress: Whether to show a progress bar on stderr, when there is more than
            one batch.
    """
    graphdef, state = nnx.split(model)

    @jax.jit
    def log_prob(state, x, c):
        return nnx.merge(graphdef, state)(c).log_prob(x)

    out = []
    shown = progress and len(data) > batch_size
    with tqdm(
        total=len(data), unit="row", unit_scale=True, disable=not shown, dynamic_ncols=True
    ) as bar:
        for start in range(0, len(data), batch_size):
            c = None if context is None else context[start : start + batch_size]
            out.append(np.asarray(log_prob(state, data[start : start + batch_size], c)))
            bar.update(len(out[-1]))
    return np.concatenate(out).astype(np.float64) if out else np.zeros(0)


def mean_and_standard_error(values) -> tuple[float, float]:
    """The mean of ``values`` and its standard error (NaN for a single value)."""
    values = np.asarray(values, np.float64)
    stderr = values.std(ddof=1) / math.sqrt(len(values)) if len(values) > 1 else math.nan
    return float(values.mean()), float(stderr)


def mean_log_prob(model, data, context=None, batch_size: int = 4096) -> tuple[float, float]:
    """Mean log-likelihood of the rows of ``data`` in nats, and its standard error.

    The standard error is NaN for a single row. Arguments as ``log_probs``.
    """
    values = log_probs(model, data, context, batch_size)
    return mean_and_standard_error(values)


def _support(model):
    """The support of ``model``'s flow, or ``None`` for the real line."""
    return getattr(unwrapped(model), "support", None)


def _check_inputs(flow, data, context, dtype):
    data = check_rows(data, "data", flow.features, dtype)
    support = _support(flow)
    if support is not None:
        try:
            support.check(data, "data", dtype)
        except ValueError as error:
            raise DataError(str(error)) from None
    if flow.context and context is None:
        raise DataError(f"the flow is conditional: give a context of shape (rows, {flow.context})")
    if context is not None:
        if not flow.context:
            raise DataError("the flow is unconditional (context=0) but a context was given")
        context = check_rows(context, "context", flow.context, dtype)
        if len(context) != len(data):
            raise DataError(
                f"context has {len(context)} rows but data has {len(data)}: they must match"
            )
    return data, context


def _mesh(mesh):
    """``mesh`` with Auto axes (the batch's layout is set, XLA places the rest), checked.

    Returns the mesh (one over every device under ``jax.distributed`` if ``None``),
    its first axis' size and this process's position along it, in blocks.
    """
    processes = jax.process_count()
    if mesh is None and processes > 1:
        mesh = jax.make_mesh((jax.device_count(),), ("data",))
    if mesh is None:
        return None, 1, 0
    auto = (jax.sharding.AxisType.Auto,) * len(mesh.axis_names)
    mesh = jax.sharding.Mesh(mesh.devices, mesh.axis_names, axis_types=auto)
    devices = mesh.devices.reshape(mesh.devices.shape[0], -1)
    owners = [{d.process_index for d in row} for row in devices]
    expected = np.repeat(np.arange(processes), len(devices) // processes)
    if len(devices) % processes or owners != [{p} for p in expected]:
        raise ValueError(
            "mesh: under jax.distributed its first axis must list the devices of process 0, "
            "then of process 1, and so on, the same number each (jax.make_mesh over "
            "jax.devices() does)"
        )
    return mesh, len(devices), jax.process_index()


def _batch(batch_size: int, shards: int, devices: int, train: tuple[int, ...]) -> int:
    """Rows per shard and step: ``batch_size / shards``, fewer if a shard has fewer rows."""
    for name, count in (("shards", shards), ("devices", devices)):
        if batch_size % count:
            raise ValueError(
                f"batch_size {batch_size} must be a multiple of the {count} {name}"
                + (" of the mesh's first axis" if name == "devices" else "")
            )
    per_shard = min(batch_size // shards, min(train))
    while per_shard and (per_shard * shards) % devices:
        per_shard -= 1
    if not per_shard:
        raise DataError(f"{min(train)} training rows per shard are too few for {devices} devices")
    return per_shard


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
    shards: int | None = None,
    checkpoint=None,
    checkpoint_every: int | None = None,
    resume=None,
    batch_norm_statistics: str = "running",
) -> tuple[nnx.Module, History]:
    """Fits ``flow`` to ``data`` by maximum likelihood with one jitted train step.

    Rows are shuffled and a ``validation`` fraction held out; after every epoch
    the validation NLL is measured, the best parameters are kept and training
    stops after ``patience`` epochs without improvement. A non-finite loss stops
    training with a warning and keeps the last good parameters.

    Training can be stopped and resumed: with ``checkpoint``, its whole state
    (parameters, optimiser state, step, epoch, position in the data, RNG key,
    early-stopping state and history) is written there atomically every
    ``checkpoint_every`` steps and when SIGINT or SIGTERM arrives, after which
    ``Interrupted`` is raised; ``resume`` continues from such a file. A run
    stopped at any step and resumed ends with the parameters of a run never
    stopped (bit for bit on a CPU).

    Under ``jax.distributed`` every process calls ``fit`` with its own rows; each
    step's batch takes ``batch_size / processes`` rows from every process and is
    sharded over every device; only process 0 writes and shows progress.

    Args:
        flow: The flow, e.g. ``MAF(features, context)``; trained in place, in the
            dtype of its parameters: a float64 flow (``param_dtype=jnp.float64``
            under ``JAX_ENABLE_X64=1``) sees float64 data and statistics.
        data: Array ``(n, features)``: this process's rows; strictly inside the
            flow's ``bounds``, if it has some.
        key: PRNG key for the split and the shuffling.
        context: Array ``(n, context)`` for a conditional flow, else ``None``.
        batch_size: Rows per step, from all shards together.
        epochs: Passes over the training rows (default 20 when ``steps`` is not
            given).
        steps: Optimiser steps, instead of ``epochs``.
        optimizer: An optax transformation; Adam with learning rate 1e-3 if
            ``None``.
        validation: Fraction of rows held out, in ``[0, 1)``.
        patience: Epochs without validation improvement before stopping; ``None``
            never stops early.
        standardize: Whether to fit on standardised data, the statistics being
            stored in the returned ``Standardized`` model (for a flow with
            ``bounds``, carried to the real line by ``Support.linearized``).
        progress: Whether to show a progress bar.
        mesh: Data-parallel training over the devices of this mesh: each step's
            batch is sharded along the mesh's first axis, parameters and optimiser
            state are replicated, and XLA adds the gradients' all-reduce; one
            compiled step. ``batch_size`` must be a multiple of that axis' size.
            The result equals single-device training up to the order of float sums.
            Under ``jax.distributed``, every device of every process by default.
        shards: The rows are read as this many contiguous shards, each step taking
            ``batch_size / shards`` rows from each (``maf_jax.train.batches``): a process
            with ``shards=S`` repeats a run of ``S`` processes. The process count
            under ``jax.distributed`` (and only that), else 1 by default.
        checkpoint: Where to write the training state (``.npz``), or ``None``.
        checkpoint_every: Steps between writes of ``checkpoint``; ``None`` writes
            it only when interrupted.
        resume: A training checkpoint to continue from, written by a run with the
            same data, key, ``batch_size``, ``shards``, ``validation`` and model.
        batch_norm_statistics: For a flow with ``batch_norm=True``, what the returned
            model normalises with: ``"running"``, the averages moved at every step
            (validation uses them), or ``"data"``, the statistics of every training
            row set after training, one normalisation after the other (the paper's
            choice; ``maf_jax.train.statistics``).

    Returns:
        The trained model (``Standardized(flow, ...)`` when ``standardize``) and the
        ``History``.

    Raises:
        Interrupted: After SIGINT or SIGTERM, once the state is in ``checkpoint``.
        maf_jax.checkpoint.CheckpointError: For a ``resume`` file that does not
            match this run.
    """
    # a float64 flow trains in float64 (data, statistics, losses), any other in float32
    dtype = float_dtype(nnx.state(flow, nnx.Param))
    data, context = _check_inputs(flow, data, context, dtype)
    if epochs is not None and steps is not None:
        raise ValueError("give epochs or steps, not both")
    if not 0 <= validation < 1:
        raise ValueError(f"validation must be a fraction in [0, 1), got {validation}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size}")
    if batch_norm_statistics not in STATISTICS:
        raise ValueError(
            f"batch_norm_statistics must be one of {STATISTICS}, got {batch_norm_statistics!r}"
        )
    if checkpoint_every is not None and (checkpoint is None or checkpoint_every < 1):
        raise ValueError("checkpoint_every must be a positive integer, with a checkpoint path")
    processes = jax.process_count()
    if shards is not None and (shards < 1 or (processes > 1 and shards != processes)):
        raise ValueError(
            f"shards must be a positive integer (the {processes} processes under "
            f"jax.distributed), got {shards}"
        )
    shards = shards or processes
    mesh, devices, first = _mesh(mesh)

    split_key, shuffle_key = jax.random.split(key)
    data_shards = make_shards(data, context, split_key, validation, shards, first, dtype)
    per_shard = _batch(batch_size, shards, devices, data_shards.train)
    per_epoch = data_shards.steps_per_epoch(per_shard)
    if steps is not None:
        epochs = math.ceil(steps / per_epoch)
    epochs = 20 if epochs is None else epochs

    model = flow
    if standardize and not isinstance(flow, Standardized):
        stats = data_shards.statistics()
        support = _support(flow)
        if support is not None:  # carried to the real line, where the flow standardises
            stats = support.linearized(*(jnp.asarray(s, dtype) for s in stats))
        context_stats = data_shards.statistics(context=True) if context is not None else ()
        model = Standardized(flow, *stats, *context_stats)
    optimizer = optimizer or optax.adam(1e-3)
    # batch normalisations: batch statistics in the step, running averages in
    # validation; the averages travel with the parameters (the optimiser leaves them
    # at rest: they have no gradient) and each step moves them
    norms = bool(jax.tree.leaves(nnx.state(model, nnx.BatchStat)))
    if batch_norm_statistics == "data" and not norms:
        raise ValueError(
            "batch_norm_statistics='data' sets batch normalisations: build the flow with "
            "batch_norm=True"
        )
    model.eval()
    eval_def = nnx.graphdef(model)
    model.train()
    graphdef, params, rest = nnx.split(model, nnx.Any(nnx.Param, nnx.BatchStat), ...)
    model.eval()
    params, as_params = _flat(params)
    rest, as_rest = _flat(rest)
    state = State.start(params, optimizer.init(params))
    settings = dict(
        batch_size=per_shard * shards,
        shards=shards,
        validation=validation,
        train_rows=list(data_shards.train),
        validation_rows=list(data_shards.val),
        digests=list(data_shards.digests),
        standardize=standardize,
        key=np.asarray(jax.random.key_data(key)).ravel().tolist(),
    )
    if resume is not None:
        state, rest = State.read(resume, state, rest, model, settings, optimizer, per_epoch)
        if steps is not None and state.step > steps:
            raise ValueError(
                f"{resume} holds a run at step {state.step}, past this run's steps={steps}; "
                f"resume with steps >= {state.step}"
            )
        nnx.update(model, as_rest(rest))

    batch_sharding = replicated = None
    if mesh is not None:
        spec = jax.sharding.PartitionSpec
        batch_sharding = jax.sharding.NamedSharding(mesh, spec(mesh.axis_names[0]))
        replicated = jax.sharding.NamedSharding(mesh, spec())
    state.params, state.opt_state, state.best_params = replicate(
        (state.params, state.opt_state, state.best_params), replicated
    )
    rest = replicate(rest, replicated)

    def nll(params, rest, x, c, graphdef=graphdef):
        return _nll(graphdef, as_params(params), as_rest(rest), x, c)

    # the parameters and optimiser state are donated: updated in their own buffers
    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def train_step(params, opt_state, rest, x, c, stop):
        loss, grads = jax.value_and_grad(lambda p: nll(p, rest, x, c).mean())(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        new = optax.apply_updates(params, updates)
        if norms:
            trained = nnx.merge(graphdef, as_params(params), as_rest(rest))
            trained.update_batch_norms(x, c)
            new = new | _flat(nnx.state(trained, nnx.BatchStat))[0]
        return new, opt_state, loss, jnp.any(stop)

    x_val, c_val, weights, val_rows = data_shards.validation(devices)

    @jax.jit
    def evaluate(params, rest, x, c, weights):
        return jnp.sum(weights * nll(params, rest, x, c, eval_def)) / jnp.sum(weights)

    val = [
        None if a is None else global_array(a, batch_sharding, val_rows)
        for a in (x_val, c_val, weights)
    ]
    loop = Loop(
        shards=data_shards,
        per_shard=per_shard,
        epochs=epochs,
        steps=steps,
        patience=patience,
        shuffle_key=shuffle_key,
        step=lambda s, x, c, stop: train_step(s.params, s.opt_state, rest, x, c, stop),
        evaluate=(lambda p: evaluate(p, rest, *val)) if sum(data_shards.val) else None,
        batch_sharding=batch_sharding,
        devices=devices,
        checkpoint=checkpoint,
        checkpoint_every=checkpoint_every,
        settings=settings,
        model=model,
        rest=rest,
        progress=progress,
    )
    history = loop.run(state)
    best = state.best_params
    if not all(leaf.is_fully_addressable for leaf in jax.tree.leaves(best)):
        best = jax.tree.map(lambda a: jnp.asarray(to_host(a)), best)
    nnx.update(model, as_params(best))
    if batch_norm_statistics == "data":
        set_training_statistics(model, data_shards)
    return model, history
