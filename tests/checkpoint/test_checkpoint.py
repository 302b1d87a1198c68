"""Checkpoints: exact round trip, atomic writes, refusal of corrupt or foreign files."""

import contextlib
import json
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import scramble, set_shares
from flax import nnx

from maf_jax import MAF, NSF, FullPass, Incremental, MAFMoG, RationalQuadraticSpline, checkpoint
from maf_jax.checkpoint.model import CheckpointError
from maf_jax.flows.standardized import Standardized


@pytest.fixture(scope="module")
def model():
    flow = scramble(
        MAF(
            3,
            context=2,
            transforms=3,
            randperm=True,
            hidden_features=(16, 8),
            activation=jax.nn.elu,
            passes=2,
            rngs=nnx.Rngs(0),
        )
    )
    return Standardized(flow, [1.0, -2.0, 0.5], [2.0, 0.5, 1.0], [0.0, 1.0], [1.0, 3.0])


def test_round_trip_gives_identical_log_prob_and_samples(model, tmp_path):
    path = checkpoint.save(tmp_path / "m.npz", model)
    loaded = checkpoint.load(path)
    x = jax.random.normal(jax.random.key(0), (7, 3))
    c = jax.random.normal(jax.random.key(1), (7, 2))
    np.testing.assert_array_equal(loaded(c).log_prob(x), model(c).log_prob(x))
    np.testing.assert_array_equal(
        loaded(c).sample(jax.random.key(2)), model(c).sample(jax.random.key(2))
    )
    assert [t.order[...].tolist() for t in loaded.flow.transforms.unstack()] == [
        t.order[...].tolist() for t in model.flow.transforms.unstack()
    ]
    assert loaded.flow.transforms.unstack()[0].layout == model.flow.transforms.unstack()[0].layout


def test_plain_maf_round_trip(tmp_path):
    flow = MAF(2, transforms=2, rngs=nnx.Rngs(3))
    loaded = checkpoint.load(checkpoint.save(tmp_path / "f.npz", flow))
    assert isinstance(loaded, MAF)
    np.testing.assert_array_equal(
        loaded().log_prob(jnp.ones((2, 2))), flow().log_prob(jnp.ones((2, 2)))
    )


def test_a_flow_over_a_graph_round_trips(tmp_path):
    adjacency = np.eye(4, dtype=bool)
    adjacency[2, 0] = adjacency[3, 2] = True
    flow = scramble(MAF(4, 1, transforms=2, adjacency=adjacency, rngs=nnx.Rngs(1)))
    loaded = checkpoint.load(checkpoint.save(tmp_path / "g.npz", flow))
    assert loaded.transforms.unstack()[0].layout == flow.transforms.unstack()[0].layout
    x, c = jax.random.normal(jax.random.key(0), (5, 4)), jnp.ones((5, 1))
    np.testing.assert_array_equal(loaded(c).log_prob(x), flow(c).log_prob(x))


def test_a_residual_flow_round_trips(tmp_path):
    hidden = (8, 8, 5)
    flow = NSF(3, 2, 2, passes=2, residual=True, hidden_features=hidden, rngs=nnx.Rngs(1))
    flow = scramble(flow)
    loaded = checkpoint.load(checkpoint.save(tmp_path / "r.npz", flow))
    assert loaded.transforms.unstack()[0].layout == flow.transforms.unstack()[0].layout
    assert loaded.transforms.unstack()[0].layout.residual
    x, c = jax.random.normal(jax.random.key(0), (5, 3)), jnp.ones((5, 2))
    np.testing.assert_array_equal(loaded(c).log_prob(x), flow(c).log_prob(x))
    np.testing.assert_array_equal(
        loaded(c).sample(jax.random.key(2)), flow(c).sample(jax.random.key(2))
    )


def test_nsf_round_trip(tmp_path):
    flow = scramble(NSF(3, context=2, transforms=2, bins=5, bound=4.0, rngs=nnx.Rngs(1)))
    loaded = checkpoint.load(checkpoint.save(tmp_path / "f.npz", flow))
    assert isinstance(loaded, NSF)
    assert loaded.transforms.unstack()[1].univariate == RationalQuadraticSpline(5, 4.0)
    x = jax.random.normal(jax.random.key(0), (7, 3))
    c = jax.random.normal(jax.random.key(1), (7, 2))
    np.testing.assert_array_equal(loaded(c).log_prob(x), flow(c).log_prob(x))
    np.testing.assert_array_equal(
        loaded(c).sample(jax.random.key(2)), flow(c).sample(jax.random.key(2))
    )


@pytest.mark.parametrize(
    "settings",
    [
        dict(precision="default", inverse="full_pass", unroll=0, derivative="autodiff"),
        dict(precision="high", inverse=Incremental(chunk=3, blocks=2, groups=1), unroll=4),
    ],
)
def test_settings_that_change_the_arithmetic_are_restored(tmp_path, settings):
    deprecated = settings.get("derivative") == "autodiff"
    with pytest.warns(DeprecationWarning) if deprecated else contextlib.nullcontext():
        flow = MAF(4, transforms=2, rngs=nnx.Rngs(3), **settings)
    path = checkpoint.save(tmp_path / "f.npz", flow)
    # a checkpoint of the deprecated derivative still loads, with the warning
    with pytest.warns(DeprecationWarning) if deprecated else contextlib.nullcontext():
        loaded = checkpoint.load(path)
    first, saved = loaded.transforms.unstack()[0], flow.transforms.unstack()[0]
    assert (first.precision, first.inverter, loaded.unroll, first.derivative) == (
        saved.precision,
        saved.inverter,
        flow.unroll,
        saved.derivative,
    )
    assert first.precision != jax.lax.Precision.HIGHEST  # not the defaults by chance


def test_checkpoints_without_settings_load_with_the_defaults(tmp_path):
    flow = MAF(2, transforms=2, inverse="full_pass", rngs=nnx.Rngs(3))
    path = checkpoint.save(tmp_path / "f.npz", flow)

    def older(arrays):  # what the first format wrote
        config = json.loads(arrays["__config__"].tobytes())
        for name in (
            "precision",
            "inverse",
            "unroll",
            "derivative",
            "univariate",
            "bounds",
            "base",
        ):
            del config[name]
        arrays["__config__"] = np.frombuffer(json.dumps(config).encode(), np.uint8)

    rewrite(path, tmp_path / "old.npz", older)
    loaded = checkpoint.load(tmp_path / "old.npz")
    t = loaded.transforms.unstack()[0]
    assert (t.precision, t.inverter, loaded.unroll) == (
        jax.lax.Precision.HIGHEST,
        Incremental(),
        10,
    )
    x = jnp.ones((3, 2))
    np.testing.assert_array_equal(loaded().log_prob(x), flow().log_prob(x))


@pytest.mark.parametrize("spline", [False, True])
def test_a_maf_mog_round_trips(tmp_path, spline):
    extra = {}
    if spline:
        extra = dict(
            univariate=RationalQuadraticSpline(4), shapes=RationalQuadraticSpline(4).shapes
        )
    flow = MAFMoG(
        3, context=2, transforms=2, components=4, hidden_features=(8,), rngs=nnx.Rngs(0), **extra
    )
    flow = scramble(flow)
    loaded = checkpoint.load(checkpoint.save(tmp_path / "m.npz", flow))
    assert isinstance(loaded, MAFMoG) and loaded.mixture.components == 4
    assert loaded.transforms.stacked.univariate == flow.transforms.stacked.univariate
    c = jax.random.normal(jax.random.key(0), (5, 2))
    x = flow(c).sample(jax.random.key(1))
    np.testing.assert_array_equal(loaded(c).log_prob(x), flow(c).log_prob(x))
    np.testing.assert_array_equal(
        loaded(c).sample(jax.random.key(2)), flow(c).sample(jax.random.key(2))
    )


def test_batch_norms_round_trip_and_load_evaluating(tmp_path):
    flow = scramble(MAF(3, context=1, transforms=2, batch_norm=True, rngs=nnx.Rngs(0)))
    x, c = jax.random.normal(jax.random.key(0), (32, 3)) * 2, jnp.ones((32, 1))
    flow.update_batch_norms(x, c)
    path = checkpoint.save(tmp_path / "m.npz", flow)
    loaded = checkpoint.load(path)
    assert loaded.norms.stacked.use_running_average  # a loaded model evaluates
    flow.eval()
    np.testing.assert_array_equal(loaded.norms.stacked.var[...], flow.norms.stacked.var[...])
    np.testing.assert_array_equal(loaded(c).log_prob(x), flow(c).log_prob(x))

    def negative(arrays):
        arrays["norms/stacked/var"] = -arrays["norms/stacked/var"]

    rewrite(path, tmp_path / "bad.npz", negative)
    with pytest.raises(CheckpointError, match="norms/stacked/var must be positive"):
        checkpoint.load(tmp_path / "bad.npz")


@pytest.mark.parametrize(
    "standardized,link",
    [(False, "linear"), (True, "probit"), (False, "logit"), (True, "learned")],
)
def test_bounds_are_stored_and_restored(tmp_path, standardized, link):
    bounds = [(0.0, 1.0), (None, 2.5), (-3.0, None), (None, None)]
    model = scramble(MAF(4, context=1, transforms=2, bounds=bounds, link=link, rngs=nnx.Rngs(0)))
    if link == "learned":  # tails as if trained: the first feature's take 0.3 of its width
        set_shares(model, [0.3, 0.1, 0.2, 0.4])
    if standardized:
        model = Standardized(model, [0.1, 0.2, 0.3, 0.4], [1.0, 2.0, 0.5, 3.0])
    loaded = checkpoint.load(checkpoint.save(tmp_path / "m.npz", model))
    flow = loaded.flow if standardized else loaded
    assert flow.support.lower == (0.0, -np.inf, -3.0, -np.inf)
    assert flow.support.upper == (1.0, 2.5, np.inf, np.inf)
    assert flow.support.link == link
    if link == "learned":
        np.testing.assert_allclose(flow.support.share[0], 0.3, rtol=1e-6)
    c = jnp.ones((5, 1))
    x = model(c).sample(jax.random.key(0))
    np.testing.assert_array_equal(loaded(c).log_prob(x), model(c).log_prob(x))
    np.testing.assert_array_equal(
        loaded(c).sample(jax.random.key(1)), model(c).sample(jax.random.key(1))
    )
    with np.load(tmp_path / "m.npz") as archive:
        config = json.loads(archive["__config__"].tobytes())
    assert config["bounds"] == [[0.0, 1.0], [None, 2.5], [-3.0, None], [None, None]]
    assert config["link"] == link


def test_bounded_files_written_before_the_probit_keep_the_logit(tmp_path):
    flow = scramble(MAF(2, transforms=2, bounds=(0, 1), link="logit", rngs=nnx.Rngs(0)))
    path = checkpoint.save(tmp_path / "f.npz", flow)

    def config(change):
        def rewrite_config(arrays):
            settings = json.loads(arrays["__config__"].tobytes())
            change(settings)
            arrays["__config__"] = np.frombuffer(json.dumps(settings).encode(), np.uint8)

        return rewrite_config

    rewrite(path, tmp_path / "old.npz", config(lambda settings: settings.pop("link")))
    loaded = checkpoint.load(tmp_path / "old.npz")
    assert loaded.support.link == "logit"
    x = jnp.array([[0.5, 1e-3], [0.999, 0.2]])
    np.testing.assert_array_equal(loaded().log_prob(x), flow().log_prob(x))
    rewrite(path, tmp_path / "bad.npz", config(lambda settings: settings.update(link="tanh")))
    expected = r"link must be one of \['learned', 'probit', 'linear', 'logit'\], got 'tanh'"
    with pytest.raises(CheckpointError, match=expected):
        checkpoint.load(tmp_path / "bad.npz")


def test_an_inverse_that_cannot_be_rebuilt_is_refused(tmp_path):
    @__import__("dataclasses").dataclass(frozen=True)
    class Custom:
        def __call__(self, t, y):
            return FullPass()(t, y)

    flow = MAF(2, transforms=1, inverse=Custom(), rngs=nnx.Rngs(0))
    with pytest.raises(CheckpointError, match="inverse .* cannot be saved"):
        checkpoint.save(tmp_path / "x.npz", flow)


def test_failed_write_keeps_the_old_file(model, tmp_path, monkeypatch):
    path = checkpoint.save(tmp_path / "m.npz", model)
    before = path.read_bytes()

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", crash)
    with pytest.raises(OSError, match="disk full"):
        checkpoint.save(path, model)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.npz"]  # no temporary left behind


def rewrite(src, dst, change):
    with np.load(src) as archive:
        arrays = {k: archive[k] for k in archive.files}
    change(arrays)
    np.savez(dst, **arrays)


def set_config(arrays, **updates):
    config = json.loads(arrays["__config__"].tobytes()) | updates
    arrays["__config__"] = np.frombuffer(json.dumps(config).encode(), np.uint8)


KERNEL = "flow/transforms/stacked/hyper/layers/0/kernel"  # (transforms, in, out)
ORDER = "flow/transforms/stacked/order"  # (transforms, features)
SPLINE = {"name": "spline", "bins": 3, "bound": 5.0, "slope": 0.001}


def set_raw_config(arrays, text):
    arrays["__config__"] = np.frombuffer(text.encode(), np.uint8)


@pytest.mark.parametrize(
    "change,match",
    [
        (lambda a: a.pop(KERNEL), "which describes 877 numbers where the file holds 637"),
        (
            lambda a: a.update({"mean": np.ones(4)}),
            "describes 877 numbers where the file holds 878",
        ),
        (lambda a: a.update({KERNEL: a[KERNEL].swapaxes(1, 2).copy()}), "shape \\(3, 16, 5\\)"),
        (lambda a: a.update({KERNEL: a[KERNEL].astype(np.float64)}), "dtype float64, expected"),
        (lambda a: a.update({"std": -a["std"]}), "std must be positive"),
        (lambda a: a.update({KERNEL: np.full_like(a[KERNEL], np.nan)}), "kernel holds NaN or inf"),
        (lambda a: set_config(a, format="other/9"), "unknown format 'other/9'"),
        (lambda a: set_config(a, hidden_features=[16, 9]), "describes 946 numbers"),
        (lambda a: set_config(a, param_dtype="float64"), "float64 model; load it with JAX_ENABLE"),
        (lambda a: set_config(a, hidden_features=[10**9, 8]), "describes \\d{11,} numbers"),
        (lambda a: set_config(a, transforms=10**7), "describes \\d{9,} numbers"),
        (lambda a: set_config(a, features=True), "features must be an integer >= 1, got True"),
        (lambda a: set_config(a, hidden_features="16"), "hidden_features must be a list"),
        (lambda a: set_config(a, activation="swish2"), "activation must be one of"),
        (lambda a: set_config(a, precision="float8"), "precision must be one of"),
        (lambda a: set_config(a, inverse={"name": "magic"}), "inverse name must be one of"),
        (lambda a: set_config(a, inverse={"name": "incremental", "blocks": -1}), "blocks must"),
        (lambda a: set_config(a, inverse={"name": "full_pass", "x": 1}), "takes options"),
        (lambda a: set_config(a, param_dtype="object"), "param_dtype must be one of"),
        (lambda a: set_config(a, extra=1), "unknown keys \\['extra'\\]"),
        (lambda a: set_config(a, shapes=[[2]]), "shapes must be \\[\\[\\], \\[\\]\\]"),
        (lambda a: set_config(a, derivative="numeric"), "derivative must be one of"),
        (lambda a: set_config(a, univariate={"name": "cubic"}), "univariate name must be one of"),
        (lambda a: set_config(a, univariate={"name": "affine", "bins": 3}), "takes no options"),
        (
            lambda a: set_config(a, univariate=SPLINE),
            "shapes must be \\[\\[3\\], \\[3\\], \\[2\\]\\]",
        ),
        (lambda a: set_config(a, univariate=SPLINE | {"bins": 1}), "bins must be an integer >= 2"),
        (lambda a: set_config(a, univariate=SPLINE | {"bound": True}), "bound must be a positive"),
        (lambda a: set_config(a, univariate={"name": "spline"}), "takes bins, bound and slope"),
        (lambda a: set_config(a, degrees=[[0] * 16]), "degrees must be .* sizes \\(16, 8\\)"),
        (lambda a: set_config(a, degrees=[[0] * 16, [-2] * 8]), "degrees\\[1\\]\\[0\\] must"),
        (lambda a: set_config(a, degrees="all"), "degrees must be null or a list of lists"),
        (lambda a: set_config(a, residual="yes"), "residual must be true or false, got 'yes'"),
        (lambda a: set_config(a, residual=True), "describes 2941 numbers"),
        (
            lambda a: set_config(
                a, residual=True, hidden_features=[8, 8], degrees=[[-1] * 8, [0] * 8]
            ),
            "consecutive hidden layers of one size have the same degrees",
        ),
        (
            lambda a: set_config(a, adjacency=[[1]]),
            "adjacency must be null or a list of lists of b",
        ),
        (lambda a: set_config(a, adjacency=[[True]]), "has passes = features and no degrees"),
        (
            lambda a: set_config(a, passes=3, adjacency=[[True, True], [True, True]]),
            "adjacency must be a boolean matrix of shape",
        ),
        (
            lambda a: set_config(
                a, passes=3, adjacency=[[True, True, False], [True, True, False], [0, 0, 1]]
            ),
            "adjacency must be null or a list of lists of booleans",
        ),
        (
            lambda a: set_config(
                a,
                passes=3,
                adjacency=[[True, True, False], [True, True, False], [False, False, True]],
            ),
            "cycle",
        ),
        (lambda a: set_config(a, bounds=[[0, 1]] * 2), "one pair per feature \\(shape \\(3, 2\\)"),
        (lambda a: set_config(a, bounds=[[1, 0]] * 3), "feature 0's lower bound 1.0 must be below"),
        (lambda a: set_config(a, bounds=[[0, "1"]] * 3), "bounds must be null or a list of \\["),
        (lambda a: set_config(a, bounds=[[0, True]] * 3), "bounds must be null or a list of \\["),
        (lambda a: set_config(a, bounds="0:1"), "bounds must be null or a list of \\["),
        (lambda a: set_config(a, base={"name": "flat"}), "base name must be one of"),
        (lambda a: set_config(a, base={"name": "mog"}), "base 'mog' takes \\['components'\\]"),
        (lambda a: set_config(a, base={"name": "mog", "components": 0}), "components must be"),
        (lambda a: set_config(a, base={"name": "normal", "components": 2}), "takes no options"),
        (lambda a: set_config(a, base={"name": "mog", "components": 2}), "describes 1271 numbers"),
        (lambda a: set_config(a, base="mog"), "base must be an object with a name"),
        (lambda a: set_config(a, batch_norm=1), "batch_norm must be true or false, got 1"),
        (lambda a: set_config(a, batch_norm=True), "describes 913 numbers"),
        (lambda a: set_raw_config(a, "[1, 2]"), "expected a JSON object, got list"),
        (lambda a: set_raw_config(a, "{not json"), "configuration is not JSON"),
        (lambda a: a.update({"__config__": np.zeros(3, np.float32)}), "has no configuration"),
        (
            lambda a: a.update({ORDER: np.array([[0, 1, 2], [0, 0, 1], [2, 1, 0]], np.int32)}),
            "permutation",
        ),
        (lambda a: a.pop("__config__"), "has no configuration"),
    ],
)
def test_mismatched_checkpoints_are_refused(model, tmp_path, change, match):
    path = checkpoint.save(tmp_path / "m.npz", model)
    rewrite(path, tmp_path / "bad.npz", change)
    with pytest.raises(CheckpointError, match=match):
        checkpoint.load(tmp_path / "bad.npz")


def test_corrupt_and_truncated_files_are_refused(model, tmp_path):
    path = checkpoint.save(tmp_path / "m.npz", model)
    (tmp_path / "cut.npz").write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    (tmp_path / "junk.npz").write_bytes(b"\x00" * 100)
    (tmp_path / "empty.npz").write_bytes(b"")
    np.save(tmp_path / "plain.npy", np.ones((3, 3)))
    for name in ("cut.npz", "junk.npz", "empty.npz", "plain.npy"):
        with pytest.raises(CheckpointError, match="not a readable maf-jax checkpoint"):
            checkpoint.load(tmp_path / name)
    assert zipfile.is_zipfile(path)


@pytest.mark.parametrize(
    "kwargs",
    [dict(activation=lambda x: x), dict(shapes=((), (), ()))],
)
def test_unsavable_models_are_refused(tmp_path, kwargs):
    flow = MAF(2, transforms=1, **kwargs, rngs=nnx.Rngs(0))
    with pytest.raises(CheckpointError, match="can be saved|cannot be saved"):
        checkpoint.save(tmp_path / "x.npz", flow)
    assert not (tmp_path / "x.npz").exists()


def test_compressed_checkpoints_are_refused_before_inflating(model, tmp_path):
    """Checkpoints are written uncompressed: a compressed member could claim (and
    inflate to) far more than the file holds."""
    path = checkpoint.save(tmp_path / "m.npz", model)
    with np.load(path) as archive:
        np.savez_compressed(tmp_path / "packed.npz", **dict(archive))
    with pytest.raises(CheckpointError, match="is compressed or mislabelled"):
        checkpoint.load(tmp_path / "packed.npz")


@pytest.mark.parametrize("identity_init", [True, False])
def test_identity_init_is_stored_and_older_files_load_without_it(tmp_path, identity_init):
    model = MAF(3, transforms=2, identity_init=identity_init, rngs=nnx.Rngs(0))
    path = checkpoint.save(tmp_path / "m.npz", model)
    assert all(t.identity_init is identity_init for t in checkpoint.load(path).transforms.unstack())
    # a file written before the option: the key is absent, the model loads as False
    rewrite(path, tmp_path / "old.npz", lambda a: a.update(__config__=without(a, "identity_init")))
    assert not checkpoint.load(tmp_path / "old.npz").transforms.unstack()[0].identity_init


def without(arrays, key):
    config = json.loads(arrays["__config__"].tobytes())
    del config[key]
    return np.frombuffer(json.dumps(config).encode(), np.uint8)


def unstacked(arrays):
    """What files written before the stacked layout held: one array per transform."""
    for name in [n for n in arrays if "transforms/stacked/" in n]:
        stacked = arrays.pop(name)
        for i, part in enumerate(stacked):
            arrays[name.replace("transforms/stacked/", f"transforms/{i}/")] = part


def test_files_written_before_the_stacked_layout_load(model, tmp_path):
    path = checkpoint.save(tmp_path / "new.npz", model)
    rewrite(path, tmp_path / "old.npz", unstacked)
    with np.load(tmp_path / "old.npz") as old:
        assert "flow/transforms/2/hyper/layers/0/kernel" in old.files
        assert not any("stacked" in name for name in old.files)
    loaded = checkpoint.load(tmp_path / "old.npz")
    x = jax.random.normal(jax.random.key(0), (5, 3))
    c = jnp.ones((5, 2))
    np.testing.assert_array_equal(loaded(c).log_prob(x), model(c).log_prob(x))
    for old, new in zip(nnx.state(loaded).flat_state(), nnx.state(model).flat_state()):
        np.testing.assert_array_equal(old[1][...], new[1][...])


@pytest.mark.parametrize(
    "change,match",
    [
        (
            lambda a: a.update({"flow/transforms/1/orders": a.pop("flow/transforms/1/order")}),
            "missing \\['flow/transforms/stacked/order'\\]",
        ),
        (
            lambda a: a.update({KERNEL.replace("stacked", "2"): np.ones((16, 5), np.float32)}),
            "transforms/2/hyper/layers/0/kernel has shape \\(16, 5\\)",
        ),
        (lambda a: a.update({"flow/transforms/0/order": np.zeros(3, np.int32)}), "permutation"),
    ],
)
def test_tampered_files_of_the_older_layout_are_refused(model, tmp_path, change, match):
    path = checkpoint.save(tmp_path / "new.npz", model)
    rewrite(path, tmp_path / "old.npz", lambda a: (unstacked(a), change(a)))
    with pytest.raises(checkpoint.CheckpointError, match=match):
        checkpoint.load(tmp_path / "old.npz")
