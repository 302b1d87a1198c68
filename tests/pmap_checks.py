"""Data-parallel training on 4 virtual CPU devices, run by test_parallel.py.

XLA_FLAGS=--xla_force_host_platform_device_count=4 is set for this process only.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
from check_runner import report
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from maf_jax import MAF

DEVICES = 4
flow = MAF(3, context=2, transforms=2, hidden_features=(16, 16), rngs=nnx.Rngs(0))
graphdef, params, rest = nnx.split(flow, nnx.Param, ...)
optimizer = optax.adam(1e-2)
x = jax.random.normal(jax.random.key(1), (64, 3))
c = jax.random.normal(jax.random.key(2), (64, 2))


def loss(params, x, c):
    return -nnx.merge(graphdef, params, rest)(c).log_prob(x).mean()


def apply(params, state, grads):
    updates, state = optimizer.update(grads, state, params)
    return optax.apply_updates(params, updates), state


@jax.jit
def single_step(params, state, x, c):
    return apply(params, state, jax.grad(loss)(params, x, c))


def pmap_step(params, state, x, c):
    grads = jax.lax.pmean(jax.grad(loss)(params, x, c), axis_name="devices")
    return apply(params, state, grads)


def train(step, params, state, x, c, steps=3):
    for _ in range(steps):
        params, state = step(params, state, x, c)
    return params


def reference():
    return train(single_step, params, optimizer.init(params), x, c)


def assert_close(a, b):
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=2e-5, atol=2e-6)


def check_devices():
    assert jax.device_count() == DEVICES, jax.devices()


def check_pmap():
    def replicate(tree):
        return jax.tree.map(lambda a: jnp.stack([a] * DEVICES), tree)

    def shard(a):
        return a.reshape(DEVICES, -1, *a.shape[1:])

    step = jax.pmap(pmap_step, axis_name="devices")
    replicated = train(
        step, replicate(params), replicate(optimizer.init(params)), shard(x), shard(c)
    )
    for i in range(DEVICES):
        assert_close(jax.tree.map(lambda a, i=i: a[i], replicated), reference())
    moved = jax.tree.map(
        lambda a, b: np.abs(np.asarray(a[0]) - np.asarray(b)).max(), replicated, params
    )
    assert max(jax.tree.leaves(moved)) > 1e-3  # training changed the parameters


def check_sharded_jit():
    mesh = jax.make_mesh((DEVICES,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    batch = NamedSharding(mesh, PartitionSpec("data"))
    xs, cs = jax.device_put(x, batch), jax.device_put(c, batch)
    sharded = train(single_step, params, optimizer.init(params), xs, cs)
    assert_close(sharded, reference())


def check_sharded_fit():
    """``fit(mesh=...)`` over 4 devices equals ``fit`` on one."""
    from maf_jax import fit

    data = np.asarray(x) * 2 + 1
    mesh = jax.make_mesh((DEVICES,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    runs = []
    for m in (None, mesh):
        model = MAF(3, context=2, transforms=2, hidden_features=(16, 16), rngs=nnx.Rngs(0))
        trained, history = fit(
            model, data, context=np.asarray(c), key=jax.random.key(3), batch_size=16,
            steps=6, validation=0.25, progress=False, mesh=m,
        )  # fmt: skip
        assert history.steps == 6
        runs.append(nnx.state(trained, nnx.Param))
    leaves = [jax.tree.leaves(r) for r in runs]
    assert any(len(leaf.sharding.device_set) == DEVICES for leaf in leaves[1])  # replicated
    for a, b in zip(*leaves, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)
    try:
        fit(MAF(3, rngs=nnx.Rngs(0)), data, key=jax.random.key(0), batch_size=10, mesh=mesh)
    except ValueError as error:
        assert "multiple of the 4 devices" in str(error), error
    else:
        raise AssertionError("a batch of 10 over 4 devices was accepted")


def check_batch_norm_sharded_fit():
    """With batch norms, the batch statistics of a sharded step are the whole batch's."""
    from maf_jax import fit

    data = np.asarray(x) * 2 + 1
    mesh = jax.make_mesh((DEVICES,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    runs = []
    for m in (None, mesh):
        model = MAF(3, transforms=2, hidden_features=(16,), batch_norm=True, rngs=nnx.Rngs(0))
        # SGD: Adam would blow float noise up to a full step where a gradient is 0
        # (the last norm's shift: a batch-normalised output's mean is that shift)
        trained, _ = fit(
            model, data, key=jax.random.key(3), batch_size=16, steps=6, validation=0.25,
            progress=False, mesh=m, optimizer=optax.sgd(1e-2),
        )  # fmt: skip
        runs.append(nnx.state(trained, nnx.Any(nnx.Param, nnx.BatchStat)))
    assert not np.allclose(runs[0]["flow"]["norms"]["stacked"]["var"][...], 1.0)
    for a, b in zip(*(jax.tree.leaves(r) for r in runs), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)


if __name__ == "__main__":
    report(
        {
            "devices": check_devices,
            "pmap": check_pmap,
            "sharded_jit": check_sharded_jit,
            "sharded_fit": check_sharded_fit,
            "batch_norm_sharded_fit": check_batch_norm_sharded_fit,
        }
    )
