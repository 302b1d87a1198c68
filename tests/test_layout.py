"""The package's layers: each subpackage imports only from those before it."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import LAYERS

import maf_jax

PACKAGE = Path(maf_jax.__file__).parent

FLAX_FREE = LAYERS[: LAYERS.index("nn")]
# third-party packages that only some layers may import
ONLY_IN = {"flax": LAYERS[LAYERS.index("nn") :], "optax": ["train", "cli"], "matplotlib": ["cli"]}
MODULES = sorted(p for p in PACKAGE.rglob("*.py") if p.name != "__init__.py" or p.parent != PACKAGE)


def layer_of(path: Path) -> str:
    return path.relative_to(PACKAGE).with_suffix("").parts[0]


def imports(path: Path) -> set[str]:
    """Modules ``path`` imports at any depth (inside functions too), absolute."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import"
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def test_every_module_belongs_to_a_layer():
    assert {layer_of(p) for p in MODULES} == set(LAYERS)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_a_module_imports_only_from_its_layer_and_those_below(path):
    layer = layer_of(path)
    allowed = set(LAYERS[: LAYERS.index(layer) + 1])
    found = imports(path)
    ours = {n.split(".")[1] for n in found if n.startswith("maf_jax.")} - {"__version__"}
    assert ours <= allowed, f"{layer} imports {sorted(ours - allowed)}"
    for package, layers in ONLY_IN.items():
        if layer not in layers:
            assert not {n for n in found if n.split(".")[0] == package}, f"{layer}: {package}"
    if layer in FLAX_FREE:
        assert not {n for n in found if n.startswith(("torch", "zuko"))}


def test_import_maf_jax_loads_no_jax_until_a_name_is_used():
    code = (
        "import sys, maf_jax; assert 'jax' not in sys.modules and 'flax' not in sys.modules; "
        "maf_jax.MAF; assert 'flax' in sys.modules; print(maf_jax.__version__)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == maf_jax.__version__ != "0+unknown"


def test_the_public_api_is_what_all_lists():
    for name in maf_jax.__all__:
        assert getattr(maf_jax, name) is not None
    assert set(maf_jax.__all__) == set(maf_jax._EXPORTS) | {"__version__"}
    with pytest.raises(AttributeError, match="no attribute 'mlp'"):
        maf_jax.mlp  # noqa: B018 -- internals live in their subpackages
