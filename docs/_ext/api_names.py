"""The public names the API reference documents, and the docs of the data among them.

A Sphinx extension (listed in docs/conf.py) and a helper of tests/test_api_docs.py, so the site
and the test that checks it agree on what "every public name" is.

A module-level value such as ``absgd_jax.train.PRESETS`` has no docstring of its own: Python
gives it its type's (``dict``'s). Its doc is the ``#:`` comment (or the string literal) at its
assignment, in whichever module of the package defines it; autodoc looks only in the module it
is documented under (the package that re-exports it), so this extension finds it.
"""

from __future__ import annotations

import importlib
import inspect
import sys
import types

# The modules whose __all__ the API reference covers (docs/api.md lists absgd_jax and
# absgd_jax.train; absgd_jax.losses is a public name of absgd_jax).
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


def setup(app):
  # Before napoleon (priority 500), so that the filled-in doc gets its sections rendered too.
  app.connect("autodoc-process-docstring", _fill_data_doc, priority=400)
  return {"parallel_read_safe": True, "parallel_write_safe": True}
