"""The demo: its table's figures, its minority accuracy, its configs, its tuned values."""

import json
import os
import statistics

import numpy as np
import pytest

from absgd_jax.train import demo

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TUNING = os.path.join(REPO, "experiments", "results", "demo_tuning.jsonl")


def test_minority_accuracy_is_the_mean_over_the_smaller_classes():
  final = {"test_class_acc": [0.9, 0.8, 0.5, 0.25, None]}
  # Classes 2 and 3 have fewer images than the largest (100); class 4 has no test images.
  assert demo.minority_accuracy(final, [100, 100, 2, 2, 2]) == pytest.approx(0.375)
  assert demo.minority_accuracy(final, [5, 5, 5, 5, 5]) is None


def test_table_prints_each_rows_mean_std_and_its_explanation():
  res = {
    "imbalance": {
      "sgd": [dict(test_acc=a, minority_acc=m) for a, m in ((0.6, 0.2), (0.7, 0.3))],
      "absgd": [dict(test_acc=a, minority_acc=m) for a, m in ((0.8, 0.5), (0.9, 0.6))],
    },
    "noise, CE": {
      m: [dict(test_acc=0.8, best_test_acc=0.9, train_acc=0.7)] * 2 for m in demo.METHODS
    },
  }
  text = demo.table(res, seeds=(0, 1))
  sd = 100 * statistics.stdev([0.6, 0.7])
  assert f"65.00 +- {sd:.2f}" in text and f"85.00 +- {sd:.2f}" in text
  assert f"minority: SGD 25.00 +- {sd:.2f}, ABSGD 55.00 +- {sd:.2f}" in text
  assert "SGD 90.00 +- 0.00 -> 80.00 +- 0.00" in text
  for row in res:
    assert demo.ROWS[row][2] in text


def test_row_config_rejects_unknown_rows_and_methods():
  with pytest.raises(ValueError, match="unknown demo row 'noise'"):
    demo.row_config("noise", "sgd", 0, "/tmp/x")
  with pytest.raises(ValueError, match="unknown demo method 'adam'"):
    demo.row_config("imbalance", "adam", 0, "/tmp/x")


def test_row_configs_share_everything_but_the_method_and_its_tuned_values():
  for row in demo.ROWS:
    sgd, ab = (demo.row_config(row, m, 3, "/tmp/x") for m in demo.METHODS)
    tuned = set(demo.CHOSEN[row]["absgd"]) | {"method", "lam"}
    for key, value in sgd.flat().items():
      if key not in tuned:
        assert value == ab.get(key), (row, key)
  noise = demo.row_config("noise, CE", "absgd", 0, "/tmp/x")
  assert noise.data.noise_rate == 0.4 and noise.weighting.stage2_epoch == 30
  assert noise.weighting.lam < 0
  assert demo.row_config("imbalance", "absgd", 0, "/tmp/x").weighting.lam > 0


@pytest.mark.skipif(not os.path.exists(TUNING), reason="experiments/demo_tuning.py not run")
def test_chosen_values_are_the_best_validation_points_of_the_tuning_record():
  scores = {}
  with open(TUNING) as f:
    for line in f:
      r = json.loads(line)
      if not r.get("overrides"):
        key = (r["row"], r["method"], json.dumps(r["point"], sort_keys=True))
        scores.setdefault(key, {})[r["seed"]] = r["val_balanced_acc"]
  for row, methods in demo.CHOSEN.items():
    if row == demo.EQUAL_LR_ROW:  # Both at lr 0.05; ABSGD's lam: its best at that lr.
      assert methods["sgd"] == {"lr": 0.05} and methods["absgd"]["lr"] == 0.05
      at = {
        k[2]: np.mean(list(v.values()))
        for k, v in scores.items()
        if k[:2] == ("noise, CE", "absgd") and json.loads(k[2])["lr"] == 0.05
      }
      assert at[json.dumps(methods["absgd"], sort_keys=True)] == max(at.values())
      continue
    for method, chosen in methods.items():
      cands = {
        k[2]: np.mean(list(v.values()))
        for k, v in scores.items()
        if k[:2] == (row, method) and len(v) == 3
      }
      assert len(cands) == 8, (row, method)  # The same budget for every method.
      best = max(cands.values())
      assert cands[json.dumps(chosen, sort_keys=True)] == best, (row, method, cands)


def test_weight_panels_plot_writes_a_png(tmp_path):
  from absgd_jax.train.plots import plot_weight_panels

  path = plot_weight_panels(
    [(0, [1.0, 2.0]), (1, [0.5, None])],
    {"ABSGD (CE)": [(0, 1.0, 1.0), (1, 0.1, 1.5)]},
    str(tmp_path / "w.png"),
    class_title="c",
    noise_title="n",
  )
  with open(path, "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_use_compile_cache_keeps_a_folder_already_chosen(tmp_path):
  import jax

  from absgd_jax.train.compile_cache import use_compile_cache

  assert demo.use_compile_cache is use_compile_cache  # The demo's runs use the same switch.
  before = jax.config.jax_compilation_cache_dir
  try:
    jax.config.update("jax_compilation_cache_dir", str(tmp_path / "mine"))
    use_compile_cache(str(tmp_path / "demo"))
    assert jax.config.jax_compilation_cache_dir == str(tmp_path / "mine")
    jax.config.update("jax_compilation_cache_dir", None)
    use_compile_cache(str(tmp_path / "demo"))
    assert jax.config.jax_compilation_cache_dir == str(tmp_path / "demo")
  finally:
    jax.config.update("jax_compilation_cache_dir", before)
