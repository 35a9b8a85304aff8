"""PNG plots of a run: accuracy curves, per-class accuracy, per-class mean weight over training.

Matplotlib with the Agg back-end (no display needed), imported only when plotting.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any


def _pyplot():
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  return plt


def plot_run(history: Sequence[dict[str, Any]], out_dir: str,
             class_names: Sequence[str] | None = None) -> list[str]:
  """Writes ``curves.png``, ``class_accuracy.png`` and ``class_weights.png``; returns paths."""
  plt = _pyplot()
  os.makedirs(out_dir, exist_ok=True)
  paths = []
  epochs = [r["epoch"] for r in history]

  fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.6))
  ax_loss.plot(epochs, [r["train_loss"] for r in history], label="train loss")
  ax_loss.plot(epochs, [r["weighted_loss"] for r in history], label="weighted loss")
  ax_loss.set_xlabel("epoch"), ax_loss.legend(), ax_loss.set_yscale("log")
  for key, label in (("train_acc", "train top-1"), ("test_acc", "test top-1"),
                     ("test_balanced_acc", "test balanced")):
    pts = [(r["epoch"], r[key]) for r in history if r.get(key) is not None]
    if pts:
      ax_acc.plot(*zip(*pts), label=label)
  ax_acc.set_xlabel("epoch"), ax_acc.set_ylim(0, 1), ax_acc.legend()
  fig.tight_layout()
  paths.append(os.path.join(out_dir, "curves.png"))
  fig.savefig(paths[-1], dpi=110)
  plt.close(fig)

  last = next((r for r in reversed(history) if r.get("test_class_acc")), None)
  if last is not None:
    acc = [a if a is not None else 0.0 for a in last["test_class_acc"]]
    names = list(class_names) if class_names else [str(i) for i in range(len(acc))]
    fig, ax = plt.subplots(figsize=(max(5, 0.35 * len(acc)), 3.4))
    ax.bar(range(len(acc)), acc)
    ax.set_xticks(range(len(acc)), names if len(acc) <= 20 else None, rotation=60)
    ax.set_ylim(0, 1), ax.set_ylabel("test accuracy"), ax.set_title(f"epoch {last['epoch']}")
    fig.tight_layout()
    paths.append(os.path.join(out_dir, "class_accuracy.png"))
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

  # Figure 4 (right) of the paper: each class's mean ABSGD weight over training.
  weights = [r["class_mean_weight"] for r in history]
  fig, ax = plt.subplots(figsize=(6, 3.6))
  for c in range(len(weights[0])):
    ax.plot(epochs, [w[c] if w[c] is not None else float("nan") for w in weights],
            label=(class_names[c] if class_names else str(c)) if len(weights[0]) <= 10 else None,
            color=plt.cm.viridis(c / max(1, len(weights[0]) - 1)))
  ax.set_xlabel("epoch"), ax.set_ylabel("mean ABSGD weight per class")
  if len(weights[0]) <= 10:
    ax.legend(fontsize=7, ncol=2)
  fig.tight_layout()
  paths.append(os.path.join(out_dir, "class_weights.png"))
  fig.savefig(paths[-1], dpi=110)
  plt.close(fig)
  return paths
