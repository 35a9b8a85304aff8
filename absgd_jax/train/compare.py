"""``absgd-train --compare DIR...``: the runs under some folders, side by side.

A run folder is one whose ``config.json`` holds a run's settings (``"config"``); a sweep's own
folder holds its grid too (``"sweep"``), and its members, each a run folder, sit in its
subfolders. :func:`find_runs` finds every run under the folders given, at any depth
(``runs/`` holds ``runs/<preset>/<method>-lam5-1a2b3c4d``); :func:`compare` lays them out as a
table: each run's folder, only the settings that differ between them (by key, from
``config.json``), and its final metrics with the epoch it reached. A finished run's come from
``summary.json``'s ``final``; a run that is still training, was stopped or diverged has none
(or an older one, when it was resumed for more epochs), and shows the last line of its
``metrics.jsonl`` instead, marked ``unfinished``.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Sequence
from typing import Any

from etils import epath

from absgd_jax.train.config import Config
from absgd_jax.train.run_folder import CONFIG_FILE, config_to_dict

# The final metrics shown, in this order, each where some run has it.
METRICS = ("test_acc", "test_balanced_acc", "val_balanced_acc")
# A run folder's own subfolders, which hold no runs.
_NOT_RUNS = ("checkpoints", "tensorboard")
# Settings every run has its own of, which the folder column shows already.
_NOT_COMPARED = ("out_dir",)


def _natural(name: str) -> tuple:
  """``lam=2`` before ``lam=10``: digits compare as numbers."""
  return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"(\d+)", name))


def _read_json(path: epath.Path) -> Any:
  try:
    return json.loads(path.read_text())
  except (OSError, json.JSONDecodeError):
    return None


def _run_settings(folder: epath.Path) -> dict[str, Any] | None:
  """The settings of the run in ``folder`` (its ``config.json``'s ``"config"``), or None
  when it holds no run (no such file, not a run's, or a sweep's own folder)."""
  record = _read_json(folder / CONFIG_FILE)
  if not isinstance(record, dict) or "sweep" in record:
    return None
  settings = record.get("config")
  return settings if isinstance(settings, dict) and "method" in settings else None


def find_runs(dirs: Sequence[str]) -> list[epath.Path]:
  """Every run folder under ``dirs`` (each one itself, or any folder below it), in the order
  given, the folders below each in name order; each run once.

  Raises:
    FileNotFoundError: naming the folders of ``dirs`` that do not exist.
  """
  missing = [d for d in dirs if not epath.Path(d).is_dir()]
  if missing:
    raise FileNotFoundError(f"--compare: no such folder: {', '.join(missing)}")
  found: list[epath.Path] = []

  def walk(folder: epath.Path) -> None:
    if _run_settings(folder) is not None:
      found.append(folder)
      return  # Its subfolders are its checkpoints and event files.
    children = [p for p in folder.iterdir() if p.is_dir() and p.name not in _NOT_RUNS]
    for child in sorted(children, key=lambda p: _natural(p.name)):
      walk(child)

  for d in dirs:
    walk(epath.Path(d))
  return list(dict.fromkeys(found))


def _last_record(folder: epath.Path) -> dict[str, Any] | None:
  path = folder / "metrics.jsonl"
  if not path.exists():
    return None
  for line in reversed(path.read_text().splitlines()):
    try:
      record = json.loads(line)
    except json.JSONDecodeError:
      continue  # A line cut short: the one before it is the last whole epoch.
    if isinstance(record, dict) and "epoch" in record:
      return record
  return None


def read_run(folder: str | epath.Path) -> dict[str, Any]:
  """What :func:`compare` shows of one run: ``path``, ``config`` (every setting by key, the
  ones its ``config.json`` predates at their defaults), ``final`` (its last epoch's record,
  ``{}`` before the first) and ``finished`` (whether ``final`` is its ``summary.json``'s).

  Examples:
    >>> import tempfile
    >>> from absgd_jax.train import make_config
    >>> from absgd_jax.train.run_folder import write_run_config
    >>> folder = tempfile.mkdtemp()
    >>> write_run_config(make_config("digits-lt", out_dir=folder))
    >>> with open(f"{folder}/metrics.jsonl", "w") as f:
    ...   _ = f.write('{"epoch": 0, "test_acc": 0.5}\\n')
    >>> run = read_run(folder)
    >>> run["final"], run["finished"], run["config"]["lam"]
    ({'epoch': 0, 'test_acc': 0.5}, False, 5.0)
  """
  folder = epath.Path(folder)
  saved = _run_settings(folder) or {}
  config = {**config_to_dict(Config()), **saved}  # as config.json writes them: "inf", lists
  summary = _read_json(folder / "summary.json")
  final = summary.get("final") if isinstance(summary, dict) else None
  last = _last_record(folder)
  # A summary older than the metrics is that of a shorter run this one was resumed from.
  finished = bool(final) and (last is None or last["epoch"] <= final.get("epoch", -1))
  return {
    "path": str(folder),
    "config": config,
    "final": final if finished else (last or {}),
    "finished": finished,
  }


def _comparable(value: Any) -> str:
  return json.dumps(value, sort_keys=True)


def differing(runs: Sequence[dict[str, Any]]) -> list[str]:
  """The settings (keys, in the order declared) whose values are not the same in every run.

  Examples:
    >>> differing([{"config": {"lam": 5.0, "seed": 0, "lr": 0.1}},
    ...            {"config": {"lam": 2.0, "seed": 0, "lr": 0.1}}])
    ['lam']
  """
  keys = list(dict.fromkeys(k for r in runs for k in r["config"]))
  return [
    k
    for k in keys
    if k not in _NOT_COMPARED and len({_comparable(r["config"].get(k)) for r in runs}) > 1
  ]


def _show(value: Any) -> str:
  if value is None:
    return "-"
  if isinstance(value, bool):
    return "true" if value else "false"
  if isinstance(value, float):
    return f"{value:g}"
  if isinstance(value, (list, tuple)):
    return ",".join(_show(v) for v in value) or "()"
  return str(value)


def table(runs: Sequence[dict[str, Any]]) -> str:
  """The runs (:func:`read_run`'s records) as a text table: folder, the settings that
  differ, the final metrics any of them has, the epoch reached, finished or not."""
  keys = differing(runs)
  metrics = [m for m in METRICS if any(r["final"].get(m) is not None for r in runs)]
  head = ["run", *keys, *metrics, "epoch", "state"]
  rows = []
  for r in runs:
    final, epochs = r["final"], r["config"].get("epochs")
    reached = f"{final['epoch'] + 1}/{epochs}" if "epoch" in final else f"0/{epochs}"
    state = "finished" if r["finished"] else ("unfinished" if final else "no epoch yet")
    rows.append(
      [
        r["path"],
        *(_show(r["config"].get(k)) for k in keys),
        *("-" if final.get(m) is None else f"{final[m]:.4f}" for m in metrics),
        reached,
        state,
      ]
    )
  widths = [max(len(row[i]) for row in [head, *rows]) for i in range(len(head))]

  def line(cells: Sequence[str]) -> str:
    # The folder and the state read left-aligned; settings and numbers right-aligned.
    return "  ".join(
      c.ljust(w) if i in (0, len(cells) - 1) else c.rjust(w)
      for i, (c, w) in enumerate(zip(cells, widths))
    ).rstrip()

  if len(runs) == 1:
    first = "1 run"
  elif keys:
    first = f"{len(runs)} runs; settings that differ: {', '.join(keys)}"
  else:
    first = f"{len(runs)} runs; every setting is the same"
  return "\n".join([first, line(head), *(line(row) for row in rows)])


def compare(dirs: Sequence[str]) -> str:
  """The table of the runs under ``dirs`` (:func:`find_runs`, :func:`table`).

  Raises:
    FileNotFoundError: for a folder of ``dirs`` that does not exist.
    ValueError: when no run is found under them, saying what a run folder holds.
  """
  found = find_runs(dirs)
  if not found:
    raise ValueError(
      f"--compare: no run found under {', '.join(dirs)}: a run's folder holds the "
      f"{CONFIG_FILE} that absgd-train writes there (e.g. runs/digits-lt/absgd-lam5-1a2b3c4d)."
    )
  return table([read_run(p) for p in found])


def main(dirs: Sequence[str]) -> int:
  """``absgd-train --compare DIR...``: prints the table; exit status 0, or 2 with one
  ``error:`` line when a folder is missing or holds no run."""
  try:
    text = compare(dirs)
  except (FileNotFoundError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(text)
  return 0
