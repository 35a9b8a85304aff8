"""PNG plots of a run: accuracy curves, per-class accuracy, per-class mean weight over training;
and of a sweep: its members' final scores against the swept values.

Matplotlib with the Agg back-end (no display needed), imported only when plotting.
"""

from __future__ import annotations

import math
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


def sweep_lines(rows: Sequence[dict[str, Any]], metric: str) -> dict[str, Any]:
  """What :func:`plot_sweep` draws of ``metric``: the members' final values against the first
  swept key, one line per value of the other keys, the seeds averaged.

  The x axis is the first swept key other than ``seed`` (``seed`` alone: the seed). With
  ``seed`` also swept, each point is the mean over the seeds, with the lowest and highest
  seed beside it; every other swept key (``gamma`` beside ``lam``) gets a line per value. The
  x values are kept in the grid's order and drawn evenly spaced, so that a grid such as
  lam = 1, 2, 5, 10, inf reads at a glance. A member that diverged (``status`` not ``ok``), or
  whose value is missing or not finite, is left out; a point with none left is NaN (a gap).

  Args:
    rows: the sweep's rows (:attr:`absgd_jax.train.Sweep.result`'s ``members``, or the
      lines of ``sweep.jsonl``): each with ``sweep`` (its values by key), ``status``,
      ``selected_on``, ``score`` and ``final``.
    metric: the row's ``score`` when it is what the sweep selected on, else a key of
      ``final`` (``test_acc``).

  Returns:
    ``{"x_key", "x" (the values), "seeds" (whether averaged), "lines": [{"label", "mean",
    "low", "high", "n"}, ...]}``, one entry of each list per x value.

  Examples:
    >>> def row(lam, seed, acc):
    ...   return {"sweep": {"lam": lam, "seed": seed}, "status": "ok", "final": {"test_acc": acc}}
    >>> out = sweep_lines([row(1.0, 0, 0.5), row(1.0, 1, 0.7), row(5.0, 0, 0.6),
    ...                    row(5.0, 1, 0.8)], "test_acc")
    >>> out["x_key"], out["x"], out["seeds"], out["lines"][0]["mean"], out["lines"][0]["low"]
    ('lam', [1.0, 5.0], True, [0.6, 0.7], [0.5, 0.6])
  """
  import numpy as np

  keys = list(rows[0]["sweep"]) if rows else []
  x_key = next((k for k in keys if k != "seed"), "seed")
  seeds = "seed" in keys and x_key != "seed"
  line_keys = [k for k in keys if k not in (x_key, "seed")]
  xs = list(dict.fromkeys(r["sweep"][x_key] for r in rows))
  groups: dict[tuple, dict[Any, list[float]]] = {}
  for r in rows:
    line = tuple(r["sweep"][k] for k in line_keys)
    values = groups.setdefault(line, {x: [] for x in xs})[r["sweep"][x_key]]
    v = r.get("score") if metric == r.get("selected_on") else r.get("final", {}).get(metric)
    if r.get("status") == "ok" and v is not None and math.isfinite(v):
      values.append(float(v))
  lines = []
  for line, per_x in groups.items():
    label = ",".join(f"{k}={_label(v)}" for k, v in zip(line_keys, line))
    stats = [per_x[x] for x in xs]
    lines.append(
      {
        "label": label,
        "mean": [float(np.mean(v)) if v else math.nan for v in stats],
        "low": [min(v) if v else math.nan for v in stats],
        "high": [max(v) if v else math.nan for v in stats],
        "n": [len(v) for v in stats],
      }
    )
  return {"x_key": x_key, "x": xs, "seeds": seeds, "lines": lines}


def _label(v: Any) -> str:
  return f"{v:g}" if isinstance(v, float) else str(v)


def plot_sweep(
  rows: Sequence[dict[str, Any]], selected_on: str, path: str
) -> dict[str, dict[str, Any]]:
  """``sweep.png``: the members' final score (what the sweep selected on) and test accuracy
  against the swept values, a panel each (see :func:`sweep_lines` for the lines); the winner
  is starred. ``path`` may be local or a URL (gs://...).

  Returns:
    What each panel drew, by metric: :func:`sweep_lines`'s output.

  Examples:
    >>> import os, tempfile
    >>> rows = [{"label": f"lam={lam:g}", "sweep": {"lam": lam}, "status": "ok",
    ...          "selected_on": "test_balanced_acc", "score": s, "winner": s == 0.6,
    ...          "final": {"test_acc": s + 0.1}}
    ...         for lam, s in ((1.0, 0.5), (5.0, 0.6), (float("inf"), 0.4))]
    >>> path = os.path.join(tempfile.mkdtemp(), "sweep.png")
    >>> drawn = plot_sweep(rows, "test_balanced_acc", path)
    >>> drawn["test_balanced_acc"]["lines"][0]["mean"], open(path, "rb").read(4)
    ([0.5, 0.6, 0.4], b'\\x89PNG')
  """
  import io

  from etils import epath

  plt = _pyplot()
  metrics = [selected_on] + [m for m in ("test_acc",) if m != selected_on]
  drawn = {m: sweep_lines(rows, m) for m in metrics}
  fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 3.6), squeeze=False)
  for ax, metric in zip(axes[0], metrics):
    data = drawn[metric]
    pos = list(range(len(data["x"])))
    for line in data["lines"]:
      mean = line["mean"]
      yerr = [
        [m - lo for m, lo in zip(mean, line["low"])],
        [h - m for m, h in zip(mean, line["high"])],
      ]
      ax.errorbar(
        pos,
        mean,
        yerr=yerr if data["seeds"] else None,
        marker="o",
        capsize=3,
        label=line["label"] or None,
      )
    winner = next((r for r in rows if r.get("winner")), None) if metric == selected_on else None
    if winner is not None:
      ax.scatter(
        [data["x"].index(winner["sweep"][data["x_key"]])],
        [winner["score"]],
        marker="*",
        s=160,
        color="gold",
        edgecolors="black",
        zorder=3,
        label=f"winner: {winner['label']}",
      )
    ax.set_xticks(pos, [_label(x) for x in data["x"]])
    ax.set_xlabel(data["x_key"]), ax.set_ylabel(f"final {metric}")
    if data["seeds"]:
      ax.set_title("mean over seeds (bars: lowest to highest)", fontsize=9)
    if any(line["label"] for line in data["lines"]) or winner is not None:
      ax.legend(fontsize=7)
  fig.tight_layout()
  buf = io.BytesIO()
  fig.savefig(buf, format="png", dpi=110)
  plt.close(fig)
  epath.Path(path).write_bytes(buf.getvalue())
  return drawn
