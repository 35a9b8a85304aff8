"""bfloat16 against float32 on the reduced protocol of Table 1: does mixed precision change the
result? CIFAR-10-LT rho = 100, SGD (CE) and ABSGD (CE) with the lam validation chose in
float32, seeds 0, 1, 2.

    python -m experiments.mixed_precision            # the bfloat16 runs (resumable), the report
    python -m experiments.mixed_precision --report   # the report from the records
    python -m experiments.mixed_precision --tiny --results /tmp/t.jsonl   # the pipeline, seconds

``dtype=bfloat16`` computes the network's activations in bfloat16; parameters, optimizer state,
BatchNorm statistics, the per-sample losses, ABSGD's weights and their state stay float32
(tests/test_bfloat16.py checks each). The float32 runs are the table's own records
(``experiments/results/paper_tables_reduced.jsonl``): the bfloat16 runs differ from them in
the dtype alone, seed by seed, and the report gives each pair's difference.
"""

from __future__ import annotations

import argparse
import statistics

from experiments import common, table1, tables

ROWS = ("SGD (CE)", "ABSGD (CE)")
SEEDS = (0, 1, 2)
FLOAT32 = common.results_path("paper_tables_reduced")
RESULTS = common.results_path("mixed_precision")


def _lam(records) -> float | None:
  """The lam ABSGD (CE) was tuned to on the reduced protocol's validation split (float32)."""
  recs = {r["key"]: r for r in records}
  name, grid = table1.GRIDS["ABSGD (CE)"]
  keys = [(v, table1.tune_key("LT", "ABSGD (CE)", name, v)) for v in grid]
  return tables.choose([(v, recs.get(k, {}).get("val_balanced_acc")) for v, k in keys])


def run(results: str, data_dir: str, seeds, tiny: bool) -> None:
  lam = 1.0 if tiny else _lam(common.read_records(FLOAT32))
  if lam is None:
    raise SystemExit("the float32 tuning of ABSGD (CE) on LT is not recorded yet.")
  protocol = "tiny" if tiny else "reduced"
  # The table's records are the float32 runs of the protocol; a tiny run makes its own.
  dtypes = ("float32", "bfloat16") if tiny else ("bfloat16",)
  for seed in seeds:
    for row in ROWS:
      for dtype in dtypes:
        extra = dict(lam=lam) if row.startswith("ABSGD") else {}
        key = table1.final_key("LT", row, seed) + f"__{dtype}"
        cfg = table1.config(
          protocol, "LT", table1.ROWS[row], {}, seed=seed, dtype=dtype, data_dir=data_dir,
          checkpoint=True, out_dir=common.run_dir(results, key), **extra,
        )  # fmt: skip
        fields = dict(setting="LT", row=row, seed=seed, dtype=dtype, **extra)
        rec = common.train_once(results, key, cfg, fields)
        if rec is not None:
          print(f"{key}: test {100 * rec['test_acc']:.2f} ({rec['wall_s']:.0f} s)", flush=True)


def report(results: str = RESULTS, float32: str = FLOAT32) -> str:
  mine = common.read_records(results)
  bf16 = {(r["row"], r["seed"]): r for r in mine if r["dtype"] == "bfloat16"}
  fp32 = {
    (r["row"], r["seed"]): r
    for r in common.read_records(float32)
    if r.get("stage") == "final" and r["setting"] == "LT"
  }
  fp32.update({(r["row"], r["seed"]): r for r in mine if r["dtype"] == "float32"})
  lines = [
    "CIFAR-10-LT rho = 100, reduced protocol, test accuracy % after the last epoch:",
    "",
    "| row | float32 | bfloat16 | bfloat16 - float32, per seed |",
    "| --- | --- | --- | --- |",
  ]
  for row in ROWS:
    seeds = sorted(s for r, s in bf16 if r == row)
    both = [s for s in seeds if (row, s) in fp32]
    d = [100 * (bf16[row, s]["test_acc"] - fp32[row, s]["test_acc"]) for s in both]
    diffs = ", ".join(f"{x:+.2f}" for x in d) + (f" (mean {statistics.mean(d):+.2f})" if d else "")
    lines.append(
      f"| {row} | {common.mean_std([fp32[row, s]['test_acc'] for s in both], 100)} | "
      f"{common.mean_std([bf16[row, s]['test_acc'] for s in seeds], 100)} | {diffs or '-'} |"
    )
  text = "\n".join(lines) + "\n"
  print(text)
  return text


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--data-dir", default=common.DATA_DIR)
  ap.add_argument("--results", default=RESULTS)
  ap.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
  ap.add_argument("--tiny", action="store_true")
  ap.add_argument("--report", action="store_true")
  args = ap.parse_args(argv)
  if not args.report:
    run(args.results, args.data_dir, args.seeds, args.tiny)
  report(args.results)


if __name__ == "__main__":
  main()
