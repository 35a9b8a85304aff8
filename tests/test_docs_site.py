"""The documentation site builds with warnings as errors, and reads offline.

One build (it executes the quickstart notebook, so it is the slowest part), checked for:

- a page with a signature and an example for each public name (docs/_ext/api_names.py says
  which names are public);
- nothing loaded from the network: no script, style sheet, image or font comes from an
  ``http(s)://`` or ``//`` address, and the math is typeset by the MathJax copied into
  ``_static/``;
- summaries in the reference that are whole sentences, and signatures that name type aliases;
- a copy button on code blocks;
- the figures each result page discusses, shown on it;
- the notebook's outputs, produced by running it.
"""

import html
import os
import pathlib
import re
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "docs" / "_ext"))
import api_names  # noqa: E402

NAMES = [(m, name, obj) for m in api_names.API_MODULES for name, obj in api_names.public_names(m)]

# A tag's attribute that makes the browser fetch something (a link's href only for the kinds
# of link that load: style sheets, icons, fonts, preloads).
_TAG = re.compile(r"<(script|img|link|source|iframe)\b([^>]*)>", re.I)
_ATTR = re.compile(r"\b(src|href)\s*=\s*\"([^\"]*)\"", re.I)


def _fetched_urls(page: str) -> list[str]:
  urls = []
  for tag, attrs in _TAG.findall(page):
    if tag.lower() == "link" and not re.search(r'rel="[^"]*(stylesheet|icon|preload)', attrs):
      continue
    urls += [url.split("?")[0] for _, url in _ATTR.findall(attrs)]  # no cache-busting suffix
  return urls


def _text(fragment: str) -> str:
  return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", "", fragment))).strip()


def build(tmp: pathlib.Path) -> pathlib.Path:
  """Builds the site into ``tmp/html`` as CI does; returns that folder."""
  if os.environ.get("ABSGD_DOCS_SITE"):  # A site built already, to rerun the checks alone.
    return pathlib.Path(os.environ["ABSGD_DOCS_SITE"])
  out = tmp / "html"
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
      str(tmp / "doctrees"),
      str(REPO / "docs"),
      str(out),
    ],
    capture_output=True,
    text=True,
    cwd=REPO,
    timeout=900,
  )
  assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
  return out


def test_the_site_builds_and_reads_offline(tmp_path):
  # One test, not one per check: the build is most of the time, and pytest-xdist would build
  # it once per worker that runs a check.
  pytest.importorskip("sphinx")
  pytest.importorskip("myst_nb")
  pytest.importorskip("furo")
  site = build(tmp_path)
  check_each_public_name_has_a_page_with_signature_and_example(site)
  check_nothing_is_loaded_from_the_network(site)
  check_math_is_typeset_by_the_bundled_mathjax(site)
  check_reference_summaries_are_whole_sentences_and_aliases_keep_their_names(site)
  check_code_blocks_get_a_copy_button(site)
  check_result_pages_show_the_figures_they_discuss(site)
  check_the_notebook_ran(site)


def check_each_public_name_has_a_page_with_signature_and_example(site):
  for module, name, obj in NAMES:
    page = site / "_autosummary" / f"{module}.{name}.html"
    assert page.exists(), f"no API page for {module}.{name}"
    text = page.read_text()
    assert "Examples" in text, f"{module}.{name}'s page shows no example"
    if not isinstance(obj, type(sys)):
      assert 'class="sig ' in text, f"{module}.{name}'s page shows no signature"


def check_nothing_is_loaded_from_the_network(site):
  pages = sorted(site.rglob("*.html"))
  assert len(pages) > 50
  for page in pages:
    for url in _fetched_urls(page.read_text()):
      assert not re.match(r"^(https?:)?//", url), f"{page.relative_to(site)} loads {url}"
  for sheet in site.rglob("*.css"):
    for url in re.findall(r"url\(\s*['\"]?([^'\")]+)", sheet.read_text(errors="replace")):
      assert not re.match(r"^(https?:)?//", url), f"{sheet.relative_to(site)} loads {url}"


def check_math_is_typeset_by_the_bundled_mathjax(site):
  method = (site / "method.html").read_text()
  scripts = [u for u in _fetched_urls(method) if "mathjax" in u.lower()]
  assert scripts == ["_static/mathjax/tex-chtml.js"], scripts
  assert (site / "_static" / "mathjax" / "tex-chtml.js").stat().st_size > 100_000
  # The fonts MathJax's CHTML output asks for sit beside it.
  assert list((site / "_static" / "mathjax" / "output" / "chtml" / "fonts").rglob("*.woff"))
  assert r"\tilde p_i" in method  # Eq. (8), left for MathJax to typeset


def check_reference_summaries_are_whole_sentences_and_aliases_keep_their_names(site):
  api = (site / "api.html").read_text()
  rows = {
    _text(m.group(1)): _text(m.group(2))
    for m in re.finditer(r'<tr class="row-(?:odd|even)"><td>(.*?)</td>\s*<td>(.*?)</td>', api, re.S)
  }
  assert rows["absgd"] == "Momentum SGD with an L2 term: the paper's Eq. (2)."
  assert rows["abadam"].endswith("as in the paper's Eq. (9).")
  assert rows["dro_objective"].endswith("(Eq. 6).")
  page = (site / "_autosummary" / "absgd_jax.absgd_weights.html").read_text()
  sig = _text(re.search(r'<dt class="sig sig-object py".*?</dt>', page, re.S).group(0))
  assert "LamSchedule" in sig and "AxisName | None" in sig, sig
  focal = (site / "_autosummary" / "absgd_jax.losses.focal_loss.html").read_text()
  sig = _text(re.search(r'<dt class="sig sig-object py".*?</dt>', focal, re.S).group(0))
  assert "logits: ArrayLike" in sig and "class_weights: ArrayLike | None" in sig, sig
  assert "ndarray" not in sig and "TypeAliasForwardRef" not in sig, sig


def check_code_blocks_get_a_copy_button(site):
  page = (site / "getting_started.html").read_text()
  assert "_static/copybutton.js" in _fetched_urls(page)
  assert (site / "_static" / "copybutton.js").exists()


def _expand_braces(name: str) -> list[str]:
  """``a_{LT,ST}.png`` -> ``a_LT.png``, ``a_ST.png``, as the pages write a pair of files."""
  m = re.search(r"\{([^{}]*)\}", name)
  if not m:
    return [name]
  return [
    x
    for part in m.group(1).split(",")
    for x in _expand_braces(name[: m.start()] + part + name[m.end() :])
  ]


def check_result_pages_show_the_figures_they_discuss(site):
  for source in sorted((REPO / "docs" / "results").glob("*.md")):
    text = source.read_text()
    shown = re.findall(r"^```\{figure\} (\S+)$", text, re.M)
    for path in shown:
      assert (source.parent / path).resolve().is_file(), f"{source.name}: no file {path}"
    mentioned = {
      os.path.basename(n) for m in re.findall(r"[\w./{},-]+\.png", text) for n in _expand_braces(m)
    }
    missing = mentioned - {os.path.basename(p) for p in shown}
    assert not missing, f"{source.name} names {sorted(missing)} but does not show them"
    page = (site / "results" / f"{source.stem}.html").read_text()
    figures = re.findall(r"<figure\b.*?</figure>", page, re.S)
    assert len(figures) == len(shown), f"{source.name}: {len(shown)} figures, {len(figures)} shown"
    for figure in figures:
      src = re.search(r'<img[^>]*src="([^"]+)"', figure).group(1)
      assert (site / "results" / src).resolve().is_file(), f"{source.name}: {src} not in the site"
      caption = re.search(r"<figcaption>(.*?)</figcaption>", figure, re.S)
      assert caption and len(_text(caption.group(1))) > 40, f"{source.name}: {src} has no caption"
  shown_anywhere = set()
  for source in (REPO / "docs" / "results").glob("*.md"):
    shown_anywhere |= {
      os.path.basename(p) for p in re.findall(r"^```\{figure\} (\S+)$", source.read_text(), re.M)
    }
  for figure in (REPO / "experiments" / "figures").glob("*.png"):
    assert figure.name in shown_anywhere, f"no result page shows {figure.relative_to(REPO)}"


def check_the_notebook_ran(site):
  page = (site / "quickstart.html").read_text()
  # The printed table and the plot are outputs of the build's own run, not stored ones.
  assert "rare classes" in _text(page) and "best epoch" in _text(page)
  assert re.search(r'<img[^>]*src="_images/[0-9a-f]{20,}\.png"', page), "no plot in the notebook"
  stored = (REPO / "docs" / "quickstart.ipynb").read_text()
  assert '"outputs": []' in stored and '"image/png"' not in stored, "store it without outputs"
