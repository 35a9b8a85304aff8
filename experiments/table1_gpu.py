"""Table 1 of the paper at full scale on one GPU: SGD and ABSGD (CE), LT and ST, 3 seeds.

    python -m experiments.table1_gpu --data-dir DIR           # probe, pick, run; resumable
    python -m experiments.table1_gpu --data-dir DIR --strategy processes --workers 6
    python -m experiments.paper_tables --protocol full --report   # the table from the records
    python -m experiments.table1_gpu --tiny --data-dir DIR --results /tmp/t.jsonl   # CPU check

The protocol is ``paper_tables.py``'s ``full`` one (ResNet-32 at 32 px, 200 epochs, batch 128,
decays at 160 and 180, lam on from epoch 160) at a fixed lam (``--lam``, the presets' 5; no
tuning), evaluated and checkpointed every 10 epochs and at the last. The twelve runs share
the device in one of two ways:

- ``members``: per setting, one compiled program of six members (``Sweep`` over lam in
  {inf, lam} and the three seeds): lam = inf is momentum SGD (every weight is 1), so SGD and
  ABSGD of each seed train side by side, each with its own init, data order and augmentation.
- ``processes``: ``--workers`` processes take the twelve runs from one queue, each training
  them one at a time as the kit's ``Trainer``.

Measured on one H200 (``benchmarks/epoch_overhead.py``): one LT run trains an epoch in 0.47 s,
six members in 2.9 s, so the members way is no faster than the runs one after another at this
size, and the table takes about 30 minutes either way (LT about 11, ST about 20). The
processes way has not been timed on a GPU. ``--strategy auto`` (the default) first times
``--probe-epochs`` epochs of each way on LT and keeps the one that trains more run-epochs a
second after compilation (summed over the runs that train at the same time); the timings are
written beside the records. Every finished run appends one record to the table's JSONL in
``paper_tables.py``'s format, so its ``--report`` builds the table; a rerun skips recorded
runs and resumes unfinished ones from their checkpoints, so the table can be trained over
several shorter jobs.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time

from experiments import common, paper_tables

ROWS = ("SGD (CE)", "ABSGD (CE)")
SETTINGS = ("LT", "ST")
# A CPU check of the whole script in about a minute.
TINY = dict(paper_tables.TINY, epochs=2, lr_decay_epochs=(1,), stage2_epoch=1, drw_epoch=1)


def _config(setting: str, row: str, seed: int, args, overrides: dict, **fields):
  return paper_tables._config(
    "full", setting, row, overrides, seed=seed, lam=args.lam, data_dir=args.data_dir, **fields
  )


def _overrides(args) -> dict:
  over = dict(TINY) if args.tiny else {}
  if args.epochs:
    over["epochs"] = args.epochs
  return over


def _record(
  setting: str,
  row: str,
  seed: int,
  lam: float,
  summary_final: dict,
  config: dict,
  wall_s: float,
  strategy: str,
) -> dict:
  return dict(
    key=paper_tables.final_key(setting, row, seed),
    stage="final",
    setting=setting,
    row=row,
    seed=seed,
    lam=lam,
    strategy=strategy,
    config=config,
    wall_s=wall_s,
    **{k: summary_final.get(k) for k in ("test_acc", "test_balanced_acc", "train_loss")},
  )


def run_members(args, settings, results: str, overrides: dict) -> float:
  """Each setting as one program of (lam, seed) members; returns run-epochs per second after
  the first (compiling) epoch."""
  from absgd_jax.train import Sweep

  rates = []
  for setting in settings:
    done = {r["key"] for r in common.read_records(results)}
    if all(paper_tables.final_key(setting, row, s) in done for row in ROWS for s in args.seeds):
      continue
    cfg = _config(
      setting,
      "ABSGD (CE)",
      args.seeds[0],
      args,
      overrides,
      out_dir=common.run_dir(results, f"members__{setting}"),
    )
    sweep = Sweep(
      cfg,
      {"lam": [math.inf, args.lam], "seed": list(args.seeds)},
      progress=False,
      log=True,
      mode="vmap",
    )
    t0 = time.perf_counter()
    sweep.fit()
    out = sweep.result
    wall = time.perf_counter() - t0
    # A member's record is a single run's: epoch_time_s is the program's training time for
    # the epoch (all members), without evaluation, as the processes' records count it.
    epochs = [h["epoch_time_s"] for h in sweep.histories[0]]
    steady = epochs[1:] or epochs
    rates.append(len(sweep.members) / (sum(steady) / len(steady)))
    for m in out["members"]:
      row = "SGD (CE)" if math.isinf(m["sweep"]["lam"]) else "ABSGD (CE)"
      if not args.probe:
        common.append_record(
          results,
          _record(
            setting, row, m["sweep"]["seed"], args.lam, m["final"], m["config"], wall, "members"
          ),
        )
  return min(rates) if rates else 0.0


def run_processes(args, settings, results: str) -> float:
  """``--workers`` processes share the queue of runs; returns run-epochs per second after each
  run's first (compiling) epoch, summed over the runs that trained at the same time."""
  cmd = [
    sys.executable,
    "-m",
    "experiments.table1_gpu",
    "--worker",
    "--results",
    results,
    "--work",
    common.RUNS,
    "--data-dir",
    args.data_dir,
    "--lam",
    str(args.lam),
    "--settings",
    *settings,
    "--seeds",
    *map(str, args.seeds),
  ]
  cmd += ["--tiny"] if args.tiny else []
  cmd += ["--epochs", str(args.epochs)] if args.epochs else []
  # The workers import the experiments package from this checkout, wherever they start.
  path = os.pathsep.join(p for p in (common.ROOT, os.environ.get("PYTHONPATH")) if p)
  procs = [
    subprocess.Popen(cmd, env=dict(os.environ, PYTHONPATH=path)) for _ in range(args.workers)
  ]
  if any(p.wait() for p in procs):
    raise SystemExit("a worker failed; its output is above")
  recs = [r for r in common.read_records(results) if r.get("strategy") == "processes"]
  rates = []
  for r in recs[: args.workers]:  # The first runs of each worker trained side by side.
    times = [h["epoch_time_s"] for h in r["history"]]
    steady = times[1:] or times
    rates.append(len(steady) / sum(steady))
  return sum(rates)


def worker(args, results: str) -> None:
  """One process of the ``processes`` way: trains queued runs until none is left."""
  overrides = _overrides(args)
  for setting in args.settings:
    for row in ROWS:
      for seed in args.seeds:
        key = paper_tables.final_key(setting, row, seed)
        cfg = _config(
          setting, row, seed, args, overrides, checkpoint=True, out_dir=common.run_dir(results, key)
        )
        common.train_once(
          results,
          key,
          cfg,
          dict(
            stage="final", setting=setting, row=row, seed=seed, lam=args.lam, strategy="processes"
          ),
        )


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--data-dir", default=common.DATA_DIR)
  ap.add_argument("--results", default=common.results_path("paper_tables_full"))
  ap.add_argument("--lam", type=float, default=5.0)
  ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
  ap.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=SETTINGS)
  ap.add_argument("--strategy", choices=("auto", "members", "processes"), default="auto")
  ap.add_argument("--workers", type=int, default=6, help="processes sharing the device")
  ap.add_argument("--probe-epochs", type=int, default=3)
  ap.add_argument("--epochs", type=int, default=0, help="override the protocol's 200")
  ap.add_argument("--tiny", action="store_true", help="8 px, 2 epochs: a CPU check")
  ap.add_argument(
    "--work",
    default=common.RUNS,
    help="where runs keep their checkpoints (default runs/ in the checkout)",
  )
  ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
  ap.add_argument("--probe", action="store_true", help=argparse.SUPPRESS)
  args = ap.parse_args(argv)
  common.RUNS = args.work
  if args.worker:
    return worker(args, args.results)
  strategy = args.strategy
  if strategy == "auto":
    # Each way trains LT for a few epochs into a scratch file; the faster way runs the table.
    probe_args = argparse.Namespace(**{**vars(args), "epochs": args.probe_epochs, "probe": True})
    scratch = os.path.splitext(args.results)[0] + ".probe.jsonl"
    rates = {
      "members": run_members(probe_args, ["LT"], scratch, _overrides(probe_args)),
      "processes": run_processes(probe_args, ["LT"], scratch),
    }
    os.remove(scratch)
    strategy = max(rates, key=rates.get)
    with open(os.path.splitext(args.results)[0] + ".strategy.json", "w") as f:
      json.dump(
        {
          "run_epochs_per_s": rates,
          "chosen": strategy,
          "workers": args.workers,
          "probe_epochs": args.probe_epochs,
        },
        f,
        indent=1,
      )
    print(f"run-epochs per second: {rates}; training the table with {strategy}", flush=True)
  if strategy == "members":
    run_members(args, args.settings, args.results, _overrides(args))
  else:
    run_processes(args, args.settings, args.results)
  paper_tables.report(
    args.results, "full", [(s, r) for s in args.settings for r in ROWS], args.seeds
  )


if __name__ == "__main__":
  main()
