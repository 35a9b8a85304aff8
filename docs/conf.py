"""Sphinx configuration of the absgd_jax documentation site.

Build it (offline, warnings are errors) from the repository root:

    pip install -e ".[docs]"
    sphinx-build -W --keep-going -b html docs docs/_build/html

Why Sphinx with MyST and Furo: they are what optax and flax use, so a JAX user meets the same
layout, and the API reference comes straight from the docstrings (autodoc + autosummary,
napoleon for the Google style the code is written in). The pages stay Markdown (MyST), as they
read on a forge without a build. mkdocs-material with mkdocstrings (equinox's choice) would do
as well; Sphinx was taken because ``-W`` turns a broken cross-reference or docstring into a
failed build, and because myst-nb executes the quickstart notebook as part of it.

The reference (api.rst) is grouped by concept, as optax's is, so a public name is listed there
by hand; tests/test_api_docs.py fails, naming it, when a name in a module's ``__all__`` is not.

The site reads offline: MathJax comes from the sphinx-mathjax-offline package and is copied
into ``_static/``, no page loads a script, font or style sheet from the network
(tests/test_docs_site.py checks the built HTML), and the quickstart notebook runs in a local
kernel.
"""

import os
import sys

# The package from this checkout, not an installed copy (the build documents the tree it is in).
ROOT = os.path.abspath("..")
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.abspath("_ext"))
# The notebook's kernel is a process of its own: it imports the same checkout.
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH", "")) if p)

import absgd_jax  # noqa: E402

project = "absgd_jax"
author = "absgd_jax authors"
copyright = "absgd_jax authors"  # noqa: A001 (Sphinx's name)
release = absgd_jax.__version__
version = release

extensions = [
  "myst_nb",  # MyST Markdown for the pages (it brings myst_parser), and executed notebooks.
  "sphinx.ext.autodoc",
  "sphinx.ext.autosummary",
  "sphinx.ext.napoleon",
  "sphinx.ext.mathjax",
  "sphinx-mathjax-offline",  # MathJax 3 from the package, not a CDN (sets mathjax_path).
  "sphinx.ext.viewcode",
  "sphinx_copybutton",
  "api_names",  # _ext/api_names.py: the docs of module-level values, whole summaries.
]
# No intersphinx: the inventories of jax, optax and numpy are only on the network, and the
# build must not fetch anything. Names of theirs are written as plain code.

# The docstrings write |lam| for the absolute value of lam; in reStructuredText |x| is a
# substitution, so it is defined as itself.
rst_prolog = r"""
.. |lam| replace:: \|lam\|
"""

root_doc = "index"
templates_path = ["_templates"]
# Pages the site does not build: the build output, and notes kept beside the sources.
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "**.ipynb_checkpoints"]

# MyST: $...$ and $$...$$ math for the method page, ::: fences for notes, and anchors for
# headings down to level 3 so that pages can link to each other's sections.
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3

# Notebooks (quickstart.ipynb) are stored without outputs and run on every build, so what the
# site shows is what the code gives; an error in a cell fails the build.
nb_execution_mode = "force"
nb_execution_timeout = 600
nb_execution_raise_on_error = True
nb_execution_show_tb = True
# Widgets need require.js from a CDN; no notebook here has any.
nb_ipywidgets_js = {}
# What a cell writes to stderr is left out: here, only tqdm's notice that it found no
# notebook widgets (the training kit imports tqdm.auto).
nb_output_stderr = "remove"
# A cell's printed lines read as one block, as in Jupyter.
nb_merge_streams = True

# The API reference: api.rst lists each public name under its concept, and autosummary writes
# one page per name from its docstring (the templates are in _templates/autosummary/).
autosummary_generate = True
autosummary_ignore_module_all = False
autosummary_imported_members = True
autodoc_default_options = {"members": False}
autodoc_typehints = "signature"
autodoc_member_order = "bysource"
# Signatures name the aliases the code is annotated with, not their expansion
# (jax.typing.ArrayLike is a union of eight types). They are described in api.rst.
autodoc_type_aliases = {
  "ArrayLike": "ArrayLike",
  "jax.typing.ArrayLike": "ArrayLike",
  "AxisName": "AxisName",
  "LamSchedule": "LamSchedule",
  "PerSampleLoss": "PerSampleLoss",
}
# The training kit's optional dependencies are installed by the [docs] extra; nothing is mocked,
# so a page that cannot import fails the build rather than showing an empty entry.
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False

# The copy button leaves out the prompts of doctest examples and shell sessions.
copybutton_prompt_text = r">>> |\.\.\. |\$ "
copybutton_prompt_is_regexp = True

html_theme = "furo"
html_title = f"absgd_jax {release}"
html_static_path = ["_static"]
html_css_files = ["site.css"]
# The site is read from disk as well as served: no external fonts or analytics are needed.
html_theme_options = {"navigation_with_keys": True}
