"""zuko files: a zuko flow crosses to a JAX process that never loads torch, and back."""

import importlib.util
import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import HERE, scramble
from flax import nnx

import maf_jax
from maf_jax.interop import ZukoFileError, load_zuko, save_zuko

# find_spec, not importorskip: this process must never import torch
pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("zuko") is None,
    reason="the torch side needs: pip install -e '.[interop]'",
)


def torch_side(command: str, folder) -> dict:
    """Runs tests/zuko_checks.py in a process of its own; its JSON line."""
    result = subprocess.run(
        [sys.executable, str(HERE / "zuko_checks.py"), command, str(folder)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["jax"] is False  # the torch process never loaded JAX
    return out


def as_jax(values, name):
    return jnp.asarray(values[name]) if name in values else None


def assert_same_function(values, model):
    c = as_jax(values, "c")
    log_prob = model(c).log_prob(jnp.asarray(values["x"]))
    samples = model(c).transform.inverse(jnp.asarray(values["noise"]))
    np.testing.assert_allclose(log_prob, values["log_prob"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(samples, values["samples"], rtol=1e-5, atol=1e-5)
    assert np.ptp(values["log_prob"]) > 0.5  # a flow whose log_prob depends on x


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    folder = tmp_path_factory.mktemp("zuko")
    return folder, torch_side("export", folder)["flows"]


def test_zuko_flows_load_without_torch_with_the_same_density_and_samples(exported):
    folder, names = exported
    assert len(names) == 3
    for name in names:
        model = load_zuko(folder / f"{name}.zuko.npz")
        assert type(model) is (maf_jax.NSF if name.startswith("nsf") else maf_jax.MAF)
        assert_same_function(np.load(folder / f"{name}.values.npz"), model)
    assert "torch" not in sys.modules


# name: (maf_jax constructor, features, context, kwargs)
NATIVE = {
    "maf_passes2": (maf_jax.MAF, 4, 2, dict(transforms=2, passes=2, hidden_features=(10, 6))),
    "nsf_residual": (
        maf_jax.NSF,
        3,
        0,
        dict(bins=5, bound=3.0, residual=True, hidden_features=(8, 8), activation=jax.nn.elu),
    ),
}


def test_maf_jax_models_load_in_zuko_with_the_same_density_and_samples(tmp_path):
    models = {}
    for name, (cls, features, context, kwargs) in NATIVE.items():
        models[name] = scramble(cls(features, context, **kwargs, rngs=nnx.Rngs(0)), seed=1)
        save_zuko(models[name], tmp_path / f"{name}.maf.npz")
    assert sorted(torch_side("import", tmp_path)["flows"]) == sorted(NATIVE)
    for name, model in models.items():
        assert_same_function(np.load(tmp_path / f"{name}.values.npz"), model)
    assert "torch" not in sys.modules


def rewrite(source, target, change):
    with np.load(source) as f:
        arrays = dict(f)
    config = json.loads(arrays["__zuko__"].tobytes())
    change(arrays, config)
    arrays["__zuko__"] = np.frombuffer(json.dumps(config).encode(), np.uint8)
    np.savez(target, **arrays)


def set_config(**changes):
    return lambda arrays, config: config.update(changes)


@pytest.mark.parametrize(
    "change,match",
    [
        (set_config(format="other"), "not a zuko file of format"),
        (set_config(transforms=10**12), "holds 7 arrays where .* implies 1000000000000 transforms"),
        (set_config(hidden_features=[5]), "0/0/weight has shape \\(6, 4\\)"),
        (set_config(features=1), "features must be an integer >= 2"),
        (set_config(univariate={"name": "spline"}), "expected MAF with"),
        (set_config(passes=None), "without passes, adjacency must be"),
        (set_config(extra=1), "unknown keys \\['extra'\\]"),
        (lambda a, c: a.pop("0/order"), "holds 6 arrays"),
        (lambda a, c: a.update({"0/1/bias": a["0/1/bias"] * np.nan}), "0/1/bias holds NaN"),
        (lambda a, c: a.update({"0/0/mask": a["0/0/mask"].astype(np.float64)}), "0/0/mask has"),
        (lambda a, c: a.update({"0/order": np.array([0, 0, 5])}), "not a zuko rank vector"),
        (set_config(activation="softplus"), "activation 'softplus' has no maf_jax counterpart"),
        (
            lambda a, c: a.update({"0/0/mask": np.ones_like(a["0/0/mask"])}),
            "follow no degrees that maf_jax can express",
        ),
    ],
)
def test_a_tampered_zuko_file_is_refused(tmp_path, change, match):
    model = maf_jax.MAF(3, 1, transforms=1, hidden_features=(6,), rngs=nnx.Rngs(0))
    path = save_zuko(model, tmp_path / "m.npz")
    rewrite(path, tmp_path / "bad.npz", change)
    with pytest.raises(ValueError, match=match):
        load_zuko(tmp_path / "bad.npz")
    with pytest.raises(ZukoFileError, match="no such zuko file"):
        load_zuko(tmp_path / "none.npz")


@pytest.mark.parametrize(
    "build,match",
    [
        (lambda: maf_jax.MAF(2, bounds=[(0, 1), (None, 0)], rngs=nnx.Rngs(0)), "with bounds"),
        (lambda: maf_jax.MAFMoG(2, components=2, rngs=nnx.Rngs(0)), "a MAF MoG has no zuko"),
        (lambda: maf_jax.MAF(2, batch_norm=True, rngs=nnx.Rngs(0)), "batch normalisation"),
    ],
)
def test_what_zuko_cannot_express_is_refused_and_nothing_is_written(tmp_path, build, match):
    with pytest.raises(ValueError, match=match):
        save_zuko(build(), tmp_path / "f.zuko")
    assert list(tmp_path.iterdir()) == []
