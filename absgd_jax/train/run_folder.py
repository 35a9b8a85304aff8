"""A run's folder: its name, its ``config.json``, its records, and the check before a resume.

A run is its settings. :func:`fingerprint` hashes the fields that change what a run computes
(:func:`result_fields`: not ``out_dir``, ``eval_every``, ``checkpoint``, ``checkpoint_every``,
``data_workers``, ``data_dir``, ``preset``, the collapse guard's thresholds). A run given no
``out_dir`` is named by it (:func:`resolve_out_dir`), and a run folder keeps the resolved config
(:func:`write_run_config`), so that a resume with other settings is refused, naming the keys
that differ (:func:`check_resume`). :class:`RunFolder` is the loop's handle on one folder:
``config.json``, ``metrics.jsonl``, ``summary.json``, ``checkpoints/`` and ``tensorboard/``,
written the same way for a single run and for each member of a sweep.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
from etils import epath
from jax.experimental import multihost_utils

from absgd_jax.train import checks, errors
from absgd_jax.train import tensorboard as tensorboard_lib
from absgd_jax.train.checkpoint import Checkpointer
from absgd_jax.train.config import WEIGHTED_METHODS, Config
from absgd_jax.train.presets import EPOCH_FIELDS


def _as_dict(config: Config | Mapping[str, Any]) -> dict[str, Any]:
  """Every setting by key: a Config's, or a saved ``config.json``'s (flat, by key)."""
  if isinstance(config, Config):
    return config.flat()
  return dict(config)


def _jsonable(v: Any) -> Any:
  if isinstance(v, dict):
    return {k: _jsonable(x) for k, x in v.items()}
  if isinstance(v, (tuple, list)):
    return [_jsonable(x) for x in v]
  if isinstance(v, float) and not math.isfinite(v):
    return str(v)  # "inf", "-inf": standard JSON has no infinities.
  return v


def result_fields(config: Config | Mapping[str, Any]) -> dict[str, Any]:
  """The settings that change what a run computes, JSON-ready (sorted keys).

  Which they are is declared with each setting (``result``; see
  :func:`absgd_jax.train.config.setting`): not where the run writes and reads from, how often
  it evaluates or checkpoints, how many processes decode images, the pipeline that feeds the
  step, when the class-collapse guard warns, or the preset's name (the resolved values are
  what count). A setting added after run folders were named by fingerprint (``new``) is left
  out while at its default, so that a run started before it existed keeps its folder name.

  ``epochs`` is among them only with ``lr_schedule="cosine"``: with step decays a longer run
  follows a shorter one's trajectory epoch for epoch (a resume may extend a run), whereas a
  cosine schedule's every step depends on the run's length.

  A mapping (a saved ``config.json``) may lack settings added since it was written; they take
  the current defaults.
  """
  d = _as_dict(config)
  out = {}
  for name in sorted(Config.settings()):
    meta = Config.declared(name).metadata
    default = Config.declared(name).default
    if not meta["result"]:
      continue
    if name == "epochs" and d.get("lr_schedule", "step") != "cosine":
      continue
    value = d.get(name, default)
    if meta["new"] and value == default:
      continue
    if isinstance(value, float) or (
      isinstance(value, int) and not isinstance(value, bool) and isinstance(default, float)
    ):
      value = float(value)  # lam=5 and lam=5.0 are one setting.
    if isinstance(value, str) and isinstance(default, float):
      value = float(value)  # "inf" as written by _jsonable.
    out[name] = _jsonable(value)
  return out


def fingerprint(config: Config | Mapping[str, Any]) -> str:
  """A 16-hex-digit SHA-256 of :func:`result_fields`: equal exactly when they are.

  Examples:
    >>> from absgd_jax.train import make_config
    >>> a = make_config("digits-lt")
    >>> fingerprint(a) == fingerprint(make_config("digits-lt", out_dir="elsewhere"))
    True
    >>> fingerprint(a) == fingerprint(make_config("digits-lt", method="sgd"))
    False
  """
  text = json.dumps(result_fields(config), sort_keys=True, separators=(",", ":"))
  return hashlib.sha256(text.encode()).hexdigest()[:16]


def diff_configs(a: Config | Mapping[str, Any], b: Config | Mapping[str, Any]) -> list[str]:
  """The sorted names of the result fields that differ between ``a`` and ``b``.

  Examples:
    >>> from absgd_jax.train import make_config
    >>> diff_configs(make_config("digits-lt"), make_config("digits-lt", method="sgd", lr=0.5))
    ['lr', 'method']
  """
  ra, rb = result_fields(a), result_fields(b)
  return sorted(k for k in ra.keys() | rb.keys() if ra.get(k) != rb.get(k))


def default_out_dir(config: Config) -> str:
  """``runs/<preset or dataset>/<method>[-lam<lam>]-<fingerprint[:8]>``.

  The method and lam make the folder readable; the fingerprint tells every other setting
  apart, so two commands that compute different things never share a folder.

  Examples:
    >>> from absgd_jax.train import make_config
    >>> default_out_dir(make_config("digits-lt")).startswith("runs/digits-lt/absgd-lam5-")
    True
  """
  label, w = config.method, config.weighting
  if w.kl_budget > 0:
    label += f"-kl{w.kl_budget:g}"
  elif config.method in WEIGHTED_METHODS:
    label += f"-lam{w.lam:g}"
  return f"runs/{config.run.preset or config.data.dataset}/{label}-{fingerprint(config)[:8]}"


def resolve_out_dir(config: Config) -> Config:
  """``config`` with its folder named: its own ``out_dir``, else :func:`default_out_dir`.

  The run calls this, not :class:`Config`: building a config names no folder, so a caller
  (a sweep) can tell an ``out_dir`` it was given from one that was made up.

  Examples:
    >>> from absgd_jax.train import make_config
    >>> resolve_out_dir(make_config("digits-lt", out_dir="mine")).run.out_dir
    'mine'
    >>> resolve_out_dir(make_config("digits-lt")).run.out_dir.startswith("runs/digits-lt/absgd-")
    True
  """
  return config if config.run.out_dir else config.replace(out_dir=default_out_dir(config))


def config_to_dict(config: Config) -> dict[str, Any]:
  """Every setting by key, JSON-ready (tuples as lists, infinities as "inf")."""
  return {k: _jsonable(v) for k, v in config.flat().items()}


def config_from_dict(d: Mapping[str, Any]) -> Config:
  """The :class:`Config` of :func:`config_to_dict`'s output (unknown keys are ignored)."""
  known = Config.settings()
  values = {}
  for k, v in d.items():
    if k not in known:
      continue
    hint = Config.hint(k)
    if hint == tuple[int, ...]:
      v = tuple(v)
    elif hint is float and isinstance(v, str):
      v = float(v)
    values[k] = v
  return Config.from_flat(values)


CONFIG_FILE = "config.json"


def write_run_config(
  config: Config, out_dir: str | None = None, extra: Mapping[str, Any] | None = None
) -> None:
  """Writes ``{"config": <every field>, "fingerprint": ..., **extra}`` to
  ``out_dir/config.json``.

  ``out_dir`` (default the config's resolved one) may be a local path or a URL (gs://...).
  """
  config = resolve_out_dir(config)
  out = epath.Path(out_dir or config.run.out_dir)
  text = json.dumps(
    {"config": config_to_dict(config), "fingerprint": fingerprint(config), **(extra or {})},
    indent=1,
  )
  if (out / CONFIG_FILE).exists() and (out / CONFIG_FILE).read_text() == text:
    return  # Nothing to record, and nothing written (the folder may be read-only).
  out.mkdir(parents=True, exist_ok=True)
  tmp = out / (CONFIG_FILE + ".tmp")
  tmp.write_text(text)
  tmp.replace(out / CONFIG_FILE)


def read_run_config(out_dir: str) -> dict[str, Any] | None:
  """The settings saved in ``out_dir/config.json`` (its ``"config"``), or None if none.

  Raises:
    ValueError: for a file that is not JSON, saying what to do.
  """
  path = epath.Path(out_dir) / CONFIG_FILE
  if not path.exists():
    return None
  try:
    record = json.loads(path.read_text())
  except json.JSONDecodeError as e:
    raise ValueError(
      f"{path} is not valid JSON ({e}): restore it, or pass --new-run "
      "(new_run=True) to start this run again in that folder."
    ) from None
  return record.get("config", record)


class RunMismatchError(ValueError):
  """``out_dir`` holds a run with other settings than the ones asked for.

  :class:`~absgd_jax.train.Trainer` (and :class:`~absgd_jax.train.Sweep`) raise it before
  anything in the folder is written, naming each setting that differs; ``new_run=True``
  (``--new-run``) starts afresh there instead.

  Examples:
    >>> import tempfile
    >>> from absgd_jax.train import RunMismatchError, make_config
    >>> folder = tempfile.mkdtemp()
    >>> write_run_config(make_config("digits-lt", out_dir=folder))
    >>> try:
    ...   claim_run_dir(make_config("digits-lt", lr=0.5, out_dir=folder), last_epoch=None)
    ... except RunMismatchError as e:
    ...   print(str(e).split("(")[1].split(")")[0])
    lr: 0.1 in the saved run, 0.5 now
  """


def check_resume(
  saved: Mapping[str, Any] | None,
  config: Config,
  *,
  last_epoch: int | None = None,
  new_run: bool = False,
) -> None:
  """Refuses to resume a run whose saved settings differ from ``config``'s.

  Args:
    saved: the run's ``config.json`` (:func:`read_run_config`), or None for a fresh folder.
    config: the settings asked for now.
    last_epoch: the epoch of the newest checkpoint in ``out_dir``, if any.
    new_run: the user asked to start afresh (``--new-run``): nothing is checked.

  Raises:
    RunMismatchError: naming each differing key with its saved and requested values, or a
      checkpoint beyond the requested ``epochs``; the message says how to proceed.
  """
  if new_run:
    return
  config = resolve_out_dir(config)
  if saved is None:
    if last_epoch is not None:
      raise RunMismatchError(
        f"{config.run.out_dir} holds checkpoints (epoch {last_epoch}) but no {CONFIG_FILE}, so "
        "its settings are unknown. Use another out_dir (--out), or --new-run to start afresh "
        "there."
      )
    return
  keys = diff_configs(saved, config)
  if keys:
    old, new = result_fields(saved), result_fields(config)
    moved = checks.moved_schedule(
      config.run.out_dir,
      saved.get("epochs"),
      config.schedule.epochs,
      {k: (old.get(k), new.get(k)) for k in keys},
      EPOCH_FIELDS,
    )
    if moved:
      raise RunMismatchError(moved)
    lines = "; ".join(f"{k}: {old.get(k)!r} in the saved run, {new.get(k)!r} now" for k in keys)
    raise RunMismatchError(
      f"{config.run.out_dir} holds a run with other settings ({lines}). Resuming would mix two "
      "runs. Use another out_dir (--out, or leave it unset for one per setting), or "
      "--new-run (new_run=True) to start afresh there."
    )
  if last_epoch is not None and last_epoch + 1 > config.schedule.epochs:
    raise RunMismatchError(
      f"{config.run.out_dir} holds a run already trained to epoch {last_epoch + 1}, past the "
      f"epochs={config.schedule.epochs} asked for: its results would not be those of a "
      f"{config.schedule.epochs}-epoch run. Use another out_dir, or --new-run to start afresh "
      "there."
    )


def claim_run_dir(
  config: Config, *, last_epoch: int | None, new_run: bool = False
) -> dict[str, Any] | None:
  """Checks ``config.run.out_dir``'s saved settings against ``config`` and records ``config`` there.

  The loop's one call before it restores anything: :func:`read_run_config`,
  :func:`check_resume`, then :func:`write_run_config`. With ``new_run`` the caller must also
  drop the old checkpoints (:meth:`absgd_jax.train.checkpoint.Checkpointer.delete_all`).

  Returns:
    The settings that were saved there before (None for a fresh folder).

  Raises:
    RunMismatchError: see :func:`check_resume`.
  """
  config = resolve_out_dir(config)
  saved = read_run_config(config.run.out_dir)
  check_resume(saved, config, last_epoch=last_epoch, new_run=new_run)
  write_run_config(config)
  return saved


def summary(
  config: Config,
  history: Sequence[dict[str, Any]],
  train_class_counts: np.ndarray,
  weights_from: int | None,
  steps_per_epoch: int,
  **extra: Any,
) -> dict[str, Any]:
  """What ``summary.json`` records: the settings, the last epoch, and whether the weights
  were on, so that a run whose lam stage never began (a shortened schedule) is not taken for
  ABSGD; ``extra`` adds the run's facts (wall time, devices, platform)."""
  w = config.weighting
  steps_run = config.schedule.epochs * steps_per_epoch
  # lam = inf without a KL budget weights every sample 1: momentum SGD (a sweep's baseline).
  uniform = config.method != "l2rw" and w.kl_budget <= 0 and math.isinf(w.lam)
  return {
    "config": config_to_dict(config),
    "final": history[-1] if history else {},
    "blow_ups": [r["blow_up"] for r in history if r.get("blow_up")],
    "weights": {
      "method": config.method,
      "first_step": weights_from,
      "on": weights_from is not None and weights_from < steps_run and not uniform,
    },
    "train_class_counts": np.asarray(train_class_counts).tolist(),
    "train_size": int(np.sum(train_class_counts)),
    **extra,
  }


def to_json(record: Any, **kw: Any) -> str:
  """JSON of a run's records, NumPy scalars as numbers."""

  def default(x):
    if isinstance(x, (np.floating, np.integer)):
      return x.item()
    raise TypeError(type(x))

  return json.dumps(record, default=default, **kw)


class RunFolder:
  """One run's folder, as the loop writes it: ``config.json`` (the resolved settings),
  ``metrics.jsonl`` (a line per epoch), ``summary.json``, ``checkpoints/`` and, with
  ``config.run.tensorboard``, ``tensorboard/`` (the same records as TensorBoard scalars:
  :mod:`absgd_jax.train.tensorboard`).

  A single run has one; a sweep has one per member, each holding what a single run's holds.
  Files are written by process 0 only, and only with ``log`` (checkpoints are written by
  every process, as orbax needs, whenever ``config.run.checkpoint``).

  Args:
    config: the run's settings; an empty ``out_dir`` is resolved (:func:`resolve_out_dir`).
    log: whether this process writes the folder's files.
    checkpoints: whether the folder keeps checkpoints (default ``config.run.checkpoint``; a
      sweep's own folder keeps none, its members' do).
    extra: more of what the run is, recorded in ``config.json`` beside the settings and
      checked like them (a sweep's grid).
  """

  def __init__(
    self,
    config: Config,
    *,
    log: bool = True,
    checkpoints: bool | None = None,
    extra: Mapping[str, Any] | None = None,
  ):
    self.extra = {k: _jsonable(v) for k, v in (extra or {}).items()}
    self.config = resolve_out_dir(config)
    self.path = epath.Path(self.config.run.out_dir)  # A local folder or a gs:// (etc.) location.
    self.log = log and jax.process_index() == 0
    # Checkpoints are resumed from, so their settings are recorded even when log=False.
    self._records_config = jax.process_index() == 0 and (log or self.config.run.checkpoint)
    self._keeps_checkpoints = self.config.run.checkpoint if checkpoints is None else checkpoints
    self._checkpointer: Checkpointer | None = None
    self._events = tensorboard_lib.EventLog(self.path / tensorboard_lib.EVENTS_FOLDER)

  @property
  def checkpointer(self) -> Checkpointer | None:
    """The folder's Checkpointer (None without checkpoints), made on first use: orbax makes
    its folder, which a refused run must not leave behind."""
    if self._keeps_checkpoints and self._checkpointer is None:
      self._checkpointer = Checkpointer(str(self.path / "checkpoints"))
    return self._checkpointer

  def last_epoch(self) -> int | None:
    if not (self._keeps_checkpoints and (self.path / "checkpoints").exists()):
      return None
    return self.checkpointer.latest_epoch()

  def check(self, new_run: bool = False) -> None:
    """Refuses a folder that holds a run with other settings (see :func:`check_resume`)."""
    check_resume(
      read_run_config(self.config.run.out_dir),
      self.config,
      last_epoch=self.last_epoch(),
      new_run=new_run,
    )
    path = self.path / CONFIG_FILE
    if new_run or not self.extra or not path.exists():
      return
    saved = json.loads(path.read_text())
    for key, value in self.extra.items():
      if key in saved and saved[key] != value:
        raise RunMismatchError(
          f"{self.path} holds a run with other settings ({key}: {saved[key]!r} in the saved "
          f"run, {value!r} now). Use another out_dir (--out), or --new-run (new_run=True) to "
          "start afresh there."
        )

  def claim(self) -> None:
    """Records this run's settings there. Call :meth:`check` on every folder of a run before
    claiming any (and, for a new run, :func:`clear` first).

    A folder that already holds this run's config.json (the check passed) and cannot be
    written (a finished run in a read-only folder) keeps the one it has: its result settings
    are this run's.
    """
    if self._records_config:
      try:
        write_run_config(self.config, extra=self.extra)
      except OSError:
        if not (self.path / CONFIG_FILE).exists():
          raise

  def read(self, name: str) -> str | None:
    """The text of ``name`` in the folder, or None if there is none."""
    path = self.path / name
    return path.read_text() if path.exists() else None

  def rebuild_history(self, history: Sequence[dict[str, Any]], epoch: int) -> str | None:
    """Rewrites ``metrics.jsonl`` from ``history`` (a checkpoint's) when the file does not
    read or disagrees with it on the epochs the checkpoint holds; returns why it was
    rebuilt, or None when it was not (epochs past the checkpoint are trained again)."""
    path = self.path / "metrics.jsonl"
    if not (self.log and path.exists()):
      return None
    try:
      text = path.read_bytes().decode()
      saved = [json.loads(line) for line in text.splitlines() if line.strip()]
      epochs = [r["epoch"] for r in saved[: len(history)]]
      why = None if epochs == [r["epoch"] for r in history] else "its epochs differ"
    except (ValueError, TypeError, KeyError) as e:  # UnicodeDecodeError is a ValueError
      why = f"it does not read ({type(e).__name__})"
    if why is None:
      return None
    self.write_history(history)
    return (
      f"{self.path / 'metrics.jsonl'} did not match the checkpoint ({why}): rebuilt from the "
      f"checkpoint of epoch {epoch}"
    )

  def close(self) -> None:
    """Finishes a checkpoint save under way, if a Checkpointer was made, and closes the
    event file."""
    self._events.close()
    if self._checkpointer is not None:
      self._checkpointer.close()

  def write(self, name: str, text: str) -> None:
    """Writes ``name`` through a temporary file (disk, GCS...), when this process logs."""
    if self.log:
      self.path.mkdir(parents=True, exist_ok=True)
      tmp = self.path / (name + ".tmp")
      tmp.write_text(text)
      tmp.replace(self.path / name)

  def write_history(self, history: Sequence[dict[str, Any]]) -> None:
    # The whole history, rewritten: it matches the checkpoint after a resume, and object
    # stores such as GCS cannot append.
    self.write("metrics.jsonl", "".join(to_json(r) + "\n" for r in history))
    if self.log and self.config.run.tensorboard:
      self._events.write(history)


# What a run writes into its folder (absgd_jax.train.trainer, run_folder, plots; a sweep's
# own folder: sweep.jsonl and sweep.png), and the temporary files it writes them through.
RUN_FILES = (
  "config.json",
  "metrics.jsonl",
  "summary.json",
  "sweep.jsonl",
  "curves.png",
  "class_accuracy.png",
  "class_weights.png",
  "sweep.png",
)
RUN_FOLDERS = ("checkpoints", tensorboard_lib.EVENTS_FOLDER)


def clear(out_dir: str) -> list[str]:
  """``--new-run``: removes a run's files, checkpoints and event files from ``out_dir``, whatever
  state they are in (nothing is read first); returns what was removed. Only the names a run
  writes go, never the folder itself or anything else in it (``out_dir`` may hold other things).

  Args:
    out_dir: the run's folder (local or a URL such as gs://...).

  Returns:
    The names removed, in the order of :data:`RUN_FILES` and :data:`RUN_FOLDERS`.

  Examples:
    >>> import os, tempfile
    >>> d = tempfile.mkdtemp()
    >>> for name in ("config.json", "notes.txt"):
    ...   with open(os.path.join(d, name), "w") as f:
    ...     _ = f.write("{bad")
    >>> os.makedirs(os.path.join(d, "checkpoints", "3"))
    >>> clear(d), sorted(os.listdir(d))
    (['config.json', 'checkpoints/'], ['notes.txt'])
  """
  out = epath.Path(out_dir)
  removed = []
  if not out.exists():
    return removed
  for name in RUN_FILES:
    for path in (out / name, out / (name + ".tmp")):
      if path.exists():
        path.unlink()
        if path.name == name:
          removed.append(name)
  for name in RUN_FOLDERS:
    if (out / name).exists():
      (out / name).rmtree()
      removed.append(name + "/")
  return removed


def clear_on_every_host(out_dirs: list[str]) -> list[list[str]]:
  """:func:`clear` for each folder, on process 0 only; then every process waits there.

  Without the wait, another host of a pod could read the old ``config.json`` or restore the
  old checkpoints before process 0 has removed them, and train from another state than
  process 0's.

  Returns:
    Per folder, the names removed (empty on the other processes).
  """
  removed = [clear(d) if jax.process_index() == 0 else [] for d in out_dirs]
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices("absgd_jax: --new-run has cleared the run folders")
  return removed


def claim(folders: Sequence[RunFolder], new_run: bool, say: Any = print) -> None:
  """Refuses folders holding runs with other settings (every one checked before any is
  written), then records the run's settings in each; ``new_run`` first clears them, and
  ``say`` tells what it removed."""
  with errors.user_input():  # A damaged config.json is the user's to restore or replace.
    if new_run:
      removed = clear_on_every_host([str(f.path) for f in folders])
      for folder, names in zip(folders, removed):
        if names:
          say(f"new run in {folder.path}: removed {', '.join(names)}")
    for folder in folders:
      folder.check(new_run)
  for folder in folders:
    folder.claim()
