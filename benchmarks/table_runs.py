"""What the accuracy-table scripts share: one saved JSON record per run, and mean +- std cells.

A record is written atomically (a temporary file, then ``os.replace``) once its run has
finished, so an interrupted table resumes from the last finished run and a half-written record
never exists. Tables and plots are rebuilt from these records alone, without retraining.
"""

from __future__ import annotations

import glob
import json
import os
import statistics
import time
from typing import Any


def slug(text: str) -> str:
  return "".join(c if c.isalnum() else "_" for c in text)


def claim(path: str) -> bool:
  """Claims the run whose record is ``path`` for this process (a ``.lock`` file made with
  O_EXCL), so that several workers share one queue without training a run twice. A lock
  whose process has died is taken over."""
  lock = path + ".lock"
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


def train_once(path: str, config: Any, fields: dict[str, Any]) -> dict[str, Any] | None:
  """Trains ``config`` unless ``path`` holds its record already; returns the record.

  The record holds ``fields`` (what the table groups by), the config, the final metrics, and
  the per-epoch history of the test accuracy and of the per-class mean ABSGD weight. Returns
  None if another worker is training it.
  """
  if os.path.exists(path):
    with open(path) as f:
      return json.load(f)
  if not claim(path):
    return None
  from absgd_jax.train import Trainer
  t0 = time.time()
  trainer = Trainer(config, progress=False, log=False)
  summary = trainer.fit()
  final = summary["final"]
  record = dict(fields, config=summary["config"], wall_s=time.time() - t0,
                **{k: final.get(k) for k in ("test_acc", "test_balanced_acc", "val_balanced_acc",
                                             "train_loss")},
                history=[{k: r.get(k) for k in ("epoch", "test_acc", "val_balanced_acc",
                                                "class_mean_weight")}
                         for r in trainer.history])
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  with open(path + ".tmp", "w") as f:
    json.dump(record, f)
  os.replace(path + ".tmp", path)
  os.remove(path + ".lock")
  return record


def load_records(out: str) -> list[dict[str, Any]]:
  records = []
  for p in sorted(glob.glob(os.path.join(out, "*.json"))):
    with open(p) as f:
      records.append(json.load(f))
  return records


def mean_std(values: list[float]) -> str:
  """``"72.43 +- 0.31 (n=3)"``; one value is marked n=1, none is ``"-"``."""
  if not values:
    return "-"
  if len(values) == 1:
    return f"{values[0]:.2f} (n=1)"
  return f"{statistics.mean(values):.2f} +- {statistics.stdev(values):.2f} (n={len(values)})"
