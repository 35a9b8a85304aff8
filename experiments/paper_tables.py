"""The paper's Tables 1 and 2 on CIFAR-10 (rho = 100, LT and ST), with logit adjustment beside them.

    python -m experiments.paper_tables --protocol reduced      # the CPU protocol, resumable
    python -m experiments.paper_tables --protocol full         # the paper's protocol, a GPU
    python -m experiments.paper_tables --protocol reduced --report   # the table from the records
    python -m experiments.paper_tables --tiny --results /tmp/t.jsonl   # the pipeline, seconds

Protocols (both: batch 128, lr 0.1 after a linear warm-up, x0.01 at two decays, weight decay
2e-4, torch's momentum form, crop-and-flip augmentation):

- ``full``: Section 4.1 as the presets ``cifar10-lt`` / ``cifar10-st`` hold it: ResNet-32 at
  32 px, 200 epochs, a 5-epoch warm-up, decays at 160 and 180.
- ``reduced``: the protocol on which the kit matches a PyTorch reference
  (``experiments/parity/head_to_head.py``): ResNet-8 at 16 px (area-averaged), crop padding 2,
  60 epochs, a 2-epoch warm-up, decays at 48 and 54. About 7 CPU core-minutes a run on LT
  (12,406 images) and twice that on ST (25,250: five classes of 5,000, five of 50).

In both, ABSGD's lam switches on at the first decay (Section 3.6: lam = inf, plain momentum
SGD, before it), and the class weights of every CB and DRW row switch on at that same epoch, so
that each ABSGD row differs from its SGD row in the optimizer alone.

Rows (``PAIRS`` says which SGD row each ABSGD row is compared with):

=========================  =================================================================
SGD (CE), ABSGD (CE)        cross-entropy (Table 1)
SGD (LA), ABSGD (LA)        logit-adjusted CE (Menon et al., 2021; tau = 1), the strongest
                            cheap long-tail baseline: does ABSGD add to it?
SGD (CB-CE, DRW),           class-balanced CE deferred to the first decay (Cao et al.'s DRW)
ABSGD (CB-CE)               (Table 2)
LDAM-DRW, ABSGD (CB-LDAM)   LDAM (cosine head, s = 30, max margin 0.5), DRW (Table 2)
ABSGD (CE, KL budget)       lam set online from a KL budget rho instead of a grid
=========================  =================================================================

Tuning, never on the test set: each ABSGD row trains seed 0 on the training set less a
validation split of 10% of every class, once per point of its grid (three values of lam, or of
the KL budget for the KL row: the same number for every row), and keeps the point with the
best validation balanced accuracy. The table's runs then train on the whole training set with
seeds 0, 1, 2 and report test accuracy after the last epoch. The SGD rows have nothing to tune.

Every run checkpoints each epoch under ``runs/`` and appends one record to
``experiments/results/paper_tables_<protocol>.jsonl``; a rerun skips recorded runs and resumes
an interrupted one from its checkpoint. Several workers may share the queue (each claims a
run with a lock file). The queue runs Table 1's CE pairs (LT, then ST) first.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from experiments import common
from experiments.common import mean_std

SETTINGS = {"LT": "cifar10-lt", "ST": "cifar10-st"}
ROWS = {
  "SGD (CE)": dict(method="sgd", loss="ce"),
  "ABSGD (CE)": dict(method="absgd", loss="ce"),
  "SGD (LA)": dict(method="sgd", loss="la"),
  "ABSGD (LA)": dict(method="absgd", loss="la"),
  "SGD (CB-CE, DRW)": dict(method="sgd", loss="ce", class_weighting="drw"),
  "ABSGD (CB-CE)": dict(method="absgd", loss="ce", class_weighting="drw"),
  "LDAM-DRW": dict(method="sgd", loss="ldam", head="cosine", class_weighting="drw"),
  "ABSGD (CB-LDAM)": dict(method="absgd", loss="ldam", head="cosine", class_weighting="drw"),
  "ABSGD (CE, KL budget)": dict(method="absgd", loss="ce"),
}
PAIRS = {
  "ABSGD (CE)": "SGD (CE)",
  "ABSGD (LA)": "SGD (LA)",
  "ABSGD (CB-CE)": "SGD (CB-CE, DRW)",
  "ABSGD (CB-LDAM)": "LDAM-DRW",
  "ABSGD (CE, KL budget)": "SGD (CE)",
  "SGD (LA)": "SGD (CE)",
}
# The tuned setting of each ABSGD row and its grid (three points each). LDAM's losses are on
# the scale of its logit scale s = 30, several times CE's, and lam is relative to the losses.
GRIDS = {
  "ABSGD (CE)": ("lam", (1.0, 3.0, 10.0)),
  "ABSGD (LA)": ("lam", (1.0, 3.0, 10.0)),
  "ABSGD (CB-CE)": ("lam", (1.0, 3.0, 10.0)),
  "ABSGD (CB-LDAM)": ("lam", (10.0, 30.0, 100.0)),
  "ABSGD (CE, KL budget)": ("kl_budget", (0.01, 0.03, 0.1)),
}
# The (setting, row) cells of each protocol, in the order the queue trains them.
_CE_FIRST = [("LT", "SGD (CE)"), ("LT", "ABSGD (CE)"), ("ST", "SGD (CE)"), ("ST", "ABSGD (CE)")]
CELLS = {
  "reduced": _CE_FIRST
  + [
    ("LT", "SGD (LA)"),
    ("LT", "ABSGD (LA)"),
    ("LT", "LDAM-DRW"),
    ("LT", "ABSGD (CB-LDAM)"),
    ("ST", "SGD (CB-CE, DRW)"),
    ("ST", "ABSGD (CB-CE)"),
    ("LT", "ABSGD (CE, KL budget)"),
  ],
  "full": _CE_FIRST
  + [
    (s, r)
    for s in SETTINGS
    for r in ROWS
    if r not in ("SGD (CE)", "ABSGD (CE)", "ABSGD (CE, KL budget)")
  ],
}
PROTOCOLS = {
  # On an H200 an epoch of one LT run trains in 0.47 s, an evaluation of the test set takes
  # 0.21 s and an orbax checkpoint 0.48 s (benchmarks/epoch_overhead.py): the tables need the
  # last epoch's accuracy, and a checkpoint every 10 epochs still lets a stopped run resume.
  "full": dict(
    momentum_form="pytorch",
    stage2_epoch=160,
    drw_epoch=160,
    eval_every=10,
    checkpoint_every=10,
  ),
  "reduced": dict(
    model="resnet8",
    image_size=16,
    crop_padding=2,
    epochs=60,
    warmup_epochs=2,
    lr_decay_epochs=(48, 54),
    lr_decay_factor=0.01,
    stage2_epoch=48,
    drw_epoch=48,
    eval_every=4,
    momentum_form="pytorch",
  ),
}
# A CPU run of the whole pipeline in seconds: 8 px, a head class of 200 images, 3 epochs.
TINY = dict(
  model="resnet8",
  epochs=3,
  image_size=8,
  n_max=200,
  warmup_epochs=1,
  lr_decay_epochs=(2,),
  stage2_epoch=2,
  drw_epoch=2,
  eval_every=1,
  crop_padding=1,
  test_per_class=10,
  momentum_form="pytorch",
)
# Tables 1 and 2 of the paper, CIFAR-10, rho = 100, ResNet-32 (Table 2 gives no std).
PAPER = {
  ("SGD (CE)", "LT"): "71.75 +- 0.75",
  ("SGD (CE)", "ST"): "63.12 +- 0.63",
  ("ABSGD (CE)", "LT"): "72.43 +- 0.31",
  ("ABSGD (CE)", "ST"): "66.24 +- 0.35",
  ("SGD (CB-CE, DRW)", "LT"): "72.37",
  ("SGD (CB-CE, DRW)", "ST"): "61.84",
  ("ABSGD (CB-CE)", "LT"): "79.34",
  ("ABSGD (CB-CE)", "ST"): "72.93",
  ("LDAM-DRW", "LT"): "77.03",
  ("LDAM-DRW", "ST"): "76.92",
  ("ABSGD (CB-LDAM)", "LT"): "80.45",
  ("ABSGD (CB-LDAM)", "ST"): "78.33",
}
# Menon et al. (2021), Table 2, CIFAR-10-LT rho = 100, ResNet-32: CE 70.4, LA (loss) 77.9.
OTHER = {("SGD (LA)", "LT"): "77.9 (Menon et al.)"}
# The PyTorch reference (LDAM-DRW's recipe) on the reduced protocol's LT, seeds 0-2:
# experiments/results/parity_head_to_head.jsonl.
REFERENCE = {("reduced", "SGD (CE)", "LT"): "52.07 +- 1.13 (PyTorch reference)"}
VAL_FRACTION = 0.1
SEEDS = (0, 1, 2)


def _config(protocol: str, setting: str, row: str, overrides: dict, **fields):
  from absgd_jax.train import make_config

  base = dict(PROTOCOLS[protocol], **overrides)
  return make_config(SETTINGS[setting], base, **ROWS[row], **fields)


def tune_key(setting: str, row: str, value: float) -> str:
  return f"tune__{setting}__{common.slug(row)}__{GRIDS[row][0]}{value:g}"


def final_key(setting: str, row: str, seed: int) -> str:
  return f"final__{setting}__{common.slug(row)}__seed{seed}"


def choose(records: list[dict], setting: str, row: str, grid) -> float | None:
  """The grid point with the best validation balanced accuracy, or None until every point has
  a record. Ties go to the earlier point of the grid."""
  by_key = {r["key"]: r for r in records}
  scores = []
  for value in grid:
    rec = by_key.get(tune_key(setting, row, value))
    if rec is None:
      return None
    scores.append((rec["val_balanced_acc"], value))
  return max(scores, key=lambda s: s[0])[1]


def _train(results: str, key: str, config, fields: dict) -> bool:
  """Trains one run unless recorded; False while another worker holds it."""
  rec = common.train_once(results, key, config, fields)
  if rec is None:
    return False
  val = rec.get("val_balanced_acc")
  val = "" if val is None else f", val balanced {100 * val:.2f}"
  print(f"{key}: test {100 * rec['test_acc']:.2f}{val} ({rec['wall_s']:.0f} s)", flush=True)
  return True


def run_pass(
  results: str, protocol: str, data_dir: str, seeds, overrides: dict, cells, grids: dict
) -> int:
  """One pass over the queue; returns how many runs another worker still holds."""
  pending = 0
  base = dict(data_dir=data_dir, checkpoint=True)
  for setting, row in cells:
    extra = {}
    if row in grids:
      name, grid = grids[row]
      for value in grid:
        key = tune_key(setting, row, value)
        cfg = _config(
          protocol,
          setting,
          row,
          overrides,
          **{name: value},
          val_fraction=VAL_FRACTION,
          seed=0,
          out_dir=common.run_dir(results, key),
          **base,
        )
        pending += not _train(
          results, key, cfg, dict(stage="tune", setting=setting, row=row, seed=0, **{name: value})
        )
      chosen = choose(common.read_records(results), setting, row, grid)
      if chosen is None:
        continue  # Another worker is still tuning this row; its finals come on a later pass.
      extra = {name: chosen}
    for seed in seeds:
      key = final_key(setting, row, seed)
      cfg = _config(
        protocol,
        setting,
        row,
        overrides,
        seed=seed,
        out_dir=common.run_dir(results, key),
        **extra,
        **base,
      )
      pending += not _train(
        results, key, cfg, dict(stage="final", setting=setting, row=row, seed=seed, **extra)
      )
  return pending


def _finals(records: list[dict], setting: str, row: str) -> dict[int, float]:
  return {
    r["seed"]: 100 * r["test_acc"]
    for r in records
    if r.get("stage") == "final" and r["setting"] == setting and r["row"] == row
  }


def report(results: str, protocol: str, cells, seeds=SEEDS, out_md: str | None = None) -> str:
  """The table from the records alone: each cell's mean +- std over seeds beside the paper's
  number, the chosen setting and its validation grid, and the per-seed differences of each
  ABSGD row from its SGD row."""
  recs = common.read_records(results)
  command = f"python -m experiments.paper_tables --protocol {protocol}"
  lines = [
    f"Test accuracy %, final epoch, mean +- std over seeds ({protocol} protocol):",
    "",
    "| setting | row | chosen on validation | ours | paper (ResNet-32, full) | "
    "difference from its SGD row, per seed |",
    "| --- | --- | --- | --- | --- | --- |",
  ]
  missing = []
  for setting, row in cells:
    mine = _finals(recs, setting, row)
    if not set(seeds) <= set(mine):
      missing.append(f"{setting} {row}")
    chosen = next(
      (
        r for r in recs if r.get("stage") == "final" and r["setting"] == setting and r["row"] == row
      ),
      None,
    )
    tuned = any(
      r.get("stage") == "tune" and r["setting"] == setting and r["row"] == row for r in recs
    )
    if row not in GRIDS:
      chosen = "-"
    elif chosen:
      chosen = f"{GRIDS[row][0]}={chosen[GRIDS[row][0]]:g}"
    else:
      chosen = "tuning" if tuned else "not started"
    paper = (
      "; ".join(
        x
        for x in (
          PAPER.get((row, setting)),
          OTHER.get((row, setting)),
          REFERENCE.get((protocol, row, setting)),
        )
        if x
      )
      or "-"
    )
    diffs = "-"
    if row in PAIRS:
      base = _finals(recs, setting, PAIRS[row])
      common_seeds = sorted(set(mine) & set(base))
      if common_seeds:
        d = [mine[s] - base[s] for s in common_seeds]
        diffs = (
          ", ".join(f"{x:+.2f}" for x in d) + f" (mean {statistics.mean(d):+.2f}, vs {PAIRS[row]})"
        )
    lines.append(
      f"| {setting} | {row} | {chosen} | {mean_std(list(mine.values()))} | {paper} | {diffs} |"
    )
  tune = [r for r in recs if r.get("stage") == "tune"]
  if tune:
    lines += [
      "",
      "Tuning grids (seed 0, validation balanced accuracy %, 10% of each class held out):",
      "",
      "| setting | row | point: score |",
      "| --- | --- | --- |",
    ]
    for setting, row in cells:
      if row not in GRIDS:
        continue
      name = GRIDS[row][0]
      pts = sorted(
        (r[name], r["val_balanced_acc"])
        for r in tune
        if r["setting"] == setting and r["row"] == row
      )
      if pts:
        lines.append(
          f"| {setting} | {row} | "
          + ", ".join(f"{name}={v:g}: {100 * s:.2f}" for v, s in pts)
          + " |"
        )
  cpu_h = sum(r["wall_s"] for r in recs) / 3600
  lines += ["", f"{len(recs)} runs, {cpu_h:.2f} h of wall time in all."]
  if missing:
    lines += [
      f"Still running or not started ({len(missing)} cells): {', '.join(missing)}. "
      f"`{command}` resumes them."
    ]
  text = "\n".join(lines) + "\n"
  print(text)
  if out_md:
    with open(out_md, "w") as f:
      f.write(text)
  return text


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--protocol", choices=list(PROTOCOLS), default="reduced")
  ap.add_argument("--data-dir", default=common.DATA_DIR)
  ap.add_argument(
    "--results",
    default=None,
    help="record file (default experiments/results/paper_tables_<protocol>.jsonl)",
  )
  ap.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
  ap.add_argument(
    "--cells",
    nargs="+",
    default=None,
    metavar="SETTING:ROW",
    help="train only these cells, e.g. 'LT:SGD (CE)' (default: the protocol's)",
  )
  ap.add_argument(
    "--set",
    action="append",
    default=[],
    metavar="KEY=VALUE",
    help="override a setting of every run",
  )
  ap.add_argument(
    "--tiny",
    action="store_true",
    help="a seconds-long run of the whole pipeline (8 px, 200 images in the head class)",
  )
  ap.add_argument("--report", action="store_true")
  ap.add_argument(
    "--work",
    default=common.RUNS,
    help="where runs keep their checkpoints (default runs/ in the checkout)",
  )
  args = ap.parse_args(argv)
  common.RUNS = args.work
  results = args.results or common.results_path(f"paper_tables_{args.protocol}")
  cells = CELLS[args.protocol]
  if args.cells:
    wanted = [tuple(c.split(":", 1)) for c in args.cells]
    unknown = [c for c in wanted if c not in cells]
    if unknown:
      ap.error(f"unknown cells {unknown}; the {args.protocol} protocol has {cells}")
    cells = wanted
  if not args.report:
    overrides = dict(TINY) if args.tiny else {}
    overrides.update(item.split("=", 1) for item in args.set)
    grids = {row: (name, grid[:2] if args.tiny else grid) for row, (name, grid) in GRIDS.items()}
    while run_pass(results, args.protocol, args.data_dir, args.seeds, overrides, cells, grids):
      time.sleep(30)  # Runs held by other workers: wait for them, then take what is left.
  report(results, args.protocol, cells, args.seeds, os.path.splitext(results)[0] + ".md")


if __name__ == "__main__":
  main()
