"""Checkpoints with orbax: the whole TrainState plus a JSON record of where the run stands.

Orbax writes each checkpoint to a temporary directory and renames it when complete, so a run
killed mid-save leaves the previous checkpoint intact and never a half-written one.

Two kinds are kept, by one orbax preservation policy: the newest ``keep`` (the rolling ones,
to resume from) and, apart from them, the best healthy one, by the validation metric where
the loop gives one and else the latest healthy. A blow-up that writes several bad epochs in a
row therefore cannot push the last good state out: ``max_to_keep`` never applies to it.

On resume, a checkpoint that does not read (a corrupt file, a disk filled mid-copy, a damaged
metrics record) is skipped for the one before it, with a one-line warning naming both. The
temporary folders of saves that never finished (a killed run, a full disk) are deleted when the
next Checkpointer opens the folder.
"""

from __future__ import annotations

import math
import os
import warnings
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from orbax.checkpoint import checkpoint_managers as policies

from absgd_jax.train import errors


class CheckpointError(RuntimeError):
  """No checkpoint of a run could be read."""


def _score(metrics: dict[str, Any]) -> tuple:
  """Orbax's ranking key: healthy before unhealthy, then by metric, then the latest."""
  metric = metrics.get("metric")
  has_metric = metric is not None and math.isfinite(metric)
  return (
    bool(metrics.get("healthy")),
    has_metric,
    metric if has_metric else 0.0,
    int(metrics.get("epoch", -1)),
  )


_short = errors.short_reason


class _Manager(ocp.CheckpointManager):
  """orbax's manager, except that a checkpoint whose metrics record does not read is noted
  (and later passed over as unreadable) instead of stopping the manager from opening."""

  def __init__(self, *args, **kwargs):
    self.damaged: dict[int, str] = {}  # epoch -> why its metrics record does not read.
    super().__init__(*args, **kwargs)

  def metrics(self, step: int):
    try:
      return super().metrics(step)
    except Exception as e:  # json's, orbax's or the file system's error: all mean unreadable.
      self.damaged[step] = _short(e)
      return None


def find_run_checkpoints(run_dir: str) -> str:
  """The ``checkpoints`` folder of a run directory (for ``init_from``).

  ``run_dir`` may be the run's folder itself or, since the default ``out_dir`` is
  ``runs/<preset>/<method>-...-<fingerprint>``, the preset's folder holding exactly one run.

  Raises:
    FileNotFoundError: when none, or more than one, run with checkpoints is found there,
      naming the candidates.
  """
  root = epath.Path(run_dir)
  if (root / "checkpoints").exists():
    return str(root / "checkpoints")
  runs = sorted(p for p in root.iterdir() if (p / "checkpoints").exists()) if root.exists() else []
  if len(runs) == 1:
    return str(runs[0] / "checkpoints")
  if runs:
    raise FileNotFoundError(
      f"{run_dir} holds {len(runs)} runs ({', '.join(p.name for p in runs)})"
      ": set init_from to the one to start from."
    )
  raise FileNotFoundError(
    f"{run_dir} has no checkpoints/ (nor a run folder holding one): did its run finish an epoch?"
  )


class Checkpointer:
  """Saves after every epoch, keeping the newest ``keep`` plus the best healthy one.

  Examples:
    >>> import tempfile, jax.numpy as jnp
    >>> ckpt = Checkpointer(tempfile.mkdtemp(), keep=1)
    >>> for epoch, acc in enumerate([0.5, 0.6, 0.1]):
    ...   ckpt.save(epoch, {"w": jnp.ones(2) * epoch}, {"epoch": epoch}, healthy=acc > 0.2,
    ...             metric=acc)
    >>> ckpt.latest_epoch(), ckpt.best_epoch(), ckpt.all_epochs()
    (2, 1, [1, 2])
  """

  def __init__(self, directory: str, keep: int = 2):
    # Local paths are made absolute (orbax wants that); gs:// and other URLs are kept as they
    # are, so that every host of a pod writes to the one shared location.
    directory = str(directory)
    if "://" not in directory:
      directory = os.path.abspath(directory)
    if keep < 1:
      raise ValueError(f"keep={keep} must be >= 1.")
    self.directory = directory
    # best_fn makes orbax store each save's metrics (and gives best_step); the policy keeps
    # the newest `keep` OR the single best: never fewer good ones than that.
    policy = policies.AnyPreservationPolicy(
      [
        policies.LatestN(n=keep),
        policies.BestN(get_metric_fn=_score, n=1, keep_checkpoints_without_metrics=False),
      ]
    )
    self._manager = _Manager(
      epath.Path(directory),
      options=ocp.CheckpointManagerOptions(
        best_fn=_score,
        best_mode="max",
        create=True,
        preservation_policy=policy,
        cleanup_tmp_directories=True,
      ),
    )

  def latest_epoch(self) -> int | None:
    """The epoch number of the newest complete checkpoint, or None."""
    return self._manager.latest_step()

  def all_epochs(self) -> list[int]:
    """The epochs of every kept checkpoint, oldest first."""
    return sorted(self._manager.all_steps())

  def _metrics(self, epoch: int) -> dict[str, Any] | None:
    try:
      return self._manager.metrics(epoch)
    except Exception:  # An unreadable metrics file: treat the checkpoint as unknown.
      return None

  def best_epoch(self) -> int | None:
    """The kept healthy checkpoint with the best metric (else the latest healthy), or None.

    Checkpoints written before this record existed (no metrics) count as healthy.
    """
    best, best_key = None, None
    for epoch in self.all_epochs():
      m = self._metrics(epoch)
      if epoch in self._manager.damaged:
        continue
      m = {"healthy": True, "epoch": epoch} if m is None else m
      if not m.get("healthy"):
        continue
      key = _score(m)
      if best_key is None or key > best_key:
        best, best_key = epoch, key
    return best

  def save(
    self,
    epoch: int,
    state: Any,
    meta: dict[str, Any],
    *,
    healthy: bool = True,
    metric: float | None = None,
  ) -> None:
    """Saves ``state`` and the JSON ``meta`` as ``epoch``.

    Args:
      healthy: whether this epoch's state is one to fall back on (the loop's divergence
        checks passed). Unhealthy checkpoints are kept only while among the newest ``keep``.
      metric: the validation metric (higher is better) if this epoch was evaluated on a
        validation split; the best such healthy checkpoint is kept apart.
    """
    metric = None if metric is None or not math.isfinite(float(metric)) else float(metric)
    # Checkpoints at or after this epoch belong to an abandoned future (the run resumed from
    # an earlier, healthy or readable, one). Orbax would silently skip this save behind them.
    for stale in self.all_epochs():
      if stale >= epoch:
        self._manager.delete(stale)
    self._manager.save(
      epoch,
      args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
      metrics={"healthy": bool(healthy), "metric": metric, "epoch": int(epoch)},
    )
    self._manager.wait_until_finished()

  def _restore_one(self, state_like: Any, epoch: int):
    self._metrics(epoch)  # Notes a damaged metrics record, if it was not read yet.
    if epoch in self._manager.damaged:
      raise CheckpointError(
        f"its metrics record {self.directory}/{epoch}/metrics is damaged"
        f" ({self._manager.damaged[epoch]})"
      )
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state_like)
    out = self._manager.restore(
      epoch,
      args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()
      ),
    )
    return out["state"], out["meta"]

  def is_healthy(self, epoch: int) -> bool:
    """Whether ``epoch`` was saved as healthy (checkpoints without the record count as so)."""
    m = self._metrics(epoch)
    return True if m is None else bool(m.get("healthy", True))

  def latest_healthy_epoch(self) -> int | None:
    """The newest checkpoint saved as healthy, or None."""
    healthy = [
      e for e in self.all_epochs() if self.is_healthy(e) and e not in self._manager.damaged
    ]
    return healthy[-1] if healthy else None

  def restore(self, state_like: Any, epoch: int | None = None) -> tuple[Any, dict[str, Any]]:
    """Restores onto the structure, dtypes and shardings of ``state_like``.

    Without ``epoch``, the newest healthy checkpoint that reads. Checkpoints saved as
    unhealthy are passed over with a warning (resuming from a diverged state would diverge
    again), and one that does not read (corrupt, cut short) is skipped for the one before it,
    with a warning naming both. ``meta["epoch"]`` says which one was restored; the next
    :meth:`save` drops the newer ones.

    Raises:
      CheckpointError: when no healthy checkpoint reads (or the given ``epoch`` does not),
        with the reason in one line and what to do; the full error is chained.
    """
    # A failed read abandons orbax's other reads, each of which would print a page.
    with errors.quiet_abandoned_reads() as quiet:
      return self._restore(state_like, epoch, quiet)

  def _restore(self, state_like: Any, epoch: int | None, quiet: Any) -> tuple[Any, dict[str, Any]]:
    if epoch is not None:
      try:
        return self._restore_one(state_like, epoch)
      except Exception as e:
        quiet.read_failed = True
        raise CheckpointError(self._hint(epoch, e)) from e
    epochs = self.all_epochs()[::-1]
    if not epochs:
      raise CheckpointError(f"{self.directory} holds no checkpoint.")
    unhealthy = [e for e in epochs if not self.is_healthy(e)]
    epochs = [e for e in epochs if e not in unhealthy]
    if not epochs:
      raise CheckpointError(
        f"every checkpoint in {self.directory} (epochs {sorted(unhealthy)}) was saved after "
        "the run diverged: none is worth resuming. Start afresh (--new-run, or another "
        "out_dir), e.g. with a lower lr."
      )
    if unhealthy and unhealthy[0] > epochs[0]:
      warnings.warn(
        f"checkpoints {sorted(unhealthy)} in {self.directory} were saved after "
        f"the run diverged; resuming from the last healthy one, epoch {epochs[0]}.",
        stacklevel=3,
      )
    failed: list[tuple[int, BaseException]] = []
    for i, ep in enumerate(epochs):
      try:
        out = self._restore_one(state_like, ep)
      except Exception as e:  # Orbax and TensorStore raise many types for a bad file.
        quiet.read_failed = True
        failed.append((ep, e))
        if i + 1 < len(epochs):
          warnings.warn(
            f"checkpoint {self.directory}/{ep} does not read ({_short(e)}); "
            f"falling back to the previous one, epoch {epochs[i + 1]}.",
            stacklevel=3,
          )
        continue
      return out
    ep, e = failed[0]
    raise CheckpointError(
      f"no checkpoint in {self.directory} reads (tried epochs {[f for f, _ in failed]}). "
      + self._hint(ep, e)
    ) from e

  def _hint(self, epoch: int, e: BaseException) -> str:
    return (
      f"checkpoint {self.directory}/{epoch} does not read: {_short(e)}. It may be "
      "corrupt (a copy cut short, a full disk) or from another model or settings. "
      "Delete that epoch's folder to resume from an earlier one, or start afresh in "
      "another out_dir (or with --new-run)."
    )

  def restore_variables(
    self, variables: dict[str, Any], *, head: str = "keep", epoch: int | None = None
  ) -> dict[str, Any]:
    """The checkpoint's ``params`` and ``batch_stats`` only, checked against ``variables``.

    By default from the newest healthy checkpoint.

    For the second stage of a two-stage run, whose optimizer (and so its state's structure)
    differs from the first stage's: nothing but the weights is carried over. With
    ``head="drop"`` the classifier keeps ``variables``' values (e.g. another class count).

    Raises:
      ValueError: naming the first parameter whose name or shape differs.
    """
    epoch = self.latest_healthy_epoch() if epoch is None else epoch
    if epoch is None:
      raise CheckpointError(f"{self.directory} holds no healthy checkpoint to start from.")
    path = epath.Path(self._manager.directory) / str(epoch) / "state"
    # Only these two collections, read as host NumPy arrays: no sharding is taken from the
    # file, so a stage-1 checkpoint of 64 chips restores on 8, and the optimizer state (of
    # another optimizer) is not read at all.
    checkpointer = ocp.PyTreeCheckpointer()
    meta = checkpointer.metadata(path)
    meta = getattr(meta, "item_metadata", meta)  # orbax versions differ in the wrapping.
    tree = getattr(meta, "tree", meta)
    wanted = {k: tree[k] for k in ("params", "batch_stats") if k in tree}
    saved = checkpointer.restore(
      path,
      args=ocp.args.PyTreeRestore(
        item=wanted,
        partial_restore=True,
        restore_args=jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), wanted),
      ),
    )
    out = dict(variables)
    for collection in ("params", "batch_stats"):
      if collection in variables:
        out[collection] = fit_to_template(
          saved.get(collection, {}),
          variables[collection],
          keep=("head",) if head == "drop" else (),
          where=f"{self._manager.directory}:{collection}",
        )
    return out

  def delete_all(self) -> None:
    """Deletes every checkpoint (a new run in the same folder: ``--new-run``)."""
    for epoch in self.all_epochs():
      self._manager.delete(epoch)

  def close(self) -> None:
    self._manager.close()


def fit_to_template(
  loaded: Any, template: Any, *, keep: tuple[str, ...] = (), where: str = "checkpoint"
) -> Any:
  """``loaded`` (nested dicts of arrays) in ``template``'s structure and dtypes.

  Top-level entries named in ``keep`` come from ``template`` instead. Every other leaf of the
  template must be in ``loaded`` with the same shape, and ``loaded`` may hold nothing more.

  Raises:
    ValueError: naming the first missing, unexpected or mis-shaped entry.
  """

  def walk(got, want, path):
    if not isinstance(want, dict):
      if not hasattr(got, "shape"):
        raise ValueError(f"{where}: {path} is not an array.")
      if tuple(got.shape) != tuple(want.shape):
        raise ValueError(
          f"{where}: {path} has shape {tuple(got.shape)}; the model needs "
          f"{tuple(want.shape)}. Is it the same architecture and class count "
          f"(init_head='drop' starts a new classifier)?"
        )
      return np.asarray(got).astype(want.dtype)
    if not isinstance(got, dict):
      raise ValueError(f"{where}: {path or 'the root'} is not a collection of parameters.")
    extra = sorted(set(got) - set(want))
    missing = sorted(set(want) - set(got))
    if missing or extra:
      raise ValueError(
        f"{where}: {path or 'the root'} "
        + (f"lacks {missing}" if missing else f"has unexpected entries {extra}")
        + ". Is it a checkpoint of the same model?"
      )
    return {k: walk(got[k], want[k], f"{path}/{k}" if path else k) for k in want}

  loaded = {k: v for k, v in dict(loaded).items() if k not in keep}
  out = walk(loaded, {k: v for k, v in template.items() if k not in keep}, "")
  out.update({k: template[k] for k in keep if k in template})
  return out
