"""Table 1 of the paper: SGD (CE) against ABSGD (CE) on CIFAR-10-LT and -ST, rho = 100.

    python -m experiments.table1 --protocol reduced          # the CPU protocol, resumable
    python -m experiments.table1 --protocol full             # the paper's, on a GPU
    python -m experiments.table1 --protocol full --budget-s 540   # only what fits in 9 min
    python -m experiments.table1 --protocol reduced --report # the table from the records
    python -m experiments.table1 --protocol tiny             # the whole pipeline, seconds

The protocols are ``absgd_jax.train.protocols``' ``cifar-imbalance`` ones (batch 128, lr 0.1
after a linear warm-up, x0.01 at two decays, weight decay 2e-4, torch's momentum form,
crop-and-flip augmentation):

- ``full``: Section 4.1 as the presets ``cifar10-lt`` / ``cifar10-st`` hold it: ResNet-32 at
  32 px, 200 epochs, a 5-epoch warm-up, decays at 160 and 180, evaluated and checkpointed
  every 10 epochs;
- ``reduced``: the protocol on which the kit matches a PyTorch reference
  (``experiments/parity/head_to_head.py``): ResNet-8 at 16 px, 60 epochs, decays at 48 and
  54. About 7 CPU core-minutes a run on LT (12,406 images), twice that on ST (25,250);
- ``tiny``: the full protocol's runs at 8 px, a 200-image head class and 3 epochs.

ABSGD's lam switches on at the first decay (Section 3.6: lam = inf, plain momentum SGD,
before it). On ``reduced``, ABSGD (CE) tunes lam in {1, 3, 10}: seed 0 on the training set less
a validation split of 10% of every class, the point with the best validation balanced
accuracy kept; the test set is never read for it. On ``full`` (and ``tiny``) lam is the
presets' 5, within the paper's grid [1:1:10], untuned, so that the table is twelve runs: SGD
and ABSGD, LT and ST, seeds 0, 1, 2 on the whole training set, test accuracy after the last
epoch.

Records: ``experiments/results/paper_tables_<protocol>.jsonl``, shared with Table 2
(:mod:`experiments.table2`), one line per run; a rerun skips the recorded ones
(:mod:`experiments.tables` runs the queue). This module also holds what the two tables
share: the settings, the keys, the configs, the plan of a list of cells and its report.
"""

from __future__ import annotations

import functools
import statistics
from collections.abc import Mapping, Sequence

from experiments import common, tables
from experiments.common import mean_std

FAMILY = "cifar-imbalance"
SETTINGS = {"LT": "cifar10-lt", "ST": "cifar10-st"}
ROWS = {
  "SGD (CE)": dict(method="sgd", loss="ce"),
  "ABSGD (CE)": dict(method="absgd", loss="ce"),
}
PAIRS = {"ABSGD (CE)": "SGD (CE)"}
# LT first, then ST: the queue trains them in this order.
CELLS = [("LT", "SGD (CE)"), ("LT", "ABSGD (CE)"), ("ST", "SGD (CE)"), ("ST", "ABSGD (CE)")]
# A tuned row: its setting and grid. On the full protocol lam is fixed instead (FIXED).
GRIDS = {"ABSGD (CE)": ("lam", (1.0, 3.0, 10.0))}
FIXED = {"ABSGD (CE)": {"lam": 5.0}}  # The presets' lam, in the paper's grid [1:1:10].
# Table 1 of the paper, CIFAR-10, rho = 100, ResNet-32.
PAPER = {
  ("SGD (CE)", "LT"): "71.75 +- 0.75",
  ("SGD (CE)", "ST"): "63.12 +- 0.63",
  ("ABSGD (CE)", "LT"): "72.43 +- 0.31",
  ("ABSGD (CE)", "ST"): "66.24 +- 0.35",
}
# The PyTorch reference (LDAM-DRW's recipe) on the reduced protocol's LT, seeds 0-2:
# experiments/results/parity_head_to_head.jsonl.
REFERENCE = {("reduced", "SGD (CE)", "LT"): "52.07 +- 1.13 (PyTorch reference)"}
VAL_FRACTION = 0.1
SEEDS = (0, 1, 2)


def results_path(protocol: str) -> str:
  """The record file of Tables 1 and 2 at ``protocol``."""
  return tables.default_results(f"paper_tables_{protocol}", protocol)


def grids(protocol: str) -> dict:
  """Table 1's tuned rows at ``protocol`` (none where lam is fixed)."""
  return dict(GRIDS) if protocol == "reduced" else {}


def fixed(protocol: str) -> dict:
  """Table 1's rows whose setting is fixed at ``protocol``, and to what."""
  return {} if protocol == "reduced" else dict(FIXED)


def config(protocol: str, setting: str, row: dict, overrides: Mapping, **fields):
  """The config of a run of ``row`` (its settings) on ``setting`` at ``protocol``."""
  from absgd_jax.train import make_config
  from absgd_jax.train.protocols import protocol as protocol_of

  base = dict(protocol_of(FAMILY, protocol), **overrides)
  return make_config(SETTINGS[setting], base, **row, **fields)


def tune_key(setting: str, row: str, name: str, value: float) -> str:
  return f"tune__{setting}__{common.slug(row)}__{name}{value:g}"


def final_key(setting: str, row: str, seed: int) -> str:
  return f"final__{setting}__{common.slug(row)}__seed{seed}"


def plan_cells(
  results: str,
  protocol: str,
  cells: Sequence[tuple[str, str]],
  rows: Mapping[str, dict],
  grids: Mapping[str, tuple],
  fixed: Mapping[str, dict],
  *,
  data_dir: str,
  seeds: Sequence[int] = SEEDS,
  overrides: Mapping = (),
) -> list:
  """The runs of ``cells`` in order: a tuned row's grid (seed 0, validation split), then its
  seeds at the chosen point, or a :class:`~experiments.tables.Wait` until every point has a
  record."""
  recs = {r["key"]: r for r in common.read_records(results)}
  base = dict(data_dir=data_dir, checkpoint=True)
  overrides = dict(overrides)

  def make(setting, row, **fields):
    return functools.partial(config, protocol, setting, rows[row], overrides, **base, **fields)

  items: list = []
  for setting, row in cells:
    extra = dict(fixed.get(row, {}))
    if row in grids:
      name, grid = grids[row]
      scores = []
      for value in grid:
        key = tune_key(setting, row, name, value)
        fields = dict(stage="tune", setting=setting, row=row, seed=0, **{name: value})
        cfg = make(
          setting,
          row,
          **{name: value},
          val_fraction=VAL_FRACTION,
          seed=0,
          out_dir=tables.out_dir(results, key),
        )
        items.append(tables.Run(results, key, fields, cfg))
        rec = recs.get(key)
        scores.append((value, None if rec is None else rec.get("val_balanced_acc")))
      chosen = tables.choose(scores)
      if chosen is None:
        items.append(tables.Wait(f"{setting} {row}: its table runs wait for its tuning"))
        continue
      extra = {name: chosen}
    for seed in seeds:
      key = final_key(setting, row, seed)
      fields = dict(stage="final", setting=setting, row=row, seed=seed, **extra)
      cfg = make(setting, row, seed=seed, out_dir=tables.out_dir(results, key), **extra)
      items.append(tables.Run(results, key, fields, cfg))
  return items


def plan(protocol: str, *, results: str | None = None, cells=None, **kw) -> list:
  """Table 1's runs at ``protocol`` (``kw``: :func:`plan_cells`' data_dir, seeds, overrides)."""
  return plan_cells(
    results or results_path(protocol),
    protocol,
    CELLS if cells is None else cells,
    ROWS,
    grids(protocol),
    fixed(protocol),
    **kw,
  )


def _finals(records: list[dict], setting: str, row: str) -> dict[int, float]:
  return {
    r["seed"]: 100 * r["test_acc"]
    for r in records
    if r.get("stage") == "final" and r.get("setting") == setting and r.get("row") == row
  }


def report_cells(
  records: list[dict],
  protocol: str,
  cells: Sequence[tuple[str, str]],
  grids: Mapping[str, tuple],
  fixed: Mapping[str, dict],
  pairs: Mapping[str, str],
  paper: Mapping[tuple[str, str], str],
  seeds: Sequence[int] = SEEDS,
) -> tuple[list[str], list[str]]:
  """The table's lines for ``cells`` and the cells still missing a seed: each cell's mean +-
  std over seeds beside the paper's number, the chosen setting, and the per-seed differences
  of each ABSGD row from its SGD row; then each tuned row's validation grid."""
  lines = [
    "| setting | row | chosen on validation | ours | paper (ResNet-32, full) | "
    "difference from its SGD row, per seed |",
    "| --- | --- | --- | --- | --- | --- |",
  ]
  missing = []
  for setting, row in cells:
    mine = _finals(records, setting, row)
    if not set(seeds) <= set(mine):
      missing.append(f"{setting} {row}")
    first = next(
      (
        r
        for r in records
        if r.get("stage") == "final" and r.get("setting") == setting and r.get("row") == row
      ),
      None,
    )
    tuned = any(
      r.get("stage") == "tune" and r.get("setting") == setting and r.get("row") == row
      for r in records
    )
    if row in grids:
      name = grids[row][0]
      chosen = f"{name}={first[name]:g}" if first else "tuning" if tuned else "not started"
    elif row in fixed:
      chosen = ", ".join(f"{k}={v:g}" for k, v in fixed[row].items()) + " (fixed, untuned)"
    else:
      chosen = "-"
    ref = (paper.get((row, setting)), REFERENCE.get((protocol, row, setting)))
    ref = "; ".join(x for x in ref if x) or "-"
    diffs = "-"
    if row in pairs:
      base = _finals(records, setting, pairs[row])
      both = sorted(set(mine) & set(base))
      if both:
        d = [mine[s] - base[s] for s in both]
        diffs = (
          ", ".join(f"{x:+.2f}" for x in d) + f" (mean {statistics.mean(d):+.2f}, vs {pairs[row]})"
        )
    ours = mean_std(list(mine.values())) if mine else "not run yet"
    lines.append(f"| {setting} | {row} | {chosen} | {ours} | {ref} | {diffs} |")
  tune = [r for r in records if r.get("stage") == "tune"]
  grid_lines = []
  for setting, row in cells:
    if row not in grids:
      continue
    name = grids[row][0]
    pts = sorted(
      (r[name], r["val_balanced_acc"])
      for r in tune
      if r.get("setting") == setting and r.get("row") == row and name in r
    )
    if pts:
      grid_lines.append(
        f"| {setting} | {row} | " + ", ".join(f"{name}={v:g}: {100 * s:.2f}" for v, s in pts) + " |"
      )
  if grid_lines:
    lines += [
      "",
      "Tuning grids (seed 0, validation balanced accuracy %, 10% of each class held out):",
      "",
      "| setting | row | point: score |",
      "| --- | --- | --- |",
      *grid_lines,
    ]
  return lines, missing


def report(
  protocol: str, *, results: str | None = None, cells=None, seeds=SEEDS, command: str = ""
) -> str:
  """Table 1 from the records alone."""
  results = results or results_path(protocol)
  recs = common.read_records(results)
  lines, missing = report_cells(
    recs,
    protocol,
    CELLS if cells is None else cells,
    grids(protocol),
    fixed(protocol),
    PAIRS,
    PAPER,
    seeds,
  )
  return text("Table 1", protocol, lines, missing, recs, command or "python -m experiments.table1")


def text(title, protocol, lines, missing, recs, command) -> str:
  """A report's text: its title, the table's lines, the runs and what is still missing."""
  out = [f"{title}: test accuracy %, final epoch, mean +- std over seeds ({protocol} protocol)"]
  out += ["", *lines, ""]
  out.append(f"{len(recs)} runs in the record file, {tables.wall_hours(recs):.2f} h of wall time.")
  if missing:
    out.append(
      f"Still running or not started ({len(missing)} cells): {', '.join(missing)}. "
      f"`{command} --protocol {protocol}` resumes them."
    )
  return "\n".join(out) + "\n"


def add_cells_arg(ap) -> None:
  ap.add_argument(
    "--cells",
    nargs="+",
    default=None,
    metavar="SETTING:ROW",
    help="train only these cells, e.g. 'LT:SGD (CE)'",
  )


def pick_cells(ap, args, cells) -> list | None:
  """``--cells`` checked against the table's cells (None: all of them)."""
  if not args.cells:
    return None
  wanted = [tuple(c.split(":", 1)) for c in args.cells]
  unknown = [c for c in wanted if c not in cells]
  if unknown:
    ap.error(f"unknown cells {unknown}; the {args.protocol} protocol has {cells}")
  return wanted


def main(argv=None):
  ap = tables.parser(__doc__)
  ap.add_argument("--results", default=None, help="the record file (default: the protocol's)")
  add_cells_arg(ap)
  args = tables.parse(ap, argv)
  results = args.results or results_path(args.protocol)
  cells = pick_cells(ap, args, CELLS)
  if not args.report:
    extra = tables.overrides(args)

    def plan_of(strategy):
      return plan(
        args.protocol,
        results=results,
        cells=cells,
        data_dir=args.data_dir,
        seeds=args.seeds,
        overrides={**strategy.settings(), **extra},
      )

    tables.run(args, plan_of, "experiments.table1", record_files=[results])
    if args.worker:
      return
  print(report(args.protocol, results=results, cells=cells, seeds=args.seeds))


if __name__ == "__main__":
  main()
