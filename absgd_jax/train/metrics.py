"""Epoch metrics from the steps' summed counters (host-side NumPy)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

# Shot groups of the long-tail literature, by number of training images of a class.
MANY_SHOT_MIN = 100  # more than 100: many-shot
FEW_SHOT_MAX = 20  # fewer than 20: few-shot; 20..100: medium-shot


def _ratio(a: float, b: float) -> float | None:
  return float(a) / float(b) if b > 0 else None


def train_epoch_metrics(step_metrics: Sequence[dict[str, np.ndarray]]) -> dict[str, Any]:
  """Averages over an epoch: train loss, weighted loss, ESS, log s, per-class mean weight.

  The sums (``*_sum``, ``count``, ``correct``, ``class_*``) add up over the steps; ESS is the
  mean of the steps' ESS (and ``ess_min`` the smallest), ``max_weight`` the largest, and
  ``log_s`` and ``lam`` are the last step's; ``kl_mean`` is the mean of the steps' KL of the
  weights from uniform.

  Examples:
    >>> m = {"loss_sum": 2.0, "wloss_sum": 1.0, "count": 4.0, "correct": 3.0, "ess": 4.0,
    ...      "max_weight": 1.0, "log_s": 0.0, "lam": 5.0,
    ...      "class_weight_sum": np.array([1.0, 3.0]), "class_count": np.array([1.0, 3.0])}
    >>> out = train_epoch_metrics([m, m])
    >>> out["train_loss"], out["class_mean_weight"]
    (0.5, [1.0, 1.0])
  """
  per_step = ("ess", "log_s", "max_weight", "lam", "kl")
  total = {
    k: sum(np.asarray(m[k], np.float64) for m in step_metrics)
    for k in step_metrics[0]
    if k not in per_step
  }
  n = float(total["count"])
  ess = [float(m["ess"]) for m in step_metrics]
  out = {
    "train_loss": _ratio(total["loss_sum"], n),
    "weighted_loss": _ratio(total["wloss_sum"], n),
    "train_acc": _ratio(total["correct"], n),
    "ess_mean": float(np.mean(ess)),
    "ess_min": float(np.min(ess)),
    "kl_mean": float(np.mean([m["kl"] for m in step_metrics])) if "kl" in step_metrics[0] else None,
    "max_weight": float(np.max([m["max_weight"] for m in step_metrics])),
    "log_s": float(step_metrics[-1]["log_s"]),
    "lam": float(step_metrics[-1]["lam"]),
    "class_mean_weight": [
      _ratio(s, c) for s, c in zip(total["class_weight_sum"], total["class_count"])
    ],
  }
  if "flipped_count" in total:
    out["flipped_mean_weight"] = _ratio(total["flipped_weight_sum"], total["flipped_count"])
    out["clean_mean_weight"] = _ratio(total["clean_weight_sum"], total["clean_count"])
  return out


def eval_metrics(
  class_correct: np.ndarray,
  class_count: np.ndarray,
  train_class_counts: np.ndarray,
  prefix: str = "test",
) -> dict[str, Any]:
  """Top-1, balanced accuracy, per-class accuracy and many/medium/few-shot accuracy.

  Examples:
    >>> eval_metrics(np.array([9, 1]), np.array([10, 10]), np.array([500, 10]))["test_balanced_acc"]
    0.5
  """
  class_correct = np.asarray(class_correct, np.float64)
  class_count = np.asarray(class_count, np.float64)
  per_class = [_ratio(a, b) for a, b in zip(class_correct, class_count)]
  present = class_count > 0
  groups = {
    "many": train_class_counts > MANY_SHOT_MIN,
    "medium": (train_class_counts >= FEW_SHOT_MAX) & (train_class_counts <= MANY_SHOT_MIN),
    "few": train_class_counts < FEW_SHOT_MAX,
  }
  out = {
    f"{prefix}_acc": _ratio(class_correct.sum(), class_count.sum()),
    f"{prefix}_balanced_acc": float(np.mean(class_correct[present] / class_count[present])),
    f"{prefix}_class_acc": per_class,
  }
  for name, sel in groups.items():
    sel = sel & present
    out[f"{prefix}_{name}_shot_acc"] = (
      float(np.mean(class_correct[sel] / class_count[sel])) if sel.any() else None
    )
  return out


def is_finite_number(x: Any) -> bool:
  return x is not None and math.isfinite(x)
