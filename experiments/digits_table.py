"""The digits table: SGD vs ABSGD with the paper's losses, imbalance and label noise.

    python -m experiments.digits_table            # trains what is missing (resumable), reports
    python -m experiments.digits_table --report   # rebuilds the table and plot from the records

Each run appends its record to ``experiments/results/digits_table.jsonl``; re-running skips
the runs already there, and ``--report`` rebuilds ``digits_table.md`` and ``digits_table.png``
beside it from those records alone. Hyper-parameters: the learning rate, lam and stage-2 epoch
chosen by ``digits_sweep.py`` on a validation split for CE; the other losses reuse them (the
same budget for every method).
"""

from __future__ import annotations

import argparse
import os

from experiments import common

IMBALANCE = {
  "LT rho=10": dict(preset="digits-lt", rho=10),
  "LT rho=50": dict(preset="digits-lt", rho=50),
  "ST rho=10": dict(preset="digits-st", rho=10),
  "ST rho=50": dict(preset="digits-st", rho=50),
}
NOISE = {
  "sym 0.2": dict(preset="digits-noise", noise="sym", noise_rate=0.2),
  "sym 0.4": dict(preset="digits-noise", noise="sym", noise_rate=0.4),
  "asym 0.4": dict(preset="digits-noise", noise="asym", noise_rate=0.4),
}
# The sweep's "lt50-cbldam" grid (digits_sweep_chosen.json): LDAM's losses are ~30x CE's,
# so both LDAM rows get the learning rate, and ABSGD the lam, tuned with LDAM itself.
LDAM_CHOSEN = dict(lr=0.1, lam=100.0, stage2_epoch=0)
LDAM_CHOSEN_SGD_LR = 0.1
# name -> overrides. The other ABSGD rows take lr / lam / stage2 from CHOSEN below.
IMBALANCE_METHODS = {
  "SGD (CE)": dict(method="sgd"),
  "ABSGD (CE)": dict(method="absgd"),
  "SGD (Focal)": dict(method="sgd", loss="focal"),
  "ABSGD (Focal)": dict(method="absgd", loss="focal"),
  "SGD (CB-CE, DRW)": dict(method="sgd", class_weighting="drw", drw_epoch=22),
  "ABSGD (CB-CE)": dict(method="absgd", class_weighting="cb"),
  "SGD (LDAM, DRW)": dict(
    method="sgd",
    loss="ldam",
    head="cosine",
    class_weighting="drw",
    drw_epoch=22,
    lr=LDAM_CHOSEN_SGD_LR,
  ),
  "ABSGD (CB-LDAM)": dict(
    method="absgd", loss="ldam", head="cosine", class_weighting="cb", **LDAM_CHOSEN
  ),
  # Learning to reweight (Ren et al. 2018), the meta-learning family ("META" in the paper's
  # tables): SGD's learning rate, and a clean balanced meta set carved from the training data.
  "L2RW (CE)": dict(method="l2rw"),
}
NOISE_METHODS = {
  "SGD (CE)": dict(method="sgd"),
  "SGD (SCE)": dict(method="sgd", loss="sce"),
  "SGD (GCE)": dict(method="sgd", loss="gce"),
  "EG (SCE)": dict(method="eg", loss="sce"),
  "ABSGD (SCE)": dict(method="absgd", loss="sce"),
  "L2RW (CE)": dict(method="l2rw"),
}
# From experiments/results/digits_sweep_chosen.json (validation balanced accuracy, 5 seeds,
# at rho = 50 and 40% symmetric noise): each method family keeps its own best learning rate;
# the other settings of the group reuse the same values.
CHOSEN = {
  "imbalance": {"sgd": dict(lr=0.05), "absgd": dict(lr=0.1, lam=5.0, stage2_epoch=0)},
  "noise": {"sgd": dict(lr=0.05), "absgd": dict(lr=0.05, lam=-1.0, stage2_epoch=22)},
}
COMMON = dict(epochs=30, lr_decay_epochs=(22,), checkpoint=False)


EXPERIMENT = "digits_table"
GROUPS = (("imbalance", IMBALANCE, IMBALANCE_METHODS), ("noise", NOISE, NOISE_METHODS))


def run_all(seeds, results):
  from absgd_jax.train import make_config

  for group, settings, methods in GROUPS:
    for setting, spec in settings.items():
      for name, over in methods.items():
        for seed in seeds:
          key = f"{common.slug(setting)}__{common.slug(name)}__seed{seed}"
          spec_ = dict(spec)
          preset = spec_.pop("preset")
          family = "absgd" if over["method"] in ("absgd", "eg") else "sgd"  # l2rw: "sgd"
          kw = dict(
            COMMON,
            **spec_,
            **{**CHOSEN[group][family], **over},
            seed=seed,
            out_dir=common.run_dir(results, key),
          )
          rec = common.train_once(
            results,
            key,
            make_config(preset, **kw),
            dict(group=group, setting=setting, method=name, seed=seed),
          )
          if rec is not None:
            print(
              f"{setting:10} {name:18} seed {seed}: test {rec['test_acc']:.4f} "
              f"balanced {rec['test_balanced_acc']:.4f} ({rec['wall_s']:.1f}s)",
              flush=True,
            )


def report(results):
  recs = common.read_records(results)
  lines = []
  for group, settings, methods in GROUPS:
    cols = list(settings)
    lines += [f"| {group} | " + " | ".join(cols) + " |", "| --- |" + " --- |" * len(cols)]
    for name in methods:
      cells = []
      for setting in cols:
        v = [100 * r["test_acc"] for r in recs if r["setting"] == setting and r["method"] == name]
        cells.append(common.mean_std(v))
      lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("")
  table = "\n".join(lines)
  stem = os.path.splitext(results)[0]
  with open(stem + ".md", "w") as f:
    f.write(table)
  print(table)
  _plot(recs, stem + ".png")


def _plot(recs, path):
  from absgd_jax.train.plots import _pyplot, grouped_bars

  plt = _pyplot()
  fig, axes = plt.subplots(1, 2, figsize=(14, 4))
  for ax, (group, settings, methods) in zip(axes, GROUPS):
    series = {
      name: [
        [100 * r["test_acc"] for r in recs if r["setting"] == setting and r["method"] == name]
        for setting in settings
      ]
      for name in methods
    }
    grouped_bars(ax, list(settings), series, capsize=2)
    ax.set_ylabel("test accuracy (%)"), ax.set_ylim(0, 100), ax.legend(fontsize=7, ncol=2)
    ax.set_title(f"digits, {group}")
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
  ap.add_argument(
    "--results",
    default=common.results_path(EXPERIMENT),
    help="the records (JSONL); the table and plot are written beside it",
  )
  ap.add_argument("--report", action="store_true", help="only rebuild the table and plot")
  args = ap.parse_args(argv)
  if not args.report:
    run_all(args.seeds, args.results)
  report(args.results)


if __name__ == "__main__":
  main()
