"""experiments.mixed_precision end to end at its tiny size: each row trained in float32 and
bfloat16 from the same seed, and the report pairs them seed by seed."""

import os

import pytest

from experiments import common, mixed_precision
from experiments.common import DATA_DIR


@pytest.mark.skipif(not os.path.isdir(DATA_DIR), reason="needs ../shared/data/cifar10-jpeg")
def test_the_bfloat16_runs_differ_from_the_float32_ones_in_the_dtype_alone(tmp_path, monkeypatch):
  monkeypatch.setattr(common, "RUNS", str(tmp_path / "runs"))
  results = str(tmp_path / "mp.jsonl")
  mixed_precision.main(["--tiny", "--seeds", "0", "--results", results])
  recs = {(r["row"], r["dtype"]): r for r in common.read_records(results)}
  assert set(recs) == {(row, d) for row in mixed_precision.ROWS for d in ("float32", "bfloat16")}
  for row in mixed_precision.ROWS:
    a, b = recs[row, "float32"]["config"], recs[row, "bfloat16"]["config"]
    assert {k for k in a if a[k] != b[k]} == {"dtype", "out_dir"}
  text = mixed_precision.report(results, float32=str(tmp_path / "none.jsonl"))
  d = 100 * (recs["SGD (CE)", "bfloat16"]["test_acc"] - recs["SGD (CE)", "float32"]["test_acc"])
  assert "| SGD (CE) | " in text and f"{d:+.2f} (mean {d:+.2f})" in text
