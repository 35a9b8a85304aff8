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


def train_once(path: str, config: Any, fields: dict[str, Any]) -> dict[str, Any]:
  """Trains ``config`` unless ``path`` holds its record already; returns the record.

  The record holds ``fields`` (what the table groups by), the config, the final metrics, and
  the per-epoch history of the test accuracy and of the per-class mean ABSGD weight.
  """
  if os.path.exists(path):
    with open(path) as f:
      return json.load(f)
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
