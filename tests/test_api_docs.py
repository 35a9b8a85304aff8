"""Every public name has an example that runs, and is listed in the API reference.

The names are those of each API module's ``__all__`` (docs/_ext/api_names.py, which the site's
build uses too). Functions, classes and modules carry their examples in their docstrings, which
``pytest --doctest-modules`` runs; a module-level value (``absgd_jax.train.PRESETS``) carries
them in the comment at its assignment, which only this test runs. That each name gets a page
with its signature and example is checked on the built site (tests/test_docs_site.py).
"""

import doctest
import importlib
import inspect
import os
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "docs", "_ext"))
import api_names  # noqa: E402

NAMES = [(m, name, obj) for m in api_names.API_MODULES for name, obj in api_names.public_names(m)]
IDS = [f"{m}.{name}" for m, name, _ in NAMES]


def _own_doc(obj) -> str:
  """The docstring written for ``obj`` itself, not one it inherits from a base class."""
  if inspect.isclass(obj):
    return inspect.cleandoc(obj.__dict__.get("__doc__") or "")
  return inspect.getdoc(obj) or ""


def _listed_in_api_rst() -> list[str]:
  """The names the reference lists, as ``module.name``: each autosummary entry of api.rst,
  under the ``currentmodule`` it follows (the module pages come first, under none)."""
  with open(os.path.join(REPO, "docs", "api.rst")) as f:
    lines = f.read().splitlines()
  listed, module, in_table = [], None, False
  for line in lines:
    if line.startswith(".. currentmodule::"):
      module = line.split("::")[1].strip()
    elif line.startswith(".. autosummary::"):
      in_table = True
    elif in_table and line.startswith("   ") and not line.strip().startswith(":"):
      name = line.strip()
      listed.append(f"{module}.{name}" if module else name)
    elif in_table and line and not line.startswith(" "):
      in_table = False
  return listed


def test_the_reference_covers_the_three_public_modules():
  assert api_names.API_MODULES == ("absgd_jax", "absgd_jax.losses", "absgd_jax.train")
  assert "losses" in importlib.import_module("absgd_jax").__all__  # its page hangs off absgd_jax
  listed = _listed_in_api_rst()
  for module in api_names.API_MODULES:
    assert module in listed, f"docs/api.rst does not list the module {module}"


def test_the_reference_lists_each_public_name_once_under_its_concept():
  listed = _listed_in_api_rst()
  names = {f"{m}.{name}" for m, name, _ in NAMES if not (m == "absgd_jax" and name == "losses")}
  names |= set(api_names.API_MODULES)
  missing = sorted(names - set(listed))
  assert not missing, f"add these public names to docs/api.rst, under their concept: {missing}"
  twice = sorted({n for n in listed if listed.count(n) > 1})
  assert not twice, f"docs/api.rst lists these more than once: {twice}"
  unknown = sorted(set(listed) - names)
  assert not unknown, f"docs/api.rst lists names that are not public: {unknown}"


@pytest.mark.parametrize("module,name,obj", NAMES, ids=IDS)
def test_each_public_name_has_an_examples_section(module, name, obj):
  doc = api_names.data_doc(module, name, obj) if api_names.is_data(obj) else _own_doc(obj)
  assert doc, f"{module}.{name} has no docstring of its own"
  assert "Examples:" in doc, f"{module}.{name}'s docstring has no Examples: section"
  examples = doc[doc.index("Examples:") :]
  assert ">>>" in examples, f"{module}.{name}'s Examples: section has no >>> example"


@pytest.mark.parametrize(
  "module,name,obj",
  [n for n in NAMES if api_names.is_data(n[2])],
  ids=[i for i, n in zip(IDS, NAMES) if api_names.is_data(n[2])],
)
def test_examples_of_module_values_run(module, name, obj):
  doc = api_names.data_doc(module, name, obj)
  globs = dict(vars(importlib.import_module(module)))
  test = doctest.DocTestParser().get_doctest(doc, globs, f"{module}.{name}", module, 0)
  assert test.examples, f"{module}.{name}: no examples found"
  flags = doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS
  runner = doctest.DocTestRunner(optionflags=flags)
  runner.run(test)
  assert runner.failures == 0, f"{module}.{name}: {runner.failures} example(s) failed (see above)"
