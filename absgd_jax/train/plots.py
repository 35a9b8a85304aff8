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


def plot_run(
  history: Sequence[dict[str, Any]], out_dir: str, class_names: Sequence[str] | None = None
) -> list[str]:
  """Writes ``curves.png``, ``class_accuracy.png`` and ``class_weights.png``; returns paths."""
  plt = _pyplot()
  os.makedirs(out_dir, exist_ok=True)
  paths = []
  epochs = [r["epoch"] for r in history]

  fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.6))
  ax_loss.plot(epochs, [r["train_loss"] for r in history], label="train loss")
  ax_loss.plot(epochs, [r["weighted_loss"] for r in history], label="weighted loss")
  ax_loss.set_xlabel("epoch"), ax_loss.legend(), ax_loss.set_yscale("log")
  for key, label in (
    ("train_acc", "train top-1"),
    ("test_acc", "test top-1"),
    ("test_balanced_acc", "test balanced"),
  ):
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

  paths.append(
    plot_class_weights(
      [(r["epoch"], r["class_mean_weight"]) for r in history],
      os.path.join(out_dir, "class_weights.png"),
      class_names,
    )
  )
  return paths


def plot_class_weights(
  weight_history: Sequence[tuple[int, Sequence[float | None]]],
  path: str,
  class_names: Sequence[str] | None = None,
  title: str | None = None,
) -> str:
  """Each class's mean ABSGD weight over training (the paper's Figure 4, right); returns path.

  ``weight_history`` is ``[(epoch, [mean weight of class c, or None]), ...]``.
  """
  plt = _pyplot()
  fig, ax = plt.subplots(figsize=(6, 3.6))
  _draw_class_weights(ax, weight_history, class_names, title)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def _draw_class_weights(ax: Any, weight_history, class_names=None, title=None) -> None:
  plt = _pyplot()
  epochs = [e for e, _ in weight_history]
  num = len(weight_history[0][1])
  for c in range(num):
    label = (class_names[c] if class_names else str(c)) if num <= 10 else None
    ax.plot(
      epochs,
      [w[c] if w[c] is not None else float("nan") for _, w in weight_history],
      label=label,
      color=plt.cm.viridis(c / max(1, num - 1)),
    )
  ax.set_xlabel("epoch"), ax.set_ylabel("mean ABSGD weight per class")
  if title:
    ax.set_title(title, fontsize=9)
  if num <= 10:
    ax.legend(fontsize=7, ncol=2)


def plot_weight_panels(
  class_history: Sequence[tuple[int, Sequence[float | None]]],
  noise_histories: dict[str, Sequence[tuple[int, float | None, float | None]]],
  path: str,
  class_names: Sequence[str] | None = None,
  class_title: str | None = None,
  noise_title: str | None = None,
) -> str:
  """Two panels side by side: each class's mean ABSGD weight (imbalance), and the mean weight
  of flipped vs clean training samples (label noise); returns path.

  ``noise_histories[name]`` is ``[(epoch, flipped mean weight, clean mean weight), ...]``;
  each run is drawn in its own colour, flipped dashed and clean solid.
  """
  plt = _pyplot()
  fig, (ax_c, ax_n) = plt.subplots(1, 2, figsize=(11, 3.8))
  _draw_class_weights(ax_c, class_history, class_names, class_title)
  for i, (name, hist) in enumerate(noise_histories.items()):
    color = plt.cm.tab10(i)
    epochs = [e for e, _, _ in hist]
    nan = float("nan")
    ax_n.plot(
      epochs, [c if c is not None else nan for _, _, c in hist], color=color, label=f"{name}: clean"
    )
    ax_n.plot(
      epochs,
      [f if f is not None else nan for _, f, _ in hist],
      color=color,
      linestyle="--",
      label=f"{name}: flipped",
    )
  ax_n.set_xlabel("epoch"), ax_n.set_ylabel("mean ABSGD weight")
  ax_n.set_yscale("log"), ax_n.legend(fontsize=7)
  if noise_title:
    ax_n.set_title(noise_title, fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def grouped_bars(
  ax: Any, groups: Sequence[str], series: dict[str, Sequence[Sequence[float]]], capsize: int = 3
) -> None:
  """Bars of mean +- sample std: one bar per series within each group.

  ``series[name][g]`` holds the values (e.g. one per seed) of series ``name`` in group ``g``.
  """
  import numpy as np

  width = 0.8 / len(series)
  x = np.arange(len(groups))
  for i, (name, per_group) in enumerate(series.items()):
    means = [np.mean(v) if len(v) else np.nan for v in per_group]
    stds = [np.std(v, ddof=1) if len(v) > 1 else 0.0 for v in per_group]
    ax.bar(
      x + (i - (len(series) - 1) / 2) * width, means, width, yerr=stds, capsize=capsize, label=name
    )
  ax.set_xticks(x, list(groups))
