"""Sphinx configuration of the maf_jax documentation.

Build: ``python -m sphinx -W --keep-going -b html docs docs/_build/html``
(``pip install -e '.[docs]'`` first). The tutorials are MyST-NB notebooks, executed
on every build.
"""

from __future__ import annotations

import importlib
import inspect
import os
import pkgutil
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the source tree beside these docs, installed or not

import maf_jax  # noqa: E402

project = "maf_jax"
author = "maf_jax developers"
copyright = "maf_jax developers"
release = maf_jax.__version__
version = release

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
]

exclude_patterns = ["_build", "**.ipynb_checkpoints", "Thumbs.db", ".DS_Store"]
templates_path = ["_templates"]
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb"}

# --- API reference: one page per public name, from its docstring -------------------
autosummary_generate = True
autosummary_ignore_module_all = False  # a module's members are its __all__
autodoc_member_order = "bysource"
autodoc_preserve_defaults = True  # defaults as written (jax.nn.relu), not their repr
autodoc_typehints = "signature"
autodoc_class_signature = "mixed"
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_attr_annotations = True
add_module_names = False
python_display_short_literal_types = True

PACKAGES = [
    "maf_jax.core",
    "maf_jax.inverses",
    "maf_jax.bijections",
    "maf_jax.distributions",
    "maf_jax.protocols",
    "maf_jax.nn",
    "maf_jax.flows",
    "maf_jax.checkpoint",
    "maf_jax.data",
    "maf_jax.train",
    "maf_jax.interop",
]


def _reexports() -> dict[str, list[str]]:
    """Per module page (a module in a package's ``__all__``), the names it re-exports.

    Such a name has its own page under the package that exports it; documenting it
    again on the module's page would describe one object twice.
    """
    found = {}
    for package in PACKAGES:
        module = importlib.import_module(package)
        for name in module.__all__:
            sub = getattr(module, name)
            if not inspect.ismodule(sub):
                continue
            found[sub.__name__] = [
                f"{obj.__module__}.{obj.__qualname__}"
                for obj in (getattr(sub, member) for member in getattr(sub, "__all__", ()))
                if (inspect.isclass(obj) or inspect.isfunction(obj))
                and obj.__module__ != sub.__name__
            ]
    return found


autosummary_context = {"reexports": _reexports()}

# --- Markdown and notebooks ---------------------------------------------------------
myst_enable_extensions = ["amsmath", "colon_fence", "deflist", "dollarmath"]
myst_heading_anchors = 3
nb_execution_mode = "force"  # every tutorial runs on every build
nb_execution_timeout = 180  # seconds per cell
nb_execution_raise_on_error = True  # a failing cell fails the build
nb_execution_show_tb = True
nb_execution_in_temp = True  # files a tutorial writes go to a temporary folder
nb_merge_streams = True

# --- HTML ---------------------------------------------------------------------------
html_theme = "furo"
html_title = f"maf_jax {release}"
html_static_path = ["_static"]
html_css_files = ["custom.css"]
html_theme_options = {"navigation_with_keys": True}
# MathJax comes from its CDN; DOCS_MATHJAX_PATH points at a local copy for reading
# the pages offline, e.g. es5/tex-mml-chtml.js of the mathjax 3 npm package, served
# with the pages.
if os.environ.get("DOCS_MATHJAX_PATH"):
    mathjax_path = os.environ["DOCS_MATHJAX_PATH"]


def data_comment(package: str, name: str) -> list[str] | None:
    """The comment above ``name = ...`` in the submodule of ``package`` that defines it.

    A package's public names are imported lazily from its submodules, so autodoc,
    which reads ``#:`` comments in the package's own source, finds none for its
    data; the comment lines right above the assignment (``#:`` or ``#``) are taken.
    """
    try:
        module = importlib.import_module(package)
    except ImportError:
        return None
    value = getattr(module, name, None)
    for info in pkgutil.iter_modules(getattr(module, "__path__", [])):
        sub = importlib.import_module(f"{package}.{info.name}")
        if getattr(sub, name, None) is not value:
            continue
        lines = inspect.getsource(sub).splitlines()
        for i, line in enumerate(lines):
            if re.match(rf"{re.escape(name)}\s*(:[^=]*)?=", line):
                comment = []
                for above in reversed(lines[:i]):
                    if not above.startswith("#"):
                        break
                    comment.insert(0, re.sub(r"^#:? ?", "", above))
                return comment or None
    return None


def _process_docstring(app, what, name, obj, options, lines):
    """Data: the defining module's ``#:`` comment instead of its type's docstring."""
    if what != "data":
        return
    package, _, attr = name.rpartition(".")
    comment = data_comment(package, attr)
    if comment is not None:
        lines[:] = comment
    elif (
        lines
        and not inspect.isclass(obj)
        and "\n".join(lines).strip() == (inspect.getdoc(type(obj)) or "").strip()
    ):
        lines[:] = []


def _process_signature(app, what, name, obj, options, signature, return_annotation):
    """The signature of ``__init__`` for classes whose metaclass defines ``__call__``.

    Flax NNX modules and variables are such classes: autodoc would take their
    signature from the metaclass, ``(*args, **kwargs)``.
    """
    if what not in ("class", "exception") or not inspect.isclass(obj):
        return None
    if type(obj).__call__ is type.__call__ or "__init__" not in vars(obj):
        return None
    from sphinx.ext.autodoc.preserve_defaults import update_defvalue
    from sphinx.util.inspect import signature as get_signature
    from sphinx.util.inspect import stringify_signature

    update_defvalue(app, obj.__init__, False)
    init = get_signature(obj.__init__, bound_method=True)
    short = app.config.autodoc_typehints_format == "short"
    text = stringify_signature(init, show_return_annotation=False, unqualified_typehints=short)
    return text, None


def setup(app):
    """Connects the two hooks above."""
    app.connect("autodoc-process-docstring", _process_docstring)
    app.connect("autodoc-process-signature", _process_signature)
