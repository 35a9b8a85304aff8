"""Table 2 of the paper on CIFAR-10 (rho = 100, LT and ST): ABSGD on top of the label-dependent
losses, with logit adjustment and lam from a KL budget beside them.

    python -m experiments.table2 --protocol reduced          # the CPU protocol, resumable
    python -m experiments.table2 --protocol full --budget-s 540   # the paper's, on a GPU
    python -m experiments.table2 --protocol reduced --report # the table from the records
    python -m experiments.table2 --protocol tiny             # the whole pipeline, seconds

The protocols and the record file are Table 1's (:mod:`experiments.table1`): ABSGD's lam, and
the class weights of every CB and DRW row, switch on at the first decay, so that each ABSGD
row differs from its SGD row in the optimizer alone. Rows (``PAIRS`` says which SGD row each
ABSGD row is compared with):

=========================  =================================================================
SGD (LA), ABSGD (LA)        logit-adjusted CE (Menon et al., 2021; tau = 1), the strongest
                            cheap long-tail baseline: does ABSGD add to it?
SGD (CB-CE, DRW),           class-balanced CE deferred to the first decay (Cao et al.'s DRW)
ABSGD (CB-CE)
LDAM-DRW, ABSGD (CB-LDAM)   LDAM (cosine head, s = 30, max margin 0.5), DRW
ABSGD (CE, KL budget)       lam set online from a KL budget rho instead of a grid, against
                            Table 1's SGD (CE)
=========================  =================================================================

Tuning, never on the test set: each ABSGD row trains seed 0 on the training set less a
validation split of 10% of every class, once per point of its grid (three values of lam, or
of the KL budget), and keeps the point with the best validation balanced accuracy; then seeds
0, 1, 2 on the whole training set. The SGD rows have nothing to tune. ``reduced`` runs LA and
LDAM on LT, CB-CE on ST and the KL row on LT; ``full`` (and ``tiny``) every row on LT and ST,
and the KL row on LT.
"""

from __future__ import annotations

from experiments import common, table1, tables

ROWS = {
  "SGD (LA)": dict(method="sgd", loss="la"),
  "ABSGD (LA)": dict(method="absgd", loss="la"),
  "SGD (CB-CE, DRW)": dict(method="sgd", loss="ce", class_weighting="drw"),
  "ABSGD (CB-CE)": dict(method="absgd", loss="ce", class_weighting="drw"),
  "LDAM-DRW": dict(method="sgd", loss="ldam", head="cosine", class_weighting="drw"),
  "ABSGD (CB-LDAM)": dict(method="absgd", loss="ldam", head="cosine", class_weighting="drw"),
  "ABSGD (CE, KL budget)": dict(method="absgd", loss="ce"),
}
PAIRS = {
  "ABSGD (LA)": "SGD (LA)",
  "ABSGD (CB-CE)": "SGD (CB-CE, DRW)",
  "ABSGD (CB-LDAM)": "LDAM-DRW",
  "ABSGD (CE, KL budget)": "SGD (CE)",
  "SGD (LA)": "SGD (CE)",
}
# The tuned setting of each ABSGD row and its grid (three points each). LDAM's losses are on
# the scale of its logit scale s = 30, several times CE's, and lam is relative to the losses.
GRIDS = {
  "ABSGD (LA)": ("lam", (1.0, 3.0, 10.0)),
  "ABSGD (CB-CE)": ("lam", (1.0, 3.0, 10.0)),
  "ABSGD (CB-LDAM)": ("lam", (10.0, 30.0, 100.0)),
  "ABSGD (CE, KL budget)": ("kl_budget", (0.01, 0.03, 0.1)),
}
_PAIRED = ("SGD (LA)", "ABSGD (LA)", "SGD (CB-CE, DRW)", "ABSGD (CB-CE)", "LDAM-DRW")
# The (setting, row) cells of each protocol, in the order the queue trains them.
CELLS = {
  "reduced": [
    ("LT", "SGD (LA)"),
    ("LT", "ABSGD (LA)"),
    ("LT", "LDAM-DRW"),
    ("LT", "ABSGD (CB-LDAM)"),
    ("ST", "SGD (CB-CE, DRW)"),
    ("ST", "ABSGD (CB-CE)"),
    ("LT", "ABSGD (CE, KL budget)"),
  ],
  "full": [(s, r) for s in table1.SETTINGS for r in (*_PAIRED, "ABSGD (CB-LDAM)")]
  + [("LT", "ABSGD (CE, KL budget)")],
}
CELLS["tiny"] = CELLS["full"]
# Table 2 of the paper, CIFAR-10, rho = 100, ResNet-32 (it gives no std); Menon et al. (2021),
# Table 2, CIFAR-10-LT rho = 100, ResNet-32: LA (loss) 77.9.
PAPER = {
  ("SGD (CB-CE, DRW)", "LT"): "72.37",
  ("SGD (CB-CE, DRW)", "ST"): "61.84",
  ("ABSGD (CB-CE)", "LT"): "79.34",
  ("ABSGD (CB-CE)", "ST"): "72.93",
  ("LDAM-DRW", "LT"): "77.03",
  ("LDAM-DRW", "ST"): "76.92",
  ("ABSGD (CB-LDAM)", "LT"): "80.45",
  ("ABSGD (CB-LDAM)", "ST"): "78.33",
  ("SGD (LA)", "LT"): "77.9 (Menon et al.)",
}


def grids(protocol: str) -> dict:
  """The tuned rows at ``protocol``: a tiny run tries the first two points of each grid."""
  if protocol == "tiny":
    return {row: (name, grid[:2]) for row, (name, grid) in GRIDS.items()}
  return dict(GRIDS)


def plan(protocol: str, *, results: str | None = None, cells=None, **kw) -> list:
  """Table 2's runs at ``protocol`` (``kw``: :func:`experiments.table1.plan_cells`' data_dir,
  seeds, overrides)."""
  return table1.plan_cells(
    results or table1.results_path(protocol),
    protocol,
    CELLS[protocol] if cells is None else cells,
    ROWS,
    grids(protocol),
    {},
    **kw,
  )


def report(protocol: str, *, results: str | None = None, cells=None, seeds=table1.SEEDS) -> str:
  """Table 2 from the records alone."""
  results = results or table1.results_path(protocol)
  recs = common.read_records(results)
  lines, missing = table1.report_cells(
    recs,
    protocol,
    CELLS[protocol] if cells is None else cells,
    grids(protocol),
    {},
    PAIRS,
    PAPER,
    seeds,
  )
  return table1.text("Table 2", protocol, lines, missing, recs, "python -m experiments.table2")


def main(argv=None):
  ap = tables.parser(__doc__)
  ap.add_argument("--results", default=None, help="the record file (default: the protocol's)")
  table1.add_cells_arg(ap)
  args = tables.parse(ap, argv)
  results = args.results or table1.results_path(args.protocol)
  cells = table1.pick_cells(ap, args, CELLS[args.protocol])
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

    tables.run(args, plan_of, "experiments.table2", record_files=[results])
    if args.worker:
      return
  print(report(args.protocol, results=results, cells=cells, seeds=args.seeds))


if __name__ == "__main__":
  main()
