"""Sphinx configuration of the absgd_jax documentation site.

Build it (offline, warnings are errors) from the repository root:

    pip install -e ".[docs]"
    sphinx-build -W --keep-going -b html docs docs/_build/html

Why Sphinx with MyST and Furo: they are what optax and flax use, so a JAX user meets the same
layout, and the API reference comes straight from the docstrings (autodoc + autosummary over
each module's ``__all__``, napoleon for the Google style the code is written in). The pages
stay Markdown (MyST), as they read on a forge without a build. mkdocs-material with
mkdocstrings (equinox's choice) would do as well; Sphinx was taken because its autosummary
follows ``__all__`` by itself, so a public name added to a module gets its page with no edit
here, and because ``-W`` turns a broken cross-reference or docstring into a failed build.
"""

import os
import sys

# The package from this checkout, not an installed copy (the build documents the tree it is in).
sys.path.insert(0, os.path.abspath(".."))
sys.path.insert(0, os.path.abspath("_ext"))

import absgd_jax  # noqa: E402

project = "absgd_jax"
author = "absgd_jax authors"
copyright = "absgd_jax authors"  # noqa: A001 (Sphinx's name)
release = absgd_jax.__version__
version = release

extensions = [
  "myst_parser",
  "sphinx.ext.autodoc",
  "sphinx.ext.autosummary",
  "sphinx.ext.napoleon",
  "sphinx.ext.mathjax",
  "sphinx.ext.viewcode",
  "api_names",  # _ext/api_names.py: the docs of module-level values such as PRESETS.
]

# The docstrings write |lam| for the absolute value of lam; in reStructuredText |x| is a
# substitution, so it is defined as itself.
rst_prolog = r"""
.. |lam| replace:: \|lam\|
"""

source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
templates_path = ["_templates"]
# Pages the site does not build: the build output, and notes kept beside the sources.
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]

# MyST: $...$ and $$...$$ math for the method page, ::: fences for notes, and anchors for
# headings down to level 3 so that pages can link to each other's sections.
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3

# The API reference: one page per public name, generated from the docstrings of the names in
# each module's __all__ (the templates are in _templates/autosummary/).
autosummary_generate = True
autosummary_ignore_module_all = False
autosummary_imported_members = True
autodoc_default_options = {"members": False}
autodoc_typehints = "signature"
autodoc_member_order = "bysource"
# The training kit's optional dependencies are installed by the [docs] extra; nothing is mocked,
# so a page that cannot import fails the build rather than showing an empty entry.
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False

html_theme = "furo"
html_title = f"absgd_jax {release}"
html_static_path = []
# The site is read from disk as well as served: no external fonts or analytics are needed.
html_theme_options = {"navigation_with_keys": True}
