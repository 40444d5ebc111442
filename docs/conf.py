"""Sphinx configuration: autodoc + napoleon (Google style) + MyST Markdown, built offline.

Build with ``make docs`` (strict: ``sphinx-build -W --keep-going -n``).
"""

from __future__ import annotations

import os
import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE / "_ext"))
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import dropout_lab  # noqa: E402

project = "dropout_lab"
author = "The dropout_lab authors"
copyright = "2026, The dropout_lab authors"
release = version = dropout_lab.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "myst_parser",
    "apiref",  # docs/_ext: API pages from __all__ and the coverage check
]

source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
# generated/ and results/ are read through {include} and the generator, not as pages.
exclude_patterns = ["_build", "generated", "results", "figures", "_ext"]

# Docstrings: Google style only; type hints in the signature.
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
autodoc_typehints = "signature"
autodoc_member_order = "bysource"
autodoc_default_options = {"show-inheritance": False}
autosummary_generate = False

myst_enable_extensions = ["dollarmath", "colon_fence", "deflist"]
myst_heading_anchors = 3

# No intersphinx (the build is offline): names from other packages in signatures
# (jax.Array, flax modules, typing) cannot be resolved, so -n ignores exactly those.
nitpick_ignore_regex = [
    ("py:.*", r"(jax|jaxlib|flax|nnx|nn|numpy|np|optax|chex|typing|collections)(\..*)?"),
    ("py:.*", r"(ArrayLike|Array|PRNGKeyArray|DTypeLike|Any|Callable|Sequence|Mapping)"),
    ("py:.*", r"(Iterable|Iterator|NamedTuple|Literal|int|float|bool|str|tuple|dict|list)"),
    ("py:.*", r"(None|object|type|Ellipsis|_.*|.*\._.*)"),
    # Helpers of the private ops modules that two docstrings name (not public API).
    ("py:func", r"(affine_correction|seed_probability)"),
]

html_theme = "furo"
html_title = f"dropout_lab {release}"
html_static_path: list[str] = []
