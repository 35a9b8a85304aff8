"""What the accuracy experiments share: one JSONL file of run records per experiment.

Each finished run appends one line (a JSON record with a unique ``"key"``) to its
experiment's file under ``experiments/results/``. Running a script again skips the keys
already there, so an interrupted experiment resumes from its last finished run, and tables
and plots are rebuilt from the file alone (``--report``), without retraining.

A new experiment is a module beside this one, run as ``python -m experiments.NAME``::

    from experiments import common
    results = common.results_path("my_table")        # experiments/results/my_table.jsonl
    rec = common.train_once(results, key, config, {"method": ..., "seed": ...})
    ...
    records = common.read_records(results)          # for --report

``train_once`` trains an ``absgd_jax.train`` config; a script that measures something else
appends its own records with ``append_record`` and skips ``find(results, key)`` hits. Scripts
whose runs are identified by their fields rather than a chosen key use ``run_key(fields)`` and
``train_record`` (the same training, a record with more per-epoch detail). ``short_lt`` is
the 20-epoch CIFAR-10-LT config shared by the figure scripts, and ``CACHE`` the folder for
jax's persistent compilation cache. The paper's tables share a runner of their own,
:mod:`experiments.tables`, built on these records.

Several workers may share one experiment: each claims a run with a lock file before training
it, and a record is appended with a single ``write`` to a file opened for appending, which
Linux keeps whole between processes on a local disk.
"""

from __future__ import annotations

import json
import os
import statistics
import time
import warnings
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "experiments", "results")
RUNS = os.path.join(ROOT, "runs")  # Training folders and locks; ignored by git.
REPO = ROOT
CACHE = os.path.join(RUNS, "jax_cache")  # jax's persistent compilation cache.
# The shared CIFAR-10 JPEG copy beside the checkout: every script's default --data-dir.
DATA_DIR = os.path.normpath(os.path.join(ROOT, "..", "shared", "data", "cifar10-jpeg"))
HISTORY_KEYS = (
  "epoch",
  "train_acc",
  "test_acc",
  "val_acc",
  "class_mean_weight",
  "flipped_mean_weight",
  "clean_mean_weight",
  "lam",
  "ess_mean",
  "kl_mean",
  "collapsed_classes",
)


def slug(text: str) -> str:
  return "".join(c if c.isalnum() else "_" for c in text)


def read_records(path: str) -> list[dict[str, Any]]:
  """The records in ``path`` (none if it does not exist yet), in the order they were written."""
  if not os.path.exists(path):
    return []
  with open(path) as f:
    lines = f.read().split("\n")
  records = []
  for i, line in enumerate(lines):
    if not line.strip():
      continue
    try:
      records.append(json.loads(line))
    except json.JSONDecodeError:
      if i == len(lines) - 1:  # No newline after it: a write cut short. Its run reruns.
        warnings.warn(f"{path}: ignoring an unfinished last line")
        continue
      raise ValueError(f"{path}:{i + 1}: not a JSON record: {line[:80]!r}") from None
  return records


def find(path: str, key: str) -> dict[str, Any] | None:
  return next((r for r in read_records(path) if r.get("key") == key), None)


def append_record(path: str, record: dict[str, Any]) -> None:
  """Appends ``record`` (which must have a ``"key"``) to ``path`` as one line."""
  if "key" not in record:
    raise ValueError(f"a record needs a 'key' to resume by; got fields {sorted(record)}")
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  data = (json.dumps(record) + "\n").encode()
  fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
  try:
    if os.write(fd, data) != len(data):
      raise OSError(f"{path}: short write of a record; remove its last line and rerun")
  finally:
    os.close(fd)


def claim(lock: str) -> bool:
  """Claims a run for this process with the lock file ``lock`` (made with O_EXCL), so that
  several workers share one queue without training a run twice. A lock whose process has died
  is taken over."""
  os.makedirs(os.path.dirname(lock) or ".", exist_ok=True)
  for _ in range(2):
    try:
      fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
      try:
        with open(lock) as f:
          pid = int(f.read().strip() or 0)
        os.kill(pid, 0)  # Raises if that process is gone.
        return False
      except (ProcessLookupError, ValueError, FileNotFoundError):
        try:
          os.remove(lock)
        except FileNotFoundError:
          pass
        continue
    with os.fdopen(fd, "w") as f:
      f.write(str(os.getpid()))
    return True
  return False


def results_path(experiment: str) -> str:
  """``experiments/results/EXPERIMENT.jsonl``, the default record file of an experiment."""
  return os.path.join(RESULTS, experiment + ".jsonl")


def figure_parser(doc: str, name: str):
  """The command line every figure script shares: ``--out`` (``experiments/figures/NAME.png``),
  ``--records`` (:func:`results_path`), ``--data-dir`` and ``--tiny``."""
  import argparse

  ap = argparse.ArgumentParser(description=doc.split("\n")[0])
  ap.add_argument("--out", default=os.path.join(ROOT, "experiments", "figures", name + ".png"))
  ap.add_argument("--records", default=results_path(name))
  ap.add_argument("--data-dir", default=DATA_DIR)
  ap.add_argument("--tiny", action="store_true", help="a seconds-long smoke run")
  return ap


def run_dir(results: str, key: str) -> str:
  """The training folder (checkpoints, metrics) of one run of the record file ``results``,
  under the ignored ``runs/``: ``runs/<its name>/<key>``."""
  return os.path.join(RUNS, os.path.splitext(os.path.basename(results))[0], key)


def locks_held(results: str) -> bool:
  """Whether some worker is still training a run for the record file ``results``."""
  folder = os.path.dirname(run_dir(results, "x"))
  return os.path.isdir(folder) and any(p.endswith(".lock") for p in os.listdir(folder))


def _train(config: Any):
  """Trains ``config``: (the Trainer, its summary, wall seconds, CPU seconds)."""
  from absgd_jax.train import Trainer

  t0, c0 = time.time(), time.process_time()
  trainer = Trainer(config, progress=False, log=False)
  [summary] = trainer.fit()
  return trainer, summary, time.time() - t0, time.process_time() - c0


def run_key(fields: dict[str, Any]) -> str:
  """A run's identity when its fields are all there is to it: the fields, order-free."""
  return json.dumps(fields, sort_keys=True)


def load_jsonl(path: str) -> dict[str, dict[str, Any]]:
  """The finished runs of ``path`` by their ``key``."""
  return {r["key"]: r for r in read_records(path)}


def train_record(
  path: str, fields: dict[str, Any], config: Any, done: dict[str, dict[str, Any]]
) -> dict[str, Any]:
  """Trains ``config`` unless ``done`` (:func:`load_jsonl`) has ``fields``' run; appends the
  record to ``path`` and returns it. The record keeps the best test epoch, the final
  train/validation accuracy and, per epoch, :data:`HISTORY_KEYS` (noise and weight detail)."""
  key = run_key(fields)
  if key in done:
    return done[key]
  trainer, summary, wall_s, cpu_s = _train(config)
  final = summary["final"]
  tests = [r["test_acc"] for r in trainer.history if r.get("test_acc") is not None]
  rec = dict(
    fields,
    key=key,
    wall_s=wall_s,
    cpu_s=cpu_s,
    test_acc=final["test_acc"],
    best_test_acc=max(tests),
    val_acc=final.get("val_acc"),
    val_balanced_acc=final.get("val_balanced_acc"),
    train_acc=final["train_acc"],
    config=summary["config"],
    history=[{k: r.get(k) for k in HISTORY_KEYS} for r in trainer.history],
  )
  append_record(path, rec)
  done[key] = rec
  return rec


def train_once(
  results: str, key: str, config: Any, fields: dict[str, Any]
) -> dict[str, Any] | None:
  """Trains ``config`` unless the record file ``results`` holds ``key`` already; returns the
  record, or None if another worker is training it.

  The record holds ``key``, ``fields`` (what the tables group by), the config, the final
  metrics, and the per-epoch test accuracy and per-class mean ABSGD weight.
  """
  done = find(results, key)
  if done is not None:
    return done
  lock = run_dir(results, key) + ".lock"
  if not claim(lock):
    return None
  try:
    done = find(results, key)  # Finished by another worker since we looked.
    if done is not None:
      return done
    trainer, summary, wall_s, _ = _train(config)
    final = summary["final"]
    record = dict(
      key=key,
      **fields,
      config=summary["config"],
      wall_s=wall_s,
      **{
        k: final.get(k) for k in ("test_acc", "test_balanced_acc", "val_balanced_acc", "train_loss")
      },
      history=[
        {
          k: r.get(k)
          for k in ("epoch", "test_acc", "val_balanced_acc", "class_mean_weight", "epoch_time_s")
        }
        for r in trainer.history
      ],
    )
    append_record(results, record)
    return record
  finally:
    os.remove(lock)


def mean_std(values: list[float], scale: float = 1.0) -> str:
  """``"72.43 +- 0.31 (n=3)"`` of ``scale * values`` (None values left out); one value is
  marked n=1, none is ``"-"``."""
  values = [scale * v for v in values if v is not None]
  if not values:
    return "-"
  if len(values) == 1:
    return f"{values[0]:.2f} (n=1)"
  return f"{statistics.mean(values):.2f} +- {statistics.stdev(values):.2f} (n={len(values)})"


# What the validation sweep of experiments/cifar_table.py chose for ABSGD (CE) on CIFAR-10-LT
# at the short protocol: lam 2 from epoch 16 (the protocol's first decay), gamma 0.9.
SHORT_LT_CHOICES = dict(lam=2.0, gamma=0.9)


def short_lt(data_dir: str, tiny: bool = False, **overrides):
  """The figure scripts' CIFAR-10-LT: the ``short`` protocol of
  :mod:`absgd_jax.train.protocols` with :data:`SHORT_LT_CHOICES` and ``overrides``
  (``tiny``: the ``tiny`` protocol's size, for smoke tests)."""
  from absgd_jax.train import make_config
  from absgd_jax.train.protocols import protocol

  kw = {**protocol("cifar-imbalance", "short"), **SHORT_LT_CHOICES}
  small = protocol("cifar-imbalance", "tiny")
  if tiny:
    kw.update(small)
  kw.update(overrides)
  if tiny:  # A two-stage arm keeps its two stages within the tiny run.
    kw["stage2_epoch"] = min(kw["stage2_epoch"], small["stage2_epoch"])
  kw.setdefault("out_dir", "/tmp/absgd-short-lt")
  return make_config("cifar10-lt", data_dir=data_dir, **kw)
