"""Every public name has an example that runs and a page in the API reference.

The names are those of each API module's ``__all__`` (docs/_ext/api_names.py, which the site's
build uses too). Functions, classes and modules carry their examples in their docstrings, which
``pytest --doctest-modules`` runs; a module-level value (``absgd_jax.train.PRESETS``) carries
them in the comment at its assignment, which only this test runs.
"""

import doctest
import importlib
import inspect
import os
import subprocess
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


def test_the_reference_covers_the_three_public_modules():
  assert api_names.API_MODULES == ("absgd_jax", "absgd_jax.losses", "absgd_jax.train")
  assert "losses" in importlib.import_module("absgd_jax").__all__  # its page hangs off absgd_jax
  with open(os.path.join(REPO, "docs", "api.md")) as f:
    listed = f.read()
  for module in ("absgd_jax", "absgd_jax.train"):
    assert f"\n   {module}\n" in listed, module


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


def test_the_site_has_a_page_with_signature_and_example_for_each_public_name(tmp_path):
  pytest.importorskip("sphinx")
  pytest.importorskip("myst_parser")
  pytest.importorskip("furo")
  out = tmp_path / "html"
  # Warnings are errors, as in CI: a docstring the reference cannot render fails here too.
  proc = subprocess.run(
    [
      sys.executable,
      "-m",
      "sphinx",
      "-W",
      "--keep-going",
      "-q",
      "-b",
      "html",
      "-d",
      str(tmp_path / "doctrees"),
      os.path.join(REPO, "docs"),
      str(out),
    ],
    capture_output=True,
    text=True,
    cwd=REPO,
    timeout=600,
  )
  assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
  for module, name, obj in NAMES:
    page = out / "_autosummary" / f"{module}.{name}.html"
    assert page.exists(), f"no API page for {module}.{name}"
    html = page.read_text()
    assert "Examples" in html, f"{module}.{name}'s page shows no example"
    if not isinstance(obj, type(sys)):
      assert 'class="sig ' in html, f"{module}.{name}'s page shows no signature"
