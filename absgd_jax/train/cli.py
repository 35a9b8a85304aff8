"""Command line: ``absgd-train --config cifar10-lt --set lam=5 epochs=200``.

One preset per paper experiment (``--list`` shows them with their settings), or a settings
file (a run's ``config.json``, or TOML/YAML); ``--set`` overrides any setting by its key or
its section's path (``lr`` or ``optim.lr``; ``--settings`` lists them all). A run writes
``metrics.jsonl``, ``summary.json``, PNG plots and orbax checkpoints under ``out_dir``, by default
``runs/<preset>/<method>[-lam<lam>]-<fingerprint>``, one folder per setting. Running the same
command again resumes from the latest checkpoint; a resume with other settings is refused,
naming the keys that differ, unless ``--new-run`` asks to start afresh. ``--distributed``
joins a multi-host job (TPU pod, GPU cluster) through ``jax.distributed.initialize()`` before
anything touches the devices.

A failure that is the user's to fix (settings, data, files, disk, permissions, checkpoints: see
:mod:`absgd_jax.train.errors`) is one line, ``error: ...``, and exit status 2; Ctrl-C is one line
saying where the run stopped and how to go on, and exit status 130. ``--debug`` (or
``ABSGD_DEBUG=1``) shows their tracebacks and the libraries' logging; any other exception is a
bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from absgd_jax.train import errors
from absgd_jax.train.config import Config, describe_settings
from absgd_jax.train.presets import (
  PRESETS,
  describe_scaling,
  make_config,
  preset_values,
  read_settings_file,
)


def _parse_sets(items: list[str]) -> dict[str, str]:
  out = {}
  for item in items:
    key, sep, value = item.partition("=")
    if not sep:
      raise ValueError(f"--set expects KEY=VALUE; got {item!r}.")
    out[key.strip()] = value.strip()
  return out


def _parser() -> argparse.ArgumentParser:
  ap = argparse.ArgumentParser(
    prog="absgd-train",
    description=__doc__.split("\n")[0],
    epilog="absgd-train --settings lists every setting with its type, default, range and "
    "help; absgd-train --list the presets.",
  )
  ap.add_argument(
    "--config",
    metavar="PRESET|FILE",
    help="a paper experiment's preset (--list), or a settings file: a run's config.json, or "
    "a .toml/.yaml of settings",
  )
  ap.add_argument(
    "--set",
    action="extend",
    nargs="+",
    default=[],
    metavar="KEY=VALUE",
    help="override settings, e.g. --set method=sgd lr=0.05 (or optim.lr=0.05)",
  )
  ap.add_argument(
    "--settings", action="store_true", help="list every setting, by section, and exit"
  )
  ap.add_argument("--out", help="output directory (the out_dir setting)")
  ap.add_argument("--list", action="store_true", help="list the presets and exit")
  ap.add_argument(
    "--compare",
    nargs="+",
    metavar="DIR",
    help="a table of the runs under these folders (the settings that differ, the final "
    "metrics) and exit",
  )
  ap.add_argument(
    "--no-progress", action="store_true", help="no progress bars (the epoch lines stay)"
  )
  ap.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
  ap.add_argument(
    "--new-run",
    action="store_true",
    help="start afresh in out_dir even if it holds a run with other settings",
  )
  ap.add_argument(
    "--sweep",
    action="append",
    default=[],
    metavar="KEY=V1,V2,...",
    help="train one model per value (lam, gamma, seed; repeat for a grid) in one "
    "compiled program, and pick the winner on the validation split",
  )
  ap.add_argument(
    "--distributed",
    action="store_true",
    help="call jax.distributed.initialize() first (multi-host)",
  )
  ap.add_argument(
    "--debug",
    action="store_true",
    help=f"show tracebacks and library logging (also: {errors.DEBUG_ENV}=1)",
  )
  return ap


def parse(argv: list[str] | None = None) -> tuple[argparse.Namespace, Config | None]:
  """The parsed arguments and the resolved, checked config (None for ``--list`` and
  ``--compare``).

  Every setting is checked here, before jax or any data is touched; a bad one exits with
  status 2 and a message naming the key.
  """
  ap = _parser()
  args = ap.parse_args(argv)
  if args.list or args.settings or args.compare:
    return args, None
  if args.config is None and not args.set:  # Not a silent 30-epoch run on the bare defaults.
    print(
      "error: choose a preset with --config NAME (absgd-train --list shows them), or give "
      "the settings with --set KEY=VALUE.",
      file=sys.stderr,
    )
    raise SystemExit(2)
  try:
    preset, overrides = _preset_and_file(args.config)
    overrides.update(_parse_sets(args.set))
    if args.out:
      overrides["out_dir"] = args.out
    config = make_config(preset, overrides)
    _, scaled = preset_values(preset, overrides)
    if scaled:  # A preset's schedule that moved with epochs, said before anything runs.
      print(describe_scaling(scaled, config.schedule.epochs), flush=True)
    if args.sweep:  # The grid is checked before any device or data is touched.
      from absgd_jax.train.sweep import member_configs, parse_sweep

      member_configs(config, parse_sweep(args.sweep))
  except ValueError as e:
    # One line, as every other error of the CLI: the usage block would bury it.
    print(f"error: {errors.one_line(e)}", file=sys.stderr)
    raise SystemExit(2) from None
  return args, config


def _preset_and_file(name: str | None) -> tuple[str | None, dict]:
  """``--config``'s preset and the settings of a file it names (none for a preset)."""
  if name is None or name in PRESETS:
    return name, {}
  if os.path.exists(name):
    return read_settings_file(name)
  import difflib

  close = difflib.get_close_matches(name, PRESETS, 1)
  hint = f" Did you mean {close[0]}?" if close else ""
  raise ValueError(
    f"--config {name}: no preset of that name and no such file.{hint} absgd-train --list "
    "shows the presets; a file is a run's config.json or a .toml/.yaml of settings."
  )


def _named(args: argparse.Namespace, config: Config) -> Config:
  """``config`` with the folder the run will use: its own, a sweep's, or one named by its
  settings (messages about the run name that folder)."""

  if args.sweep:
    from absgd_jax.train.sweep import parse_sweep, sweep_dir

    return config.replace(out_dir=sweep_dir(config, list(parse_sweep(args.sweep))))
  from absgd_jax.train.run_folder import resolve_out_dir

  return resolve_out_dir(config)


def main(argv: list[str] | None = None) -> int:
  argv = sys.argv[1:] if argv is None else list(argv)
  # Known before parsing, so that the settings' own warnings are printed as one line too.
  debug = errors.debug_requested("--debug" in argv)
  run: dict = {}  # The Trainer, once made: where an interrupt or a full disk stopped it.
  with errors.console(debug):
    args, config = parse(argv)
    if args.settings:
      print(describe_settings())
      return 0
    if args.compare:
      from absgd_jax.train import compare

      return compare.main(args.compare)
    if config is None:
      for name, values in PRESETS.items():
        print(f"{name}: {json.dumps(values)}")
      return 0
    config = _named(args, config)
    try:
      return _run(args, config, run)
    except KeyboardInterrupt:
      if debug:
        raise
      print(_interrupted(config, run.get("trainer")), file=sys.stderr)
      return 130
    except Exception as e:
      if debug or not _users_to_fix(e):
        raise
      line = _disk_full(config, e) if errors.disk_full(e) else errors.one_line(e)
      print(f"error: {line}", file=sys.stderr)
      return 2


def _users_to_fix(e: BaseException) -> bool:
  """Whether ``e`` is about the user's settings, data or environment (module docstring)."""
  from absgd_jax.train.checkpoint import CheckpointError
  from absgd_jax.train.run_folder import RunMismatchError
  from absgd_jax.train.health import DivergenceError

  return errors.disk_full(e) or isinstance(
    e, (errors.UserError, OSError, DivergenceError, RunMismatchError, CheckpointError)
  )


def _last_checkpoint_text(config: Config, trainer=None) -> str:
  """Where a rerun resumes from: the run's last checkpoint, or each sweep member's."""
  if not config.run.checkpoint:
    return "checkpoints are off (checkpoint=false), so a rerun starts afresh"
  if trainer is None or len(trainer.members) == 1:
    last = errors.last_checkpoint(config.run.out_dir)
    return "no checkpoint was saved yet" if last is None else f"the last checkpoint is epoch {last}"
  lasts = {m.label: errors.last_checkpoint(m.config.run.out_dir) for m in trainer.members}
  if all(v is None for v in lasts.values()):
    return "no member's checkpoint was saved yet"
  return "the members' last checkpoints: " + ", ".join(
    f"{label} epoch {'none' if v is None else v}" for label, v in lasts.items()
  )


def _interrupted(config: Config, trainer) -> str:
  """The one line for Ctrl-C: where the run stopped, its last checkpoint, how to go on."""
  for folder in [] if trainer is None else trainer.folders:  # each member's, in a sweep
    try:  # A save under way is finished (or fails) before the folder is read.
      folder.close()
    except BaseException:  # noqa: BLE001 - a second Ctrl-C, or the save's own failure.
      pass
  where = (
    "before the first step"
    if trainer is None
    else f"at epoch {trainer.position[0]}, step {trainer.position[1]}"
  )
  saved = _last_checkpoint_text(config, trainer)
  return f"interrupted {where}; {saved}; rerun the same command to resume"


def _disk_full(config: Config, e: BaseException) -> str:
  """The one line for a full disk: the folder, the last good checkpoint, what to do."""
  path = next((x.filename for x in errors.chain(e) if getattr(x, "filename", None)), None)
  return (
    f"no space left on the disk holding {config.run.out_dir}"
    + (f" (writing {path})" if path else "")
    + f"; {_last_checkpoint_text(config)} "
    f"(in {config.run.out_dir}/checkpoints), and what was saved before is intact. Free space "
    "(or move the folder and pass --out) and rerun the same command to resume."
  )


def _run(args: argparse.Namespace, config: Config, run: dict) -> int:
  import jax

  if args.distributed:
    # jax reads JAX_COORDINATOR_ADDRESS itself and detects TPU pods, SLURM and Open MPI;
    # elsewhere these two say which process this is.
    kw = {
      k: int(os.environ[v])
      for k, v in (("num_processes", "JAX_NUM_PROCESSES"), ("process_id", "JAX_PROCESS_ID"))
      if v in os.environ
    }
    jax.distributed.initialize(**kw)
  from absgd_jax.train.sweep import Sweep, parse_sweep
  from absgd_jax.train.trainer import Trainer

  kw = {"new_run": True} if args.new_run else {}
  if args.sweep:  # A folder per member, sweep.jsonl and a table (absgd_jax.train.sweep).
    trainer = run["trainer"] = Sweep(
      config, parse_sweep(args.sweep), progress=not args.no_progress, console=True, **kw
    )
  else:
    trainer = run["trainer"] = Trainer(config, progress=not args.no_progress, console=True, **kw)
  if jax.process_index() == 0:  # Where to look for the run's files, before it starts.
    print(f"run folder: {config.run.out_dir}", flush=True)
  summaries = trainer.fit()
  if not args.no_plots and trainer.trained_epochs and jax.process_index() == 0:
    for folder, history, exp in zip(trainer.folders, trainer.histories, trainer.exps):
      if history:
        _plot(history, folder.config.run.out_dir, exp.train.class_names)
  if args.sweep:
    return 0 if trainer.result["winner"] is not None else 2
  final = summaries[0]["final"]
  print(
    json.dumps(
      {
        k: final.get(k)
        for k in (
          "epoch",
          "train_loss",
          "test_acc",
          "test_balanced_acc",
          "test_many_shot_acc",
          "test_medium_shot_acc",
          "test_few_shot_acc",
        )
      }
    )
  )
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
