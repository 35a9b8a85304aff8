"""The public names the API reference documents, the docs of the data among them, and their
one-line summaries.

A Sphinx extension (listed in docs/conf.py) and a helper of tests/test_api_docs.py, so the site
and the test that checks it agree on what "every public name" is.

The summary tables show each name's first sentence. autosummary ends a sentence at the first
". " that is not a known abbreviation, and the docstrings cite the paper's equations as
"Eq. (2)", so "Eq." and its kin are added to the abbreviations it knows.

A module-level value such as ``absgd_jax.train.PRESETS`` has no docstring of its own: Python
gives it its type's (``dict``'s). Its doc is the ``#:`` comment (or the string literal) at its
assignment, in whichever module of the package defines it; autodoc looks only in the module it
is documented under (the package that re-exports it), so this extension finds it.
"""

from __future__ import annotations

import importlib
import inspect
import re
import sys
import types

# The modules whose __all__ the API reference covers (docs/api.rst lists each of their names
# under its concept; absgd_jax.losses is also a public name of absgd_jax).
API_MODULES = ("absgd_jax", "absgd_jax.losses", "absgd_jax.train")


def public_names(module_name: str) -> list[tuple[str, object]]:
  """``(name, object)`` for each name in the module's ``__all__``."""
  module = importlib.import_module(module_name)
  return [(name, getattr(module, name)) for name in module.__all__]


def is_data(obj: object) -> bool:
  """A value rather than a function, class or module: its doc is a comment at its assignment."""
  return not (callable(obj) or isinstance(obj, types.ModuleType))


def data_doc(package_name: str, name: str, obj: object) -> str:
  """The doc of the value ``obj``, exported as ``package_name.name``, from the module that
  assigns it (its ``#:`` comment or the string after it), or "" if it has none."""
  from sphinx.pycode import ModuleAnalyzer

  importlib.import_module(package_name)
  # The defining module was imported with the package; no module is imported (or run) here.
  modules = sorted(m for m in sys.modules if m == package_name or m.startswith(package_name + "."))
  for module_name in modules:
    module = sys.modules[module_name]
    if getattr(module, name, None) is not obj:
      continue
    try:
      docs = ModuleAnalyzer.for_module(module_name).find_attr_docs()
    except Exception:  # noqa: BLE001 (a module without source has no comments to read)
      continue
    if ("", name) in docs:
      return inspect.cleandoc("\n".join(docs["", name]))
  return ""


def _fill_data_doc(app, what, name, obj, options, lines):
  """autodoc-process-docstring: a value shows the doc at its assignment, not its type's."""
  if what != "data" or not is_data(obj):
    return
  package_name, _, short = name.rpartition(".")
  doc = data_doc(package_name, short, obj)
  if doc:
    lines[:] = doc.splitlines() + [""]


# autodoc_type_aliases names an alias in a signature, but Sphinx writes an alias inside a union
# (``ArrayLike | None``) as the repr of its placeholder, ``TypeAliasForwardRef('ArrayLike')``.
_ALIAS_REPR = re.compile(r"TypeAliasForwardRef\('([^']+)'\)")


def _plain_aliases(app, what, name, obj, options, signature, return_annotation):
  """autodoc-process-signature: an alias reads as its name wherever it stands."""
  if signature is None and return_annotation is None:
    return None
  fix = lambda s: None if s is None else _ALIAS_REPR.sub(r"\1", s)
  return fix(signature), fix(return_annotation)


# Abbreviations that end in a period inside a sentence of this package's docstrings.
ABBREVIATIONS = ("Eq.", "Eqs.", "Fig.", "Sec.", "Alg.", "cf.")


def setup(app):
  from sphinx.ext import autosummary

  # autosummary reads this tuple each time it cuts a summary. A space or an opening parenthesis
  # before each entry ("the paper's Eq. (2)", "(Eq. 6)") keeps it from matching another word.
  extra = tuple(f"{before}{a}" for a in ABBREVIATIONS for before in (" ", "("))
  autosummary.WELL_KNOWN_ABBREVIATIONS = tuple(
    dict.fromkeys(autosummary.WELL_KNOWN_ABBREVIATIONS + extra)
  )
  app.connect("autodoc-process-signature", _plain_aliases)
  # Before napoleon (priority 500), so that the filled-in doc gets its sections rendered too.
  app.connect("autodoc-process-docstring", _fill_data_doc, priority=400)
  return {"parallel_read_safe": True, "parallel_write_safe": True}
