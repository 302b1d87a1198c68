"""Every public name has a docstring and a page in the API reference (no Sphinx run)."""

import dataclasses
import functools
import importlib
import importlib.util
import inspect
import re
from pathlib import Path

import pytest
from conftest import LAYERS

import maf_jax

DOCS = Path(__file__).parents[1] / "docs"
# each has a page docs/api/NAME.md listing its __all__
PACKAGES = [layer for layer in LAYERS if layer not in ("_lazy", "cli")]
DOCUMENTED_BY_HAND = {"__version__"}  # data without a source comment: docs/api/index.md


def public_names():
    """``(package, name, object)`` for every name of ``maf_jax.__all__`` and the packages'."""
    found = [("maf_jax", name, getattr(maf_jax, name)) for name in maf_jax.__all__]
    for package in PACKAGES:
        module = importlib.import_module(f"maf_jax.{package}")
        found += [(module.__name__, name, getattr(module, name)) for name in module.__all__]
    return found


NAMES = public_names()


def documented(obj) -> bool:
    """Whether ``obj`` has a docstring of its own (a dataclass's made-up one is not)."""
    doc = (obj.__doc__ or "").strip()
    if inspect.isclass(obj) and dataclasses.is_dataclass(obj):
        made_up = obj.__name__ + str(inspect.signature(obj)).replace(" -> None", "")
        return bool(doc) and doc != made_up
    return bool(doc)


def members(obj):
    """The public methods and properties a class defines itself, or a module's ``__all__``."""
    if inspect.ismodule(obj):
        for name in getattr(obj, "__all__", ()):
            value = getattr(obj, name)
            if inspect.isclass(value) or inspect.isfunction(value):
                yield name, value
        return
    for name, value in vars(obj).items():
        if name.startswith("_"):
            continue
        if isinstance(value, property):
            yield name, value.fget
        elif isinstance(value, (classmethod, staticmethod)):
            yield name, value.__func__
        elif inspect.isfunction(value):
            yield name, value


def is_data(obj) -> bool:
    return not (inspect.isclass(obj) or inspect.ismodule(obj) or callable(obj))


@functools.cache
def docs_conf():
    """``docs/conf.py`` as a module (it imports no Sphinx)."""
    spec = importlib.util.spec_from_file_location("docs_conf", DOCS / "conf.py")
    conf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conf)
    return conf


def source_comment(package: str, name: str) -> list[str] | None:
    """The comment the API reference shows for data: ``docs/conf.py``'s own reader."""
    return docs_conf().data_comment(package, name)


@pytest.mark.parametrize(("package", "name", "obj"), NAMES, ids=[f"{p}.{n}" for p, n, _ in NAMES])
def test_every_public_name_has_a_docstring(package, name, obj):
    if name in DOCUMENTED_BY_HAND:
        return
    if is_data(obj):
        assert source_comment(package, name), f"{package}.{name}: no comment above its definition"
        return
    assert documented(obj), f"{package}.{name} has no docstring"
    if inspect.isclass(obj) or inspect.ismodule(obj):
        missing = [m for m, value in members(obj) if not (value.__doc__ or "").strip()]
        assert not missing, f"{package}.{name}: no docstring for {missing}"


@pytest.mark.parametrize("package", PACKAGES)
def test_every_name_of_a_package_has_an_api_page(package):
    module = importlib.import_module(f"maf_jax.{package}")
    page = (DOCS / "api" / f"{package}.md").read_text()
    listed = set(re.findall(r"^   (\w+)$", page, flags=re.M))
    assert listed == set(module.__all__), (
        f"docs/api/{package}.md lists {sorted(listed)}, maf_jax.{package}.__all__ is "
        f"{sorted(module.__all__)}"
    )


def test_every_top_level_name_is_in_the_api_index():
    page = (DOCS / "api" / "index.md").read_text()
    missing = [name for name in maf_jax.__all__ if not re.search(rf"\b{name}\b", page)]
    assert not missing, f"docs/api/index.md does not name {missing}"
