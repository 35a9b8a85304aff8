"""Every Python block of the README and of each docs page runs as written.

A page's blocks run in order in one namespace, as a reader pasting them one after another
would run them, from an empty folder (what a page writes lands there). A block that only shows
the shape of some code is written as a ``code-block`` whose caption starts with "A sketch",
which the reader sees above it; it is the only kind of Python block left out.

The examples/ scripts that the pages include (``literalinclude``) run in their own tests
(tests/test_readme.py, tests/test_accumulation.py); the notebook runs in the docs build
(tests/test_docs_site.py).
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import re

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
SKETCH = "A sketch"
PYTHON = {"python", "py", "python3"}
# Directive fences whose body holds code; any other directive's body is Markdown again.
CODE_DIRECTIVES = {"{code-block}", "{code}", "{sourcecode}"}

_FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`]*)$")


@dataclasses.dataclass
class Block:
  """A fenced block: its info string, directive options, body and first body line."""

  info: str
  options: dict
  body: str
  line: int

  @property
  def language(self) -> str:
    words = self.info.split()
    if not words:
      return ""
    if words[0] in CODE_DIRECTIVES:
      return words[1] if len(words) > 1 else ""
    return words[0]

  @property
  def is_python(self) -> bool:
    return self.language in PYTHON

  @property
  def is_sketch(self) -> bool:
    return self.options.get("caption", "").startswith(SKETCH)


def _options(info: str, lines: list[str]) -> tuple[dict, list[str], int]:
  """A directive's ``:key: value`` options at the top of its body, the rest, lines used."""
  if not info.startswith("{"):
    return {}, lines, 0
  opts, i = {}, 0
  while i < len(lines) and (m := re.match(r"^:([\w-]+):\s*(.*)$", lines[i])):
    opts[m.group(1)] = m.group(2).strip()
    i += 1
  if i < len(lines) and not lines[i].strip():
    i += 1
  return opts, lines[i:], i


def fenced_blocks(text: str, first_line: int = 1) -> list[Block]:
  """The fenced blocks of a Markdown text, looking inside directives such as notes."""
  lines, blocks, i = text.splitlines(), [], 0
  while i < len(lines):
    m = _FENCE.match(lines[i])
    if not m:
      i += 1
      continue
    fence, info = m.group("fence"), m.group("info").strip()
    closing = re.compile(rf"^ {{0,3}}{re.escape(fence[0])}{{{len(fence)},}}\s*$")
    j = i + 1
    while j < len(lines) and not closing.match(lines[j]):
      j += 1
    body = lines[i + 1 : j]
    opts, body, skipped = _options(info, body)
    start = first_line + i + 1 + skipped
    word = info.split()[0] if info.split() else ""
    if word.startswith("{") and word not in CODE_DIRECTIVES:
      blocks.extend(fenced_blocks("\n".join(body), start))  # a note, a tip: Markdown inside
    else:
      blocks.append(Block(info, opts, "\n".join(body) + "\n", start))
    i = j + 1
  return blocks


def _pages() -> list[pathlib.Path]:
  pages = [REPO / "README.md"] + sorted(DOCS.rglob("*.md"))
  return [p for p in pages if "_build" not in p.parts and "_autosummary" not in p.parts]


def _runnable(page: pathlib.Path) -> list[Block]:
  return [b for b in fenced_blocks(page.read_text()) if b.is_python and not b.is_sketch]


PAGES = [p for p in _pages() if _runnable(p)]


def run_page(page: pathlib.Path) -> dict:
  """Runs the page's Python blocks in order in one namespace; returns the namespace."""
  namespace = {"__name__": f"docs_page_{page.stem}"}
  for block in _runnable(page):
    code = compile(block.body, f"{page.relative_to(REPO)}:{block.line}", "exec")
    exec(code, namespace)
  return namespace


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(REPO)) for p in PAGES])
def test_page_runs_as_written(page, tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  environ = dict(os.environ)  # A page may set XLA_FLAGS for a fresh process; not for the suite.
  try:
    run_page(page)
  finally:
    os.environ.clear()
    os.environ.update(environ)
    import matplotlib.pyplot as plt

    plt.close("all")


def test_the_pages_with_code_are_found():
  found = {str(p.relative_to(REPO)) for p in PAGES}
  for page in (
    "README.md",
    "docs/getting_started.md",
    "docs/distributed.md",
    "docs/checkpoints.md",
    "docs/choosing_lam.md",
    "docs/sweeps.md",
    "docs/gradient_accumulation.md",
  ):
    assert page in found, f"{page} has no Python block the runner would run"


def test_every_python_block_either_runs_or_says_it_is_a_sketch():
  for page in _pages():
    for block in fenced_blocks(page.read_text()):
      if block.language.lower() in {"pycon", "ipython", "python2"}:
        pytest.fail(f"{page}:{block.line}: a {block.language} block the runner would not run")
      if block.options.get("caption", "").lower().startswith("a sketch"):
        assert block.is_sketch, f"{page}:{block.line}: write the caption as '{SKETCH}, ...'"


def test_the_parser_reads_fences_directives_and_sketches():
  text = "\n".join(
    [
      "Text.",
      "```python",
      "x = 1",
      "```",
      "````{note}",
      "```python",
      "y = x + 1",
      "```",
      "````",
      "```{code-block} python",
      ":caption: A sketch, not meant to run: `model` is yours.",
      "",
      "model.apply(params, x)",
      "```",
      "```bash",
      "echo hi",
      "```",
    ]
  )
  blocks = fenced_blocks(text)
  assert [(b.language, b.is_sketch, b.line) for b in blocks] == [
    ("python", False, 3),
    ("python", False, 7),
    ("python", True, 13),
    ("bash", False, 16),
  ]
  assert blocks[1].body == "y = x + 1\n" and blocks[2].body == "model.apply(params, x)\n"
