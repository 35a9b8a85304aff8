"""The demo: momentum SGD vs ABSGD on scikit-learn's digits, imbalanced and with noisy labels.

    python -m absgd_jax.train.demo [--seeds 0 1 2 3 4] [--out runs/demo]

Offline, on a CPU, in a few minutes. For each setting it trains the same MLP with the same
schedule by momentum SGD and by ABSGD, over several seeds, prints one table of test accuracy
(mean +- std) and writes PNG plots: the accuracies side by side, and each class's mean ABSGD
weight over training (the paper's Figure 4, right).

Every hyper-parameter below comes from ``experiments/digits_sweep.py``, a sweep scored on a
validation split carved out of the training data (never the test set) in which SGD's learning
rate was tuned with the same budget as ABSGD's; ``benchmarks/RESULTS.md`` has the grid and
the scores.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

# setting -> (preset, overrides of both methods, {method: its own overrides}). Each method's
# learning rate, lam and stage-2 epoch are its best on the sweep's validation split
# (experiments/results/digits_sweep_chosen.json).
SETTINGS: dict[str, tuple[str, dict, dict]] = {
    "long-tailed, rho=50": ("digits-lt", dict(rho=50), {
        "sgd": dict(lr=0.05),
        "absgd": dict(lr=0.1, lam=5.0, stage2_epoch=0)}),
    "40% symmetric noise": ("digits-noise", dict(noise_rate=0.4), {
        "sgd": dict(lr=0.05),
        "absgd": dict(lr=0.05, lam=-1.0, stage2_epoch=22)}),
}
COMMON = dict(epochs=30, lr_decay_epochs=(22,), checkpoint=False)


def _fmt(values):
  if len(values) == 1:
    return f"{100 * values[0]:.2f}"
  return f"{100 * statistics.mean(values):.2f} +- {100 * statistics.stdev(values):.2f}"


def run(seeds=(0, 1, 2, 3, 4), out="runs/demo", progress=True):
  from absgd_jax.train import Trainer, make_config
  t0 = time.time()
  results: dict[str, dict[str, list]] = {}
  weight_history = None
  jobs = [(s, m, seed) for s in SETTINGS for m in ("sgd", "absgd") for seed in seeds]
  bar = None
  if progress:
    from tqdm.auto import tqdm
    bar = tqdm(total=len(jobs), desc="demo runs")
  for setting, method, seed in jobs:
    preset, shared, own = SETTINGS[setting]
    kw = dict(COMMON, **shared, **own[method], method=method, seed=seed,
              out_dir=os.path.join(out, f"{preset}-{method}-seed{seed}"))
    trainer = Trainer(make_config(preset, **kw), progress=False)
    final = trainer.fit()["final"]
    entry = results.setdefault(setting, {}).setdefault(method, [])
    entry.append({"test_acc": final["test_acc"], "test_balanced_acc": final["test_balanced_acc"]})
    if method == "absgd" and preset == "digits-lt" and weight_history is None:
      weight_history = [(r["epoch"], r["class_mean_weight"]) for r in trainer.history]
    if bar is not None:
      bar.update(1)
  if bar is not None:
    bar.close()

  header = f"{'setting':24}{'SGD':>18}{'ABSGD':>18}{'SGD balanced':>18}{'ABSGD balanced':>18}"
  lines = [f"digits, MLP, {len(seeds)} seeds, test accuracy % (mean +- std)", header]
  for setting, by_method in results.items():
    cells = [_fmt([r[k] for r in by_method[m]]) for k in ("test_acc", "test_balanced_acc")
             for m in ("sgd", "absgd")]
    lines.append(f"{setting:24}" + "".join(f"{c:>18}" for c in cells))
  table = "\n".join(lines)
  print(table)
  os.makedirs(out, exist_ok=True)
  with open(os.path.join(out, "demo_results.json"), "w") as f:
    json.dump({"seeds": list(seeds), "settings": {k: [v[0], v[1], v[2]] for k, v in
                                                   SETTINGS.items()},
               "results": results, "wall_time_s": time.time() - t0}, f, indent=1)
  with open(os.path.join(out, "demo_table.txt"), "w") as f:
    f.write(table + "\n")
  _plot(results, weight_history, out)
  print(f"plots and results in {out}/ ({time.time() - t0:.0f} s)")
  return results


def _plot(results, weight_history, out):
  from absgd_jax.train.plots import _pyplot, grouped_bars, plot_class_weights
  plt = _pyplot()
  names = list(results)
  series = {m.upper(): [[100 * r["test_acc"] for r in results[n][m]] for n in names]
            for m in ("sgd", "absgd")}
  fig, ax = plt.subplots(figsize=(7, 3.6))
  grouped_bars(ax, names, series)
  lo = min(sum(v) / len(v) for per_group in series.values() for v in per_group)
  ax.set_ylabel("test accuracy (%)"), ax.set_ylim(max(0, lo - 15), 100), ax.legend()
  fig.tight_layout()
  fig.savefig(os.path.join(out, "demo_accuracy.png"), dpi=110)
  plt.close(fig)
  if weight_history:
    plot_class_weights(weight_history, os.path.join(out, "demo_class_weights.png"),
                       title="long-tailed digits: class 0 largest, class 9 smallest")


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
  ap.add_argument("--out", default="runs/demo")
  ap.add_argument("--no-progress", action="store_true")
  args = ap.parse_args(argv)
  run(tuple(args.seeds), args.out, progress=not args.no_progress)


if __name__ == "__main__":
  main()
