"""The small hyper-parameter sweep behind the digits demo and table, on a validation split.

A fifth of every class of the (imbalanced, noisy) training set is held out; each grid point
trains on the rest and is scored by validation balanced accuracy, never the test set. Every
run's summary JSON is saved, so re-running skips what is done and the table regenerates from
the files.

    python benchmarks/digits_sweep.py [--seeds 0 1 2 3 4] [--out benchmarks/results/digits_sweep]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

SETTINGS = {
    "lt50": dict(preset="digits-lt", rho=50),
    "st50": dict(preset="digits-st", rho=50),
    "sym40": dict(preset="digits-noise", noise_rate=0.4),
    # LDAM's logits carry a scale of 30, so its losses (and the lam that suits them) are far
    # larger than CE's: a grid of its own for ABSGD (CB-LDAM).
    "lt50-cbldam": dict(preset="digits-lt", rho=50, loss="ldam", head="cosine",
                        class_weighting="cb"),
}
# The grid: SGD has no lam; ABSGD's lam from the paper's ranges (Sections 4.1 and 5.1) and the
# learning rate for both methods, so the baseline gets the same tuning budget.
LR_GRID = (0.05, 0.1)
# Section 3.6's two-stage strategy: ABSGD from the start (0) or from the learning-rate decay
# at epoch 22 of 30, as the CIFAR protocol switches it on at the decay (epoch 160 of 200).
STAGE2_GRID = (0, 22)
LAM_GRID = {"lt50": (0.5, 1.0, 2.0, 5.0), "st50": (0.5, 1.0, 2.0, 5.0),
            "sym40": (-1.0, -2.0, -3.0, -5.0), "lt50-cbldam": (20.0, 50.0, 100.0)}


def run_one(setting: str, method: str, lr: float, lam: float | None, seed: int, out: str,
            stage2: int = 0):
  from absgd_jax.train import Trainer, make_config
  name = f"{setting}__{method}__lr{lr}__lam{lam}" + (f"__s2{stage2}" if stage2 else "")
  name += f"__seed{seed}"
  path = os.path.join(out, name + ".json")
  if os.path.exists(path):
    with open(path) as f:
      return json.load(f)
  spec = dict(SETTINGS[setting])
  preset = spec.pop("preset")
  kw = dict(spec, method=method, lr=lr, seed=seed, val_fraction=0.2, checkpoint=False,
            out_dir=os.path.join(out, "runs", name), epochs=30, lr_decay_epochs=(22,))
  if lam is not None:
    kw["lam"] = lam
    kw["stage2_epoch"] = stage2
  summary = Trainer(make_config(preset, **kw), progress=False, log=False).fit()
  record = {"setting": setting, "method": method, "lr": lr, "lam": lam, "stage2": stage2,
            "seed": seed,
            "val_balanced_acc": summary["final"]["val_balanced_acc"],
            "test_acc": summary["final"]["test_acc"], "wall_s": summary["wall_time_s"]}
  os.makedirs(out, exist_ok=True)
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(record, f)
  os.replace(tmp, path)  # never a half-written summary
  return record


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
  ap.add_argument("--settings", nargs="+", default=list(SETTINGS))
  ap.add_argument("--out", default="benchmarks/results/digits_sweep")
  args = ap.parse_args(argv)
  t0 = time.time()
  best = {}
  for setting in args.settings:
    rows = []
    for lr in LR_GRID:
      rows.append(("sgd", lr, None, 0))
      rows += [("absgd", lr, lam, s2) for s2 in STAGE2_GRID for lam in LAM_GRID[setting]]
    for method, lr, lam, s2 in rows:
      recs = [run_one(setting, method, lr, lam, s, args.out, s2) for s in args.seeds]
      v = [r["val_balanced_acc"] for r in recs]
      mean = statistics.mean(v)
      print(f"{setting:6} {method:6} lr={lr:<5} lam={str(lam):5} stage2={s2:<3} val balanced "
            f"acc {mean:.4f} +- {statistics.pstdev(v):.4f}", flush=True)
      key = (setting, method)
      if key not in best or mean > best[key][0]:
        best[key] = (mean, lr, lam, s2)
  print("\nchosen (by validation balanced accuracy):")
  for (setting, method), (mean, lr, lam, s2) in best.items():
    print(f"  {setting:6} {method:6} lr={lr} lam={lam} stage2={s2}  val {mean:.4f}")
  chosen_path = os.path.join(args.out, "chosen.json")
  chosen = {}
  if os.path.exists(chosen_path):  # keep the settings this invocation did not sweep
    with open(chosen_path) as f:
      chosen = json.load(f)
  chosen.update({f"{s}/{m}": {"lr": lr, "lam": lam, "stage2_epoch": s2, "val_balanced_acc": mean}
                 for (s, m), (mean, lr, lam, s2) in best.items()})
  with open(chosen_path, "w") as f:
    json.dump(chosen, f, indent=1)
  print(f"wall time {time.time() - t0:.0f} s")


if __name__ == "__main__":
  main()
