"""What the experiment scripts share: a resumable JSONL of finished runs, the compile cache.

A run's record is one JSON line, appended once the run has finished, so a stopped script
resumes at the first run without a line and loses at most the run it was in. Tables are
rebuilt from the lines alone.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from typing import Any

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CACHE = os.path.join(REPO, "runs", "jax_cache")  # git ignores runs/.
HISTORY_KEYS = ("epoch", "train_acc", "test_acc", "val_acc", "class_mean_weight",
                "flipped_mean_weight", "clean_mean_weight")


def run_key(fields: dict[str, Any]) -> str:
  """A run's identity: its fields, order-free."""
  return json.dumps(fields, sort_keys=True)


def load_jsonl(path: str) -> dict[str, dict]:
  """Finished runs by key (``key`` field of each line)."""
  recs = {}
  if os.path.exists(path):
    with open(path) as f:
      for line in f:
        if line.strip():
          r = json.loads(line)
          recs[r["key"]] = r
  return recs


def train_record(path: str, fields: dict[str, Any], config, done: dict[str, dict]) -> dict:
  """Trains ``config`` unless ``done`` has ``fields``' run; appends and returns its record."""
  key = run_key(fields)
  if key in done:
    return done[key]
  from absgd_jax.train import Trainer
  t0, c0 = time.time(), time.process_time()
  trainer = Trainer(config, progress=False, log=False)
  summary = trainer.fit()
  final = summary["final"]
  tests = [r["test_acc"] for r in trainer.history if r.get("test_acc") is not None]
  rec = dict(fields, key=key, wall_s=time.time() - t0, cpu_s=time.process_time() - c0,
             test_acc=final["test_acc"], best_test_acc=max(tests),
             val_acc=final.get("val_acc"), val_balanced_acc=final.get("val_balanced_acc"),
             train_acc=final["train_acc"], config=summary["config"],
             history=[{k: r.get(k) for k in HISTORY_KEYS} for r in trainer.history])
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  with open(path, "a") as f:
    f.write(json.dumps(rec) + "\n")
  done[key] = rec
  return rec


def mean_std(values: list[float], scale: float = 100.0) -> str:
  """``"72.43 +- 0.31"`` (n noted when not 3); ``"-"`` for none."""
  values = [scale * v for v in values if v is not None]
  if not values:
    return "-"
  if len(values) == 1:
    return f"{values[0]:.2f} (n=1)"
  n = "" if len(values) == 3 else f" (n={len(values)})"
  return f"{statistics.mean(values):.2f} +- {statistics.stdev(values):.2f}{n}"


# benchmarks/cifar_table.py's reduced CIFAR-10-LT (rho = 100, 12,406 images averaged to
# 16 x 16, ResNet-8, 20 epochs, lr 0.1 after a 1-epoch warm-up, divided by 100 at epochs 16
# and 18, ABSGD's lam from epoch 16), where its validation sweep chose lr 0.1 for SGD and
# lam 2 for ABSGD (CE). About 3.5 CPU core-minutes a run.
REDUCED_LT = dict(image_size=16, crop_padding=2, model="resnet8", epochs=20, warmup_epochs=1,
                  lr=0.1, batch_size=128, weight_decay=2e-4, eval_every=2, checkpoint=False,
                  lr_decay_epochs=(16, 18), lr_decay_factor=0.01, stage2_epoch=16, lam=2.0,
                  gamma=0.9)
# A seconds-long version for smoke tests: 1 epoch of a head of 50 images (rho 10).
TINY_LT = dict(n_max=50, rho=10, epochs=1, eval_every=1, warmup_epochs=0, stage2_epoch=0)


def reduced_lt(data_dir: str, tiny: bool = False, **overrides):
  """The reduced CIFAR-10-LT config with ``overrides`` (``tiny``: the smoke-test size)."""
  from absgd_jax.train import make_config
  kw = {**REDUCED_LT, **(TINY_LT if tiny else {}), **overrides}
  kw.setdefault("out_dir", "/tmp/absgd-reduced-lt")
  return make_config("cifar10-lt", data_dir=data_dir, **kw)
