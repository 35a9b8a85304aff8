"""Tunes the demo's methods alike on a validation split; the demo uses the values it chooses.

    python -m experiments.demo_tuning                # runs what is missing, then the report
    python -m experiments.demo_tuning --report       # the report from the JSONL only

Every method of every demo row (``absgd_jax.train.demo.ROWS``) gets the same budget: 8 grid
points, each trained with 3 seeds on 80% of every class of the training data and scored by
balanced accuracy on the other 20% (carved out before the label noise, so its labels are
clean; the test set is never read for the choice). SGD's 8 points are learning rates; ABSGD's
are 4 learning rates x 2 values of lam (its switch epoch is the row's, fixed beforehand:
from the start under imbalance, from epoch 30 under noise). The best mean score wins (ties:
the first point), and the demo's ``CHOSEN`` must hold these choices (a test checks it).

One JSON line per finished run in ``experiments/results/demo_tuning.jsonl``, so a run that is
stopped resumes where it was.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

from absgd_jax.train import demo
from absgd_jax.train.compile_cache import use_compile_cache

# 8 points for every method. SGD: 8 learning rates. ABSGD: 4 learning rates x 2 values of lam.
# The grids grew twice, alike for both methods, each time because SGD's best noise point sat
# at its grid's low edge: first SGD lr {0.025, ..., 0.2} and ABSGD lr {0.05, 0.1} (4 points),
# then 0.00625 and 0.0125 for SGD and 0.025 for ABSGD (6), then 0.0015625 and 0.003125 for
# SGD and 0.0125 for ABSGD (8).
LRS = (0.0015625, 0.003125, 0.00625, 0.0125, 0.025, 0.05, 0.1, 0.2)
ABSGD_LRS = (0.0125, 0.025, 0.05, 0.1)
GRID: dict[str, dict[str, list[dict]]] = {
  "imbalance": {
    "sgd": [dict(lr=lr) for lr in LRS],
    "absgd": [dict(lr=lr, lam=lam) for lr in ABSGD_LRS for lam in (2.0, 5.0)],
  },
  "noise, CE": {
    "sgd": [dict(lr=lr) for lr in LRS],
    "absgd": [dict(lr=lr, lam=lam) for lr in ABSGD_LRS for lam in (-1.0, -2.0)],
  },
  "noise, SCE": {
    "sgd": [dict(lr=lr) for lr in LRS],
    "absgd": [dict(lr=lr, lam=lam) for lr in ABSGD_LRS for lam in (-1.0, -2.0)],
  },
}
SEEDS = (0, 1, 2)
# Compiled steps, reused across seeds and invocations (git ignores runs/).
CACHE = os.path.join(
  os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "runs", "jax_cache"
)
VAL_FRACTION = 0.2
DEFAULT_OUT = os.path.join(
  os.path.dirname(os.path.abspath(__file__)), "results", "demo_tuning.jsonl"
)


def _key(row: str, method: str, point: dict, seed: int) -> str:
  return json.dumps([row, method, sorted(point.items()), seed])


def load(path: str) -> dict[str, dict]:
  """Finished runs by key (a later line for the same key wins)."""
  recs = {}
  if os.path.exists(path):
    with open(path) as f:
      for line in f:
        if line.strip():
          r = json.loads(line)
          recs[_key(r["row"], r["method"], r["point"], r["seed"])] = r
  return recs


def tune(path: str, rows=None, seeds=SEEDS, **overrides) -> None:
  """Trains every grid point x seed not yet in ``path``; ``overrides`` shrink runs (tests)."""
  done = load(path)
  use_compile_cache(CACHE)
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  for row in rows or GRID:
    for method, points in GRID[row].items():
      for point in points:
        for seed in seeds:
          if _key(row, method, point, seed) in done:
            continue
          t0 = time.time()
          cfg = demo.row_config(
            row,
            method,
            seed,
            "/tmp/absgd-demo-tuning",
            val_fraction=VAL_FRACTION,
            **point,
            **overrides,
          )
          rec, _ = demo.run_one(cfg)
          line = dict(
            row=row,
            method=method,
            point=point,
            seed=seed,
            overrides=overrides,
            val_balanced_acc=rec["val_balanced_acc"],
            wall_s=time.time() - t0,
          )
          with open(path, "a") as f:  # One whole line per run: a stop loses one run at most.
            f.write(json.dumps(line) + "\n")
          print(
            f"{row:11} {method:6} {point} seed {seed}: val balanced "
            f"{rec['val_balanced_acc']:.4f} ({line['wall_s']:.0f} s)",
            flush=True,
          )


def choose(path: str, seeds=SEEDS) -> tuple[dict, dict]:
  """``(chosen, scores)``: per row and method the best point by mean validation score, and
  every point's scores. Points missing a seed are left out."""
  recs = load(path)
  chosen, scores = {}, {}
  for row, methods in GRID.items():
    for method, points in methods.items():
      table = []
      for point in points:
        vals = [
          recs[_key(row, method, point, s)]["val_balanced_acc"]
          for s in seeds
          if _key(row, method, point, s) in recs
        ]
        if len(vals) == len(seeds):
          table.append((point, vals))
      scores.setdefault(row, {})[method] = table
      if table:
        best = max(range(len(table)), key=lambda i: (statistics.mean(table[i][1]), -i))
        chosen.setdefault(row, {})[method] = table[best][0]
  return chosen, scores


def report(path: str, seeds=SEEDS) -> str:
  chosen, scores = choose(path, seeds)
  lines = [
    f"Validation balanced accuracy % (mean over seeds {', '.join(map(str, seeds))}; "
    f"{int(100 * VAL_FRACTION)}% of every class held out before noise)",
    "",
    "| row | method | grid point: score | chosen |",
    "| --- | --- | --- | --- |",
  ]
  for row, methods in scores.items():
    for method, table in methods.items():
      cells = ", ".join(
        "{" + ", ".join(f"{k} {v:g}" for k, v in p.items()) + f"}}: {100 * statistics.mean(v):.2f}"
        for p, v in table
      )
      pick = chosen.get(row, {}).get(method)
      lines.append(f"| {row} | {method} | {cells or '-'} | {pick or '-'} |")
  lines += ["", "CHOSEN = " + json.dumps(chosen)]
  text = "\n".join(lines)
  print(text)
  return text


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--out", default=DEFAULT_OUT, help="the JSONL of finished runs")
  ap.add_argument("--rows", nargs="+", choices=list(GRID), default=None)
  ap.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
  ap.add_argument("--epochs", type=int, default=None, help="shrink every run (smoke tests)")
  ap.add_argument("--report", action="store_true", help="only the report, from the JSONL")
  args = ap.parse_args(argv)
  if not args.report:
    overrides = {} if args.epochs is None else dict(epochs=args.epochs)
    tune(args.out, args.rows, tuple(args.seeds), **overrides)
  report(args.out, tuple(args.seeds))


if __name__ == "__main__":
  main()
