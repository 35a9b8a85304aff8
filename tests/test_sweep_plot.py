"""A sweep's ``sweep.png``: written by the sweep, a PNG, and drawing the members' own final
scores (read back from ``sweep.jsonl``) against the swept values."""

import json
import math

import jax
import numpy as np
import pytest

from absgd_jax.train import Sweep, make_config, plots

ONE = jax.devices()[:1]


def test_a_sweep_plots_its_members_scores_against_the_swept_values(tmp_path, monkeypatch):
  drawn, plot_sweep = [], plots.plot_sweep

  def recorded(*args, **kw):  # what the sweep's own call drew
    drawn.append(plot_sweep(*args, **kw))
    return drawn[-1]

  monkeypatch.setattr(plots, "plot_sweep", recorded)
  cfg = make_config(
    "digits-lt", epochs=1, checkpoint=False, batch_size=64, out_dir=str(tmp_path / "sweep")
  )
  Sweep(cfg, {"lam": [1, 5], "seed": [0, 1]}, progress=False, devices=ONE).fit()
  png = tmp_path / "sweep" / "sweep.png"
  assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  [panels] = drawn
  assert list(panels) == ["test_balanced_acc", "test_acc"]  # no validation split here
  rows = [
    json.loads(line) for line in (tmp_path / "sweep" / "sweep.jsonl").read_text().splitlines()
  ]
  for metric, value in (("test_balanced_acc", lambda r: r["score"]), ("test_acc", None)):
    data = panels[metric]
    assert data["x_key"] == "lam" and data["x"] == [1.0, 5.0] and data["seeds"]
    [line] = data["lines"]  # lam x seed: one line, each point the seeds' mean
    for i, lam in enumerate((1.0, 5.0)):
      seeds = [
        value(r) if value else r["final"]["test_acc"] for r in rows if r["sweep"]["lam"] == lam
      ]
      assert len(seeds) == 2 and line["n"][i] == 2
      assert line["mean"][i] == pytest.approx(np.mean(seeds))
      assert (line["low"][i], line["high"][i]) == (min(seeds), max(seeds))


def _row(label_values, score, status="ok"):
  return {
    "label": ",".join(f"{k}={v:g}" for k, v in label_values.items()),
    "sweep": label_values,
    "status": status,
    "selected_on": "val_balanced_acc",
    "score": score,
    "winner": False,
    "final": {"test_acc": None if score is None else score - 0.1},
  }


def test_other_swept_keys_get_a_line_each_and_diverged_members_are_left_out():
  rows = [
    _row({"lam": 1.0, "gamma": 0.5}, 0.6),
    _row({"lam": 1.0, "gamma": 0.9}, 0.7),
    _row({"lam": float("inf"), "gamma": 0.5}, 0.5),
    _row({"lam": float("inf"), "gamma": 0.9}, None, status="diverged in epoch 3: ..."),
  ]
  data = plots.sweep_lines(rows, "val_balanced_acc")
  assert data["x_key"] == "lam" and not data["seeds"]
  assert [line["label"] for line in data["lines"]] == ["gamma=0.5", "gamma=0.9"]
  assert data["lines"][0]["mean"] == [0.6, 0.5]
  first, gap = data["lines"][1]["mean"]
  assert first == 0.7 and math.isnan(gap) and data["lines"][1]["n"] == [1, 0]
  assert plots.sweep_lines(rows, "test_acc")["lines"][0]["mean"] == pytest.approx([0.5, 0.4])
