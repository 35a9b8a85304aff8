"""The paper's CIFAR-10 tables in one queue: Table 1, then Table 2, then Table 6.

    python -m experiments.paper_tables --protocol reduced            # the CPU protocols
    python -m experiments.paper_tables --protocol full --budget-s 540   # what fits in 9 min
    python -m experiments.paper_tables --protocol full --report      # the tables, from records
    python -m experiments.paper_tables --protocol tiny               # the pipeline, seconds

The queue: Table 1's twelve runs (:mod:`experiments.table1`: LT, then ST; SGD (CE) and ABSGD
(CE), seeds 0, 1, 2), then Table 2's tuning and rows (:mod:`experiments.table2`), then Table 6
(:mod:`experiments.table6`). Every finished run appends its record at once, a rerun skips the
recorded runs, and several workers can share the queue (:mod:`experiments.tables`), so the
tables can be trained over many short jobs: with ``--budget-s`` a job starts only the runs
whose estimated time fits what is left, says what it estimated and why it stopped, and the
next job starts with the runs still missing.

How the runs share the device (``--strategy auto``, the default): the fastest variant that
``benchmarks/gpu_probe.py`` measured on this device and the kit can run (``--probe`` names its
JSON; else ``benchmarks/results/gpu_probe_<platform>_<device>.json`` if there): float32 or
bfloat16, host-fed or device-resident, runs as members of one program or one at a time, in
one process or several. Without a probe: members of up to 6 on an accelerator, single runs on
the CPU. ``--strategy members`` / ``processes`` choose by hand. ``experiments/gpu_window.py``
runs the probe and then this queue in one GPU job.

Records: ``experiments/results/paper_tables_<protocol>.jsonl`` (Tables 1 and 2, whose report
is written beside it as ``.md``) and Table 6's (``noise_table.jsonl`` for ``reduced``,
``noise_protocol_gpu.jsonl`` for ``full``); a ``tiny`` run's go under ``runs/results/``.
"""

from __future__ import annotations

import os

from experiments import common, table1, table2, table6, tables

TABLES = ("1", "2", "6")


def imbalance_cells(protocol: str) -> list:
  return table1.CELLS + table2.CELLS[protocol]


def plan(protocol: str, *, which, results, noise_results, cells, **kw) -> list:
  """The queue: Table 1's runs, Table 2's, Table 6's (``which`` of them)."""
  items: list = []
  if "1" in which:
    one = None if cells is None else [c for c in cells if c in table1.CELLS]
    items += table1.plan(protocol, results=results, cells=one, **kw)
  if "2" in which:
    two = None if cells is None else [c for c in cells if c in table2.CELLS[protocol]]
    items += table2.plan(protocol, results=results, cells=two, **kw)
  if "6" in which:
    items += table6.plan(protocol, results=noise_results, **kw)
  return items


def report(
  protocol: str,
  *,
  which=TABLES,
  results=None,
  noise_results=None,
  cells=None,
  seeds=table1.SEEDS,
  write=True,
) -> str:
  """Tables 1 and 2 as one table (written beside their records as ``.md``), then Table 6."""
  results = results or table1.results_path(protocol)
  parts = []
  if "1" in which or "2" in which:
    recs = common.read_records(results)
    cells = cells or [
      c
      for c in imbalance_cells(protocol)
      if (c in table1.CELLS and "1" in which) or (c not in table1.CELLS and "2" in which)
    ]
    lines, missing = table1.report_cells(
      recs,
      protocol,
      cells,
      {**table1.grids(protocol), **table2.grids(protocol)},
      table1.fixed(protocol),
      {**table1.PAIRS, **table2.PAIRS},
      {**table1.PAPER, **table2.PAPER},
      seeds,
    )
    text = table1.text(
      "Tables 1 and 2", protocol, lines, missing, recs, "python -m experiments.paper_tables"
    )
    if write and os.path.exists(results):
      with open(os.path.splitext(results)[0] + ".md", "w") as f:
        f.write(text)
    parts.append(text)
  if "6" in which:
    parts.append(table6.report_protocol(protocol, noise_results))
  return "\n".join(parts)


def main(argv=None):
  ap = tables.parser(__doc__)
  ap.add_argument(
    "--tables", nargs="+", choices=TABLES, default=None, help="which tables (default: all)"
  )
  ap.add_argument(
    "--results", default=None, help="Tables 1 and 2's record file (default: the protocol's)"
  )
  ap.add_argument("--noise-results", default=None, help="Table 6's record file")
  ap.add_argument(
    "--results-dir", default=None, help="a folder for both record files, under their names"
  )
  table1.add_cells_arg(ap)
  args = tables.parse(ap, argv)
  protocol = args.protocol
  results, noise = args.results, args.noise_results
  if args.results_dir:
    results = results or os.path.join(args.results_dir, f"paper_tables_{protocol}.jsonl")
    noise = noise or os.path.join(args.results_dir, table6.RESULTS[protocol] + ".jsonl")
  results = results or table1.results_path(protocol)
  noise = noise or table6.results_path(protocol)
  cells = table1.pick_cells(ap, args, imbalance_cells(protocol))
  # --cells names Tables 1 and 2's cells: Table 6 then runs only if --tables asks for it.
  which = args.tables or (("1", "2") if cells else TABLES)
  if not args.report:
    extra = tables.overrides(args)

    def plan_of(strategy):
      return plan(
        protocol,
        which=which,
        results=results,
        noise_results=noise,
        cells=cells,
        data_dir=args.data_dir,
        seeds=args.seeds,
        overrides={**strategy.settings(), **extra},
      )

    tables.run(args, plan_of, "experiments.paper_tables", record_files=[results, noise])
    if args.worker:
      return
  print(
    report(
      protocol, which=which, results=results, noise_results=noise, cells=cells, seeds=args.seeds
    )
  )


if __name__ == "__main__":
  main()
