import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from hypothesis import settings
from hypothesis import strategies as st
from scipy.special import log_expit, logit, ndtri
from xla_flags import with_fast_compile

HERE = Path(__file__).parent

# The package's layers, lowest first: a module may import from its own layer and those
# before it (tests/test_layout.py); each but _lazy and cli has an API page listing its
# __all__ (tests/test_docs.py).
LAYERS = [
    "_lazy",
    "protocols",
    "core",
    "inverses",
    "bijections",
    "distributions",
    "nn",
    "flows",
    "checkpoint",
    "data",
    "train",
    "interop",
    "cli",
]

# scripts run in their own process (flags such as x64 must not reach this one)
collect_ignore_glob = ["*_checks.py"]

# Test files that run in a pytest process of their own, with this environment:
# tests/test_own_process.py starts one per file. x64 is process-wide; torch loaded
# beside XLA is kept out of the process that runs everything else (a native crash
# there would end the whole run).
OWN_PROCESS = {
    "interop/test_interop.py": {},
    "test_float64.py": {"JAX_ENABLE_X64": "1"},
}
OWN_PROCESS_ENV = "MAF_JAX_OWN_PROCESS"


def pytest_ignore_collect(collection_path, config):
    """Leaves the ``OWN_PROCESS`` files to their own process unless named explicitly."""
    relative = (
        collection_path.relative_to(HERE).as_posix()
        if collection_path.is_relative_to(HERE)
        else None
    )
    if relative not in OWN_PROCESS or os.environ.get(OWN_PROCESS_ENV):
        return None
    named = {Path(arg.split("::")[0]).resolve() for arg in config.args}
    return None if collection_path.resolve() in named else True


def pytest_collection_modifyitems(items):
    """The files run in processes of their own first: they are the longest."""
    items.sort(key=lambda item: "test_own_process.py::Test" not in item.nodeid)


def with_flags(env: dict) -> dict:
    """``os.environ`` updated by ``env``, whose ``XLA_FLAGS`` add to this process's."""
    flags = f"{os.environ.get('XLA_FLAGS', '')} {env.get('XLA_FLAGS', '')}".strip()
    return os.environ | env | {"XLA_FLAGS": flags}


def run_checks(
    script: str, env: dict | None = None, timeout: float = 600, xla_defaults: bool = False
) -> dict:
    """Runs a check script of this folder in a fresh interpreter; returns its JSON.

    Flags such as ``jax_enable_x64`` or ``XLA_FLAGS`` then apply to that process
    alone. The script prints one JSON object mapping check names to an error
    message, empty when the check passed. With ``xla_defaults``, its ``XLA_FLAGS``
    are ``env``'s alone: XLA compiles as it does for users, without the suite's
    flags (``tests/xla_flags.py``).
    """
    env = env or {}
    if xla_defaults:
        env = os.environ | env | {"XLA_FLAGS": env.get("XLA_FLAGS", "")}
    else:
        env = with_flags(env)
    result = subprocess.run(
        [sys.executable, str(HERE / script)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def scramble(module, seed: int = 0, gain: float = 1.0):
    """Redraws every masked layer as N(0, gain^2 / fan_in), biases N(0, 0.1^2).

    Flows start near the identity; tests of structure need a generic function. The
    transforms of a ``Stack`` are drawn one after the other, as if they were separate.
    The values are ``jax.random.normal``'s for each layer's shape, drawn as the layers
    draw their own (``maf_jax.nn.layers._draw``: flat, then cut on the host), so that
    no program is compiled per shape of layer.
    """
    import jax
    from flax import nnx

    from maf_jax.nn.layers import MaskedLinear, _draw
    from maf_jax.nn.stack import Stack

    key = jax.random.key(seed)

    def normal(key, shape, dtype):
        return np.asarray(_draw(jax.random.normal, key, shape, dtype))

    def draw(layer, key):
        key, k_w, k_b = jax.random.split(key, 3)
        dtype = np.dtype(layer.kernel[...].dtype)
        mask = np.asarray(layer.mask[...])
        # the dtypes jax.numpy would give (float64's root of the fan-in rounded to the
        # weights' dtype unless x64 is on); NumPy rounds each operation correctly
        scale = np.sqrt(np.maximum(mask.sum(0), 1))
        scale = scale.astype(jax.dtypes.canonicalize_dtype(np.result_type(dtype, np.float64)))
        kernel = np.where(mask, normal(k_w, mask.shape, dtype) * dtype.type(gain) / scale, 0)
        bias = dtype.type(0.1) * normal(k_b, layer.bias[...].shape[-1:], dtype)
        # in the layer's dtype, the variable takes the array as it is (no scatter)
        return key, kernel.astype(dtype), bias

    for path, node in nnx.iter_graph(module):
        if isinstance(node, Stack):
            layers = [m for _, m in nnx.iter_graph(node.stacked) if isinstance(m, MaskedLinear)]
            drawn = {id(layer): [] for layer in layers}
            for _ in range(len(node)):  # transform after transform
                for layer in layers:
                    key, *arrays = draw(layer, key)
                    drawn[id(layer)].append(arrays)
            for layer in layers:
                kernels, biases = zip(*drawn[id(layer)])
                layer.kernel[...] = jax.device_put(np.stack(kernels))
                layer.bias[...] = jax.device_put(np.stack(biases))
        elif isinstance(node, MaskedLinear) and "stacked" not in path:
            key, kernel, bias = draw(node, key)
            node.kernel[...] = jax.device_put(kernel)
            node.bias[...] = jax.device_put(bias)
    return module


def batch_norm_inputs(flow, u, c=None):
    """Rows at the input of each batch norm of ``flow`` on a training forward of ``u``.

    ``u`` is the transforms' input (``c`` the flow's context, one row per row); each
    norm normalises with its own input's mean and variance, step by step, as the
    paper's statistics are defined.
    """
    import jax.numpy as jnp
    import numpy as np

    steps = flow.unconstrained(c).transform
    u = steps._broadcast(u)
    inputs = []
    for i in range(len(steps)):
        y = steps[i].first.forward(u)
        inputs.append(np.asarray(y, np.float64))
        norm = steps[i].second
        u = jnp.exp(norm.log_gamma) * (y - y.mean(0)) / jnp.sqrt(y.var(0) + 1e-5) + norm.beta
    return inputs


def iter_eqns(jaxpr):
    """Every equation of ``jaxpr`` and of the jaxprs nested in its equations."""
    for eqn in jaxpr.eqns:
        yield eqn
        for value in eqn.params.values():
            for sub in value if isinstance(value, (tuple, list)) else (value,):
                if hasattr(sub, "eqns"):
                    yield from iter_eqns(sub)
                elif hasattr(sub, "jaxpr") and hasattr(sub.jaxpr, "eqns"):
                    yield from iter_eqns(sub.jaxpr)


# Property-based tests: a few dozen examples in the default run, more with
# ``python -m pytest --hypothesis-profile=long``. Every example compiles its own
# program, hence no deadline.
settings.register_profile("default", max_examples=30, deadline=None)
settings.register_profile("long", max_examples=500, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

# The command line keeps compiled programs in a user folder; tests run it in-process
# and must not write there (tests/test_cli.py turns it on where it is the subject).
os.environ.setdefault("MAF_JAX_COMPILATION_CACHE", "off")

# Most of the suite's time is XLA compiling small programs: the flags of
# tests/xla_flags.py halve it. Set before JAX is imported, and inherited by the
# processes the tests start; flags given in XLA_FLAGS are kept. Benchmarks keep
# XLA's defaults.
os.environ["XLA_FLAGS"] = with_fast_compile(os.environ.get("XLA_FLAGS", ""))

# The processes a run starts (xdist workers, the own-process files, the command line,
# distributed and fuzz tests) compile many of the same programs: they share one
# persistent compilation cache for the run, in a folder of its own that is removed
# with it. Every program is written, however fast it compiled (JAX's default keeps
# those over a second): without LLVM's optimisations most take less, and the command
# line, distributed and resume tests start processes that compile them again
# (tests/cli and tests/train: 108.6 s without, 87.0 s with).
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    import atexit
    import shutil
    import tempfile

    _cache = tempfile.mkdtemp(prefix="maf-jax-tests-cache-")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache
    atexit.register(shutil.rmtree, _cache, ignore_errors=True)


@st.composite
def structures(draw, features: int = 9, context: int = 3, hidden: int = 19):
    """A random transform: ``kwargs`` of a ``MaskedAutoregressiveTransform`` (features,
    passes, order, context, hidden sizes, residual or not, activation, an incremental
    schedule, and half the time hidden degrees of its own), a
    number of ``rows`` and a ``seed``."""
    import jax
    import jax.numpy as jnp

    from maf_jax import Incremental

    n = draw(st.integers(1, features))
    inverse = Incremental(
        chunk=draw(st.none() | st.integers(1, 5)),
        blocks=draw(st.none() | st.integers(1, 4)),
        groups=draw(st.integers(1, 4)),
    )
    kwargs = dict(
        features=n,
        passes=draw(st.integers(1, n)),
        order=draw(st.permutations(range(n))),
        context=draw(st.integers(0, context)),
        hidden_features=tuple(draw(st.lists(st.integers(1, hidden), max_size=2))),
        activation=draw(st.sampled_from([jax.nn.relu, jax.nn.elu, jnp.tanh])),
        inverse=inverse,
        residual=draw(st.booleans()),
    )
    if draw(st.booleans()):  # any degrees, as an imported model may have
        block = -(-n // kwargs["passes"])
        top = max(-(-n // block) - 2, -1)
        degrees = []
        for i, h in enumerate(kwargs["hidden_features"]):
            if kwargs["residual"] and i and h == kwargs["hidden_features"][i - 1]:
                degrees.append(degrees[-1])  # one block's input and output: the same units
            else:
                layer = draw(st.lists(st.integers(-1, top), min_size=h, max_size=h))
                degrees.append(tuple(sorted(layer)))
        kwargs["degrees"] = tuple(degrees)
    return dict(kwargs=kwargs, rows=draw(st.integers(1, 7)), seed=draw(st.integers(0, 2**16)))


@st.composite
def graphs(draw, features=7, context=2):
    """A random DAG over features (ones on the diagonal, maybe context columns), a
    context size, hidden sizes, residual or not and a seed."""
    import numpy as np

    n = draw(st.integers(2, features))
    c = draw(st.integers(0, context))
    order = draw(st.permutations(range(n)))
    a = np.eye(n, dtype=bool)
    for i in range(n):  # edges only from later to earlier in a random order: a DAG
        for j in range(i):
            a[order[i], order[j]] = draw(st.booleans())
    if c and draw(st.booleans()):
        a = np.concatenate(
            [
                a,
                np.array(draw(st.lists(st.booleans(), min_size=n * c, max_size=n * c))).reshape(
                    n, c
                ),
            ],
            1,
        )
    hidden = tuple(draw(st.lists(st.integers(1, 13), max_size=2)))
    return a, c, hidden, draw(st.booleans()), draw(st.integers(0, 2**16))


def set_shares(flow, shares):
    """Sets ``flow``'s learned tails to ``shares`` of each feature's width."""
    import jax.numpy as jnp

    from maf_jax.flows.autoregressive import TAILS_GAIN

    shares = np.asarray(shares, np.float64)
    flow.tails[...] = jnp.asarray(logit(2 * shares) / TAILS_GAIN, flow.tails[...].dtype)


def link_reference(link, x, a, b, share=0.02):
    """``u`` and ``log|du/dx|`` of two finite bounds, written out with scipy in float64.

    ``share``: the linear links' share of the width that each tail takes.
    """
    x, width = np.asarray(x, np.float64), b - a
    t = (x - a) / width
    if link == "probit":
        u = ndtri(t)
        return u, 0.5 * u**2 + 0.5 * math.log(2 * math.pi) - math.log(width)
    if link == "logit":
        u = logit(t)
        return u, -math.log(width) - log_expit(u) - log_expit(-u)
    # the identity, but within d of a bound: a + d + s Phi^{-1}((x - a) / 2d)
    d = share * width
    s = 2 * d / math.sqrt(2 * math.pi)
    z_low, z_high = ndtri(np.minimum(x - a, d) / (2 * d)), ndtri(np.minimum(b - x, d) / (2 * d))
    u = np.where(x - a < d, a + d + s * z_low, np.where(b - x < d, b - d - s * z_high, x))
    return u, np.where(x - a < d, z_low**2 / 2, np.where(b - x < d, z_high**2 / 2, 0.0))
