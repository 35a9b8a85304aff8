"""The small hyper-parameter sweep behind the digits demo and table, on a validation split.

A fifth of every class of the (imbalanced, noisy) training set is held out; each grid point
trains on the rest and is scored by validation balanced accuracy, never the test set. Every
run appends its record to ``experiments/results/digits_sweep.jsonl``, so re-running skips
what is done, and ``--report`` rebuilds the table (``digits_sweep.txt``) and the chosen
values (``digits_sweep_chosen.json``) beside it from the records alone.

    python -m experiments.digits_sweep [--seeds 0 1 2 3 4] [--settings lt50 ...] [--report]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

from experiments import common

SETTINGS = {
  "lt50": dict(preset="digits-lt", rho=50),
  "st50": dict(preset="digits-st", rho=50),
  "sym40": dict(preset="digits-noise", noise_rate=0.4),
  # LDAM's logits carry a scale of 30, so its losses (and the lam that suits them) are far
  # larger than CE's: a grid of its own for ABSGD (CB-LDAM).
  "lt50-cbldam": dict(preset="digits-lt", rho=50, loss="ldam", head="cosine", class_weighting="cb"),
}
# The grid: SGD has no lam; ABSGD's lam from the paper's ranges (Sections 4.1 and 5.1) and the
# learning rate for both methods, so the baseline gets the same tuning budget.
LR_GRID = (0.05, 0.1)
# Section 3.6's two-stage strategy: ABSGD from the start (0) or from the learning-rate decay
# at epoch 22 of 30, as the CIFAR protocol switches it on at the decay (epoch 160 of 200).
STAGE2_GRID = (0, 22)
LAM_GRID = {
  "lt50": (0.5, 1.0, 2.0, 5.0),
  "st50": (0.5, 1.0, 2.0, 5.0),
  "sym40": (-1.0, -2.0, -3.0, -5.0),
  "lt50-cbldam": (20.0, 50.0, 100.0),
}


EXPERIMENT = "digits_sweep"


def grid(setting: str) -> list[tuple[str, float, float | None, int]]:
  """(method, lr, lam, stage-2 epoch) of every grid point of ``setting``, in table order."""
  rows = []
  for lr in LR_GRID:
    rows.append(("sgd", lr, None, 0))
    rows += [("absgd", lr, lam, s2) for s2 in STAGE2_GRID for lam in LAM_GRID[setting]]
  return rows


def key(setting: str, method: str, lr: float, lam: float | None, stage2: int, seed: int) -> str:
  return (
    f"{setting}__{method}__lr{lr}__lam{lam}" + (f"__s2{stage2}" if stage2 else "") + f"__seed{seed}"
  )


def run_one(
  setting: str, method: str, lr: float, lam: float | None, seed: int, results: str, stage2: int = 0
):
  from absgd_jax.train import make_config

  name = key(setting, method, lr, lam, stage2, seed)
  spec = dict(SETTINGS[setting])
  preset = spec.pop("preset")
  kw = dict(
    spec,
    method=method,
    lr=lr,
    seed=seed,
    val_fraction=0.2,
    checkpoint=False,
    out_dir=common.run_dir(results, name),
    epochs=30,
    lr_decay_epochs=(22,),
  )
  if lam is not None:
    kw["lam"] = lam
    kw["stage2_epoch"] = stage2
  fields = dict(setting=setting, method=method, lr=lr, lam=lam, stage2=stage2, seed=seed)
  record = common.train_once(results, name, make_config(preset, **kw), fields)
  if record is None:
    raise RuntimeError(f"another process is training {name}; the sweep runs as one process")
  return record


def report(results: str, settings, seeds) -> dict:
  """The sweep's table and the chosen values, from the records alone; returns the latter."""
  by_key = {r["key"]: r for r in common.read_records(results)}
  lines, best = [], {}
  for setting in settings:
    for method, lr, lam, s2 in grid(setting):
      recs = [by_key.get(key(setting, method, lr, lam, s2, s)) for s in seeds]
      if None in recs:
        continue  # Not run (yet).
      v = [r["val_balanced_acc"] for r in recs]
      mean = statistics.mean(v)
      lines.append(
        f"{setting:6} {method:6} lr={lr:<5} lam={str(lam):5} stage2={s2:<3} val "
        f"balanced acc {mean:.4f} +- {statistics.pstdev(v):.4f}"
      )
      k = (setting, method)
      if k not in best or mean > best[k][0]:  # Ties go to the first grid point.
        best[k] = (mean, lr, lam, s2)
  lines += ["", "chosen (by validation balanced accuracy):"]
  lines += [
    f"  {s:6} {m:6} lr={lr} lam={lam} stage2={s2}  val {mean:.4f}"
    for (s, m), (mean, lr, lam, s2) in best.items()
  ]
  text = "\n".join(lines) + "\n"
  stem = os.path.splitext(results)[0]
  with open(stem + ".txt", "w") as f:
    f.write(text)
  chosen = {
    f"{s}/{m}": {"lr": lr, "lam": lam, "stage2_epoch": s2, "val_balanced_acc": mean}
    for (s, m), (mean, lr, lam, s2) in best.items()
  }
  with open(stem + "_chosen.json", "w") as f:
    json.dump(chosen, f, indent=1)
  print(text, end="")
  return chosen


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
  ap.add_argument("--settings", nargs="+", default=list(SETTINGS))
  ap.add_argument(
    "--results",
    default=common.results_path(EXPERIMENT),
    help="the records (JSONL); the table and chosen values are written beside it",
  )
  ap.add_argument("--report", action="store_true", help="only rebuild the table")
  args = ap.parse_args(argv)
  t0 = time.time()
  if not args.report:
    for setting in args.settings:
      for method, lr, lam, s2 in grid(setting):
        for s in args.seeds:
          run_one(setting, method, lr, lam, s, args.results, s2)
        print(f"{setting:6} {method:6} lr={lr:<5} lam={str(lam):5} stage2={s2:<3} done", flush=True)
  # The table covers every setting, so that it and the chosen values stay whole when an
  # invocation sweeps only some.
  report(args.results, list(SETTINGS), args.seeds)
  print(f"wall time {time.time() - t0:.0f} s")


if __name__ == "__main__":
  main()
