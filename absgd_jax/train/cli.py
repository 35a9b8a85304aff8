"""Command line: ``absgd-train --config cifar10-lt --set lam=5 --set epochs=200``.

One preset per paper experiment (``--list`` shows them with their settings); ``--set`` overrides
any field of :class:`absgd_jax.train.Config`. A run writes ``metrics.jsonl``, ``summary.json``,
PNG plots and orbax checkpoints under ``out_dir``, by default
``runs/<preset>/<method>[-lam<lam>]-<fingerprint>``, one folder per setting. Running the same
command again resumes from the latest checkpoint; a resume with other settings is refused,
naming the keys that differ, unless ``--new-run`` asks to start afresh. ``--distributed``
joins a multi-host job (TPU pod, GPU cluster) through ``jax.distributed.initialize()`` before
anything touches the devices.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from absgd_jax.train.config import Config
from absgd_jax.train.presets import PRESETS, make_config


def _parse_sets(items: list[str]) -> dict[str, str]:
  out = {}
  for item in items:
    key, sep, value = item.partition("=")
    if not sep:
      raise SystemExit(f"--set expects KEY=VALUE; got {item!r}.")
    out[key.strip()] = value.strip()
  return out


def _parser() -> argparse.ArgumentParser:
  ap = argparse.ArgumentParser(prog="absgd-train", description=__doc__.split("\n")[0])
  ap.add_argument("--config", choices=sorted(PRESETS), help="a paper experiment preset")
  ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                  help="override a setting (repeatable), e.g. --set method=sgd")
  ap.add_argument("--out", help="output directory (the out_dir setting)")
  ap.add_argument("--list", action="store_true", help="list the presets and exit")
  ap.add_argument("--no-progress", action="store_true", help="no progress bars")
  ap.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
  ap.add_argument("--new-run", action="store_true",
                  help="start afresh in out_dir even if it holds a run with other settings")
  ap.add_argument("--sweep", action="append", default=[], metavar="KEY=V1,V2,...",
                  help="train one model per value (lam, gamma, seed; repeat for a grid) in one "
                       "compiled program, and pick the winner on the validation split")
  ap.add_argument("--distributed", action="store_true",
                  help="call jax.distributed.initialize() first (multi-host)")
  return ap


def parse(argv: list[str] | None = None) -> tuple[argparse.Namespace, Config | None]:
  """The parsed arguments and the resolved, checked config (None for ``--list``).

  Every setting is checked here, before jax or any data is touched; a bad one exits with
  status 2 and a message naming the key.
  """
  ap = _parser()
  args = ap.parse_args(argv)
  if args.list:
    return args, None
  overrides = _parse_sets(args.set)
  if args.out:
    overrides["out_dir"] = args.out
  try:
    config = make_config(args.config, overrides)
    if args.sweep:  # The grid is checked before any device or data is touched.
      from absgd_jax.train.sweep import member_configs, parse_sweep
      member_configs(config, parse_sweep(args.sweep))
  except ValueError as e:
    ap.error(str(e))
  return args, config


def main(argv: list[str] | None = None) -> int:
  args, config = parse(argv)
  if config is None:
    for name, values in PRESETS.items():
      print(f"{name}: {json.dumps(values)}")
    return 0

  import jax
  if args.distributed:
    # jax reads JAX_COORDINATOR_ADDRESS itself and detects TPU pods, SLURM and Open MPI;
    # elsewhere these two say which process this is.
    kw = {k: int(os.environ[v]) for k, v in (("num_processes", "JAX_NUM_PROCESSES"),
                                             ("process_id", "JAX_PROCESS_ID")) if v in os.environ}
    jax.distributed.initialize(**kw)
  from absgd_jax.train.checkpoint import CheckpointError
  from absgd_jax.train.run_folder import RunMismatchError
  from absgd_jax.train.sweep import Sweep, parse_sweep, table
  from absgd_jax.train.trainer import DivergenceError, Trainer
  try:
    kw = {"new_run": True} if args.new_run else {}
    if args.sweep:  # A folder per member, sweep.jsonl and a table (absgd_jax.train.sweep).
      trainer = Sweep(config, parse_sweep(args.sweep), progress=not args.no_progress, **kw)
    else:
      trainer = Trainer(config, progress=not args.no_progress, **kw)
    summary = trainer.fit()
  except (DivergenceError, RunMismatchError, CheckpointError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  if not args.no_plots and jax.process_index() == 0:
    for folder, history, exp in zip(trainer.folders, trainer.histories, trainer.exps):
      if history:
        _plot(history, folder.config.out_dir, exp.train.class_names)
  if args.sweep:
    if args.no_progress and jax.process_index() == 0:  # fit() printed it otherwise
      print(table(summary))
    return 0 if summary["winner"] is not None else 2
  final = summary["final"]
  print(json.dumps({k: final.get(k) for k in ("epoch", "train_loss", "test_acc",
                                              "test_balanced_acc", "test_many_shot_acc",
                                              "test_medium_shot_acc", "test_few_shot_acc")}))
  return 0


def _plot(history: list, out_dir: str, class_names: list) -> None:
  """The run's PNG plots in ``out_dir``."""
  from absgd_jax.train.plots import plot_run
  if "://" in out_dir:  # matplotlib writes local files: plot, then copy them over.
    import tempfile
    from etils import epath
    with tempfile.TemporaryDirectory() as tmp:
      for path in plot_run(history, tmp, class_names):
        with open(path, "rb") as f:
          (epath.Path(out_dir) / os.path.basename(path)).write_bytes(f.read())
  else:
    plot_run(history, out_dir, class_names)

if __name__ == "__main__":
  sys.exit(main())
