"""Table 6 of the paper (label noise) on CIFAR-10: SGD, EG and ABSGD with lam < 0.

    python -m experiments.table6 --protocol reduced          # the CPU protocol, resumable
    python -m experiments.table6 --protocol full --budget-s 540   # the paper's, on a GPU
    python -m experiments.table6 --protocol reduced --report # the tables from the records
    python -m experiments.table6 --protocol tiny             # the whole pipeline, seconds

Rows: SGD (CE), SGD (SCE), SGD (GCE), EG (SCE), ABSGD (CE), ABSGD (SCE), and ABSGD (CE) and
ABSGD (SCE) with lam < 0 set online by a KL budget (their records keep lam's path, the
effective sample size and any class the collapse guard named, per epoch). The protocols are
``absgd_jax.train.protocols``' ``cifar-noise`` ones:

- ``full``: the paper's Section 5.1, after the SCE paper (Wang et al. 2019): its 4-layer CNN
  (``model=cnn4``) on 32 x 32 CIFAR-10, all 50,000 training images, 120 epochs at batch 128,
  lr divided by 10 at epochs 40 and 80, crop-and-flip augmentation; 20% and 40% symmetric
  and asymmetric noise (truck -> automobile, bird -> airplane, deer -> horse, cat <-> dog).
  lam acts from the first step, as the paper describes (``--stage2-epoch 40`` switches it on
  at the first decay instead). Tuned: lr in {0.001, 0.01, 0.1} for the SGD rows, lam in
  {-0.1, -0.5, -1, -2, -3} (the paper's grids); fixed where the paper tuned, to bound the cost:
  weight decay 1e-4, gamma 0.9, SCE alpha 0.1 and beta 1, GCE q 0.7 (the paper's TCE row is
  GCE here: TCE must start from a GCE-trained model). About 4 x 54 = 216 runs.
- ``reduced``: shrunk to about 70 CPU core-minutes, in a regime where SGD (CE) memorises:
  400 training images per class, 40% symmetric noise, 16 x 16 images, a CIFAR ResNet-8 (the
  paper's CNN costs 9x more per image here: 30 s an epoch of 5000 images against 3.4 s); no
  augmentation (with crop and flip, SGD (CE) had not begun to fit the flipped labels after 16
  epochs, so lam < 0 had nothing to fix; without it SGD's training accuracy on the noisy
  labels reaches 0.67 by epoch 19, its test accuracy falling from its peak); 30 epochs, lr
  x0.1 at epochs 6 and 24, ABSGD's and EG's lam on from epoch 6 (the digits noise schedule
  scaled by 1/5: lam starts at a stable point, before most of the memorisation, and not from
  step 0, where lam < 0 gives up whole classes); lr in {0.05, 0.1, 0.2}, lam in {-1, -2, -3}.
- ``tiny``: the full protocol's first setting at 16 px, 20 images a class, 1 epoch, two rows.

Tuning (seed 0, on a validation split of 10% of every class carved out before the noise, so
clean, scored by its accuracy after the last epoch; the test set is never read for it): each
SGD row takes the best of its learning rates; ABSGD and EG take the learning rate chosen for
SGD with the same loss and the best lam (the budget rows: of the budgets {0.1, 0.25, 0.5}).
The table then trains seeds 0, 1, 2 on the whole (noisy) training set and reports test
accuracy after the last epoch beside the best evaluation, which shows SGD's fall.

Records: ``experiments/results/noise_table.jsonl`` (reduced) and
``noise_protocol_gpu.jsonl`` (full), one line per finished run; a rerun skips them.
"""

from __future__ import annotations

import functools
import statistics

from experiments import common, tables
from experiments.common import mean_std

FAMILY = "cifar-noise"
PRESET = "cifar10-noise"
STAGE2 = 6  # The reduced protocol's epoch for lam (and EG) to switch on.
# Row -> (overrides, the SGD row whose learning rate a lam row takes; None: tunes lr).
ROWS: dict[str, tuple[dict, str | None]] = {
  "SGD (CE)": (dict(method="sgd", loss="ce"), None),
  "SGD (SCE)": (dict(method="sgd", loss="sce"), None),
  "SGD (GCE)": (dict(method="sgd", loss="gce"), None),
  "EG (SCE)": (dict(method="eg", loss="sce", stage2_epoch=STAGE2), "SGD (SCE)"),
  "ABSGD (CE)": (dict(method="absgd", loss="ce", stage2_epoch=STAGE2), "SGD (CE)"),
  "ABSGD (SCE)": (dict(method="absgd", loss="sce", stage2_epoch=STAGE2), "SGD (SCE)"),
  # lam < 0 set online by a KL budget (kl_absgd_weights(rho, sign=-1)) instead of the grid.
  "ABSGD (CE, KL)": (dict(method="absgd", loss="ce", stage2_epoch=STAGE2, lam=-1.0), "SGD (CE)"),
  "ABSGD (SCE, KL)": (dict(method="absgd", loss="sce", stage2_epoch=STAGE2, lam=-1.0), "SGD (SCE)"),
}
# Per protocol: the noise settings, the lr grid, the lam grid and the KL-budget grid.
# Spreading the weight evenly over the clean 60% and giving the flipped 40% nothing has
# KL(p || uniform) = -log 0.6 = 0.51 (docs/kl_budget.md, section 4); the budget grid reaches
# up to it.
RHO_GRID = (0.1, 0.25, 0.5)
SETTINGS = {
  "sym 0.2": dict(noise="sym", noise_rate=0.2),
  "sym 0.4": dict(noise="sym", noise_rate=0.4),
  "asym 0.2": dict(noise="asym", noise_rate=0.2),
  "asym 0.4": dict(noise="asym", noise_rate=0.4),
}
GRIDS = {
  "reduced": dict(lr=(0.05, 0.1, 0.2), lam=(-1.0, -2.0, -3.0), kl_budget=RHO_GRID),
  "full": dict(lr=(0.001, 0.01, 0.1), lam=(-0.1, -0.5, -1.0, -2.0, -3.0), kl_budget=RHO_GRID),
  "tiny": dict(lr=(0.01,), lam=(-1.0,), kl_budget=RHO_GRID[:1]),
}
PROTOCOL_SETTINGS = {
  "reduced": ("sym 0.4",),  # The protocol holds the noise itself.
  "full": tuple(SETTINGS),
  "tiny": ("sym 0.2",),
}
TINY_ROWS = ("SGD (CE)", "ABSGD (CE)")
SEEDS = (0, 1, 2)
VAL_FRACTION = 0.1
RESULTS = {"reduced": "noise_table", "full": "noise_protocol_gpu", "tiny": "noise_tiny"}
# The paper's Table 6, CIFAR-10 (4-layer CNN, 32 px, 120 epochs, 5 runs); its TCE row stands
# where our GCE row is.
PAPER = {
  "sym 0.2": {"SGD (CE)": 88.59, "SGD (SCE)": 90.05, "EG (SCE)": 90.25, "ABSGD (SCE)": 91.15},
  "sym 0.4": {"SGD (CE)": 85.75, "SGD (SCE)": 87.83, "EG (SCE)": 88.13, "ABSGD (SCE)": 88.65},
  "asym 0.2": {"SGD (CE)": 86.62, "SGD (SCE)": 90.25, "EG (SCE)": 90.55, "ABSGD (SCE)": 91.04},
  "asym 0.4": {"SGD (CE)": 80.81, "SGD (SCE)": 81.91, "EG (SCE)": 82.41, "ABSGD (SCE)": 83.10},
}


def results_path(protocol: str) -> str:
  return tables.default_results(RESULTS[protocol], protocol)


def rows(protocol: str, stage2_epoch: int | None = None) -> dict:
  """The rows at ``protocol``: on ``full`` and ``tiny`` lam acts from ``stage2_epoch``
  (default 0, the paper's), on ``reduced`` from epoch 6."""
  if protocol == "reduced" and stage2_epoch is None:
    return dict(ROWS)
  out = {}
  for name, (over, lr_from) in ROWS.items():
    if protocol == "tiny" and name not in TINY_ROWS:
      continue
    over = dict(over)
    if "stage2_epoch" in over:
      over["stage2_epoch"] = stage2_epoch or 0
    out[name] = (over, lr_from)
  return out


def config(protocol: str, setting: str, row_overrides: dict, overrides: dict, data_dir: str, **kw):
  from absgd_jax.train import make_config
  from absgd_jax.train.protocols import protocol as protocol_of

  values = {
    **protocol_of(FAMILY, protocol),
    **(SETTINGS[setting] if protocol != "reduced" else {}),
    **overrides,
    **row_overrides,
    **kw,
    "data_dir": data_dir,
  }
  return make_config(PRESET, values)


def guard(row: str) -> dict:
  """The batch guard of a budget row's runs: the weigher's lam < 0 default, "kl" (the records
  of runs made with the range guard, before it was the default there, have no such field)."""
  return dict(guard="kl") if "KL" in row else {}


def plan(
  protocol: str,
  *,
  data_dir: str,
  results: str | None = None,
  seeds=SEEDS,
  overrides=(),
  settings=None,
  stage2_epoch: int | None = None,
) -> list:
  """Table 6's runs at ``protocol``, setting by setting: the SGD rows' tuning, then the lam
  rows' (at their SGD row's chosen lr), then the table's runs seed by seed (a stopped table has
  every row at the seeds it reached)."""
  results = results or results_path(protocol)
  recs = {r["key"]: r for r in common.read_records(results)}
  grid_of, row_set = GRIDS[protocol], rows(protocol, stage2_epoch)
  overrides = dict(overrides)
  items: list = []
  for setting in settings or PROTOCOL_SETTINGS[protocol]:

    def make(over, setting=setting, **kw):
      return functools.partial(config, protocol, setting, over, overrides, data_dir, **kw)

    chosen: dict[str, dict] = {}
    for lr_rows in (True, False):  # The SGD rows first: the lam rows take their lr.
      for row, (over, lr_from) in row_set.items():
        if (lr_from is None) != lr_rows:
          continue
        if lr_from is not None and lr_from not in chosen:
          items.append(tables.Wait(f"{setting} {row}: waits for {lr_from}'s learning rate"))
          continue
        base = {} if lr_from is None else dict(lr=chosen[lr_from]["lr"])
        field = "lr" if lr_from is None else "kl_budget" if "KL" in row else "lam"
        scores = []
        for value in grid_of[field]:
          point = {**base, field: value}
          fields = dict(phase="tune", setting=setting, row=row, point=point, seed=0, **guard(row))
          key = common.run_key(fields)
          cfg = make(
            over, **point, seed=0, val_fraction=VAL_FRACTION, out_dir=tables.out_dir(results, key)
          )
          items.append(tables.Run(results, key, fields, cfg, label=_label(fields)))
          rec = recs.get(key)
          scores.append((value, None if rec is None else rec.get("val_acc")))
        best = tables.choose(scores)
        if best is None:
          items.append(tables.Wait(f"{setting} {row}: its table runs wait for its tuning"))
          continue
        chosen[row] = {**base, field: best}
    for seed in seeds:
      for row, (over, _) in row_set.items():
        if row not in chosen:
          continue
        fields = dict(
          phase="table", setting=setting, row=row, point=chosen[row], seed=seed, **guard(row)
        )
        key = common.run_key(fields)
        cfg = make(over, **chosen[row], seed=seed, out_dir=tables.out_dir(results, key))
        items.append(tables.Run(results, key, fields, cfg, label=_label(fields)))
  return items


def _label(fields: dict) -> str:
  return (
    f"{fields['phase']} {fields['setting']} {fields['row']} {_point(fields['point'])} "
    f"seed {fields['seed']}"
  )


def _row_label(record: dict) -> str:
  """A record's row, with the guard of a budget row made with the range guard."""
  row = record["row"]
  return f"{row[:-1]}, range guard)" if "KL" in row and "guard" not in record else row


def report(path: str, *, rows=ROWS, paper=PAPER["sym 0.4"], settings=("sym 0.4",)) -> str:
  """The tuning grids and the table of each noise setting, from the records alone."""
  recs = [dict(r, row=_row_label(r)) for r in common.load_jsonl(path).values()]
  rows = list(rows) + sorted({r["row"] for r in recs} - set(rows))
  lines = [
    "Tuning (seed 0, clean validation split, accuracy % after the last epoch):",
    "",
    "| setting | row | grid: score |",
    "| --- | --- | --- |",
  ]
  for s in settings:
    for row in rows:
      hit = [r for r in recs if r["phase"] == "tune" and r["setting"] == s and r["row"] == row]
      cells = ", ".join(f"{_point(r['point'])}: {100 * r['val_acc']:.2f}" for r in hit)
      lines.append(f"| {s} | {row} | {cells or '-'} |")
  for s in settings:
    lines += [
      "",
      f"Test accuracy % ({s}), mean +- std over seeds:",
      "",
      "| row | chosen | final | best evaluation | train acc (noisy labels) | "
      "flipped / clean mean weight, last epoch | paper |",
      "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
      hit = [r for r in recs if r["phase"] == "table" and r["setting"] == s and r["row"] == row]
      if not hit:
        lines.append(f"| {row} | - | not run yet | - | - | - | {paper.get(row, '-')} |")
        continue
      last = [r["history"][-1] for r in hit]
      ratio = [
        h["flipped_mean_weight"] / h["clean_mean_weight"]
        for h in last
        if h.get("flipped_mean_weight") is not None and h.get("clean_mean_weight")
      ]
      w = (
        f"{statistics.mean(h['flipped_mean_weight'] for h in last):.3f} / "
        f"{statistics.mean(h['clean_mean_weight'] for h in last):.3f}"
        if ratio and row.split()[0] != "SGD"
        else "-"
      )
      lines.append(
        f"| {row} | {_point(hit[0]['point'])} | {mean_std([r['test_acc'] for r in hit], 100)} | "
        f"{mean_std([r['best_test_acc'] for r in hit], 100)} | "
        f"{mean_std([r['train_acc'] for r in hit], 100)} | {w} | {paper.get(row, '-')} |"
      )
  cpu = sum(r["cpu_s"] for r in recs)
  lines += ["", f"{len(recs)} runs, {cpu / 60:.1f} CPU core-minutes in all (process time)."]
  return "\n".join(lines) + "\n"


def report_protocol(protocol: str, results: str | None = None, settings=None, stage2_epoch=None):
  """Table 6 at ``protocol``: :func:`report` for each of its settings."""
  path = results or results_path(protocol)
  row_set = rows(protocol, stage2_epoch)
  parts = []
  for s in settings or PROTOCOL_SETTINGS[protocol]:
    paper = PAPER.get(s, {}) if protocol != "reduced" else PAPER["sym 0.4"]
    parts.append(
      f"Table 6, {s} ({protocol} protocol)\n\n"
      + report(path, rows=row_set, paper=paper, settings=(s,))
    )
  return "\n".join(parts)


def _point(p: dict) -> str:
  return ", ".join(f"{k}={v:g}" for k, v in p.items())


def main(argv=None):
  ap = tables.parser(__doc__)
  ap.add_argument(
    "--results", "--out", default=None, help="the record file (default: the protocol's)"
  )
  ap.add_argument("--settings", nargs="+", choices=list(SETTINGS), default=None)
  ap.add_argument(
    "--stage2-epoch",
    type=int,
    default=None,
    help="the epoch lam switches on (full: 0, the paper's; reduced: 6)",
  )
  args = tables.parse(ap, argv)
  results = args.results or results_path(args.protocol)
  if not args.report:
    extra = tables.overrides(args)

    def plan_of(strategy):
      return plan(
        args.protocol,
        data_dir=args.data_dir,
        results=results,
        seeds=args.seeds,
        overrides={**strategy.settings(), **extra},
        settings=args.settings,
        stage2_epoch=args.stage2_epoch,
      )

    tables.run(args, plan_of, "experiments.table6", record_files=[results])
    if args.worker:
      return
  print(report_protocol(args.protocol, results, args.settings, args.stage2_epoch))


if __name__ == "__main__":
  main()
