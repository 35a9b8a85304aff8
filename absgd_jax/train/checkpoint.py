"""Checkpoints with orbax: the whole TrainState plus a JSON record of where the run stands.

Orbax writes each checkpoint to a temporary directory and renames it when complete, so a run
killed mid-save leaves the previous checkpoint intact and never a half-written one.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath


class Checkpointer:
  """Saves after every epoch (keeping the newest ``keep``) and restores the latest."""

  def __init__(self, directory: str, keep: int = 2):
    # Local paths are made absolute (orbax wants that); gs:// and other URLs are kept as they
    # are, so that every host of a pod writes to the one shared location.
    directory = str(directory)
    if "://" not in directory:
      directory = os.path.abspath(directory)
    self._manager = ocp.CheckpointManager(
        epath.Path(directory),
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True),
    )

  def latest_epoch(self) -> int | None:
    """The epoch number of the newest complete checkpoint, or None."""
    return self._manager.latest_step()

  def save(self, epoch: int, state: Any, meta: dict[str, Any]) -> None:
    self._manager.save(epoch, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)))
    self._manager.wait_until_finished()

  def restore(self, state_like: Any, epoch: int | None = None) -> tuple[Any, dict[str, Any]]:
    """Restores onto the structure, dtypes and shardings of ``state_like``."""
    epoch = self.latest_epoch() if epoch is None else epoch
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state_like)
    out = self._manager.restore(epoch, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
    return out["state"], out["meta"]

  def restore_variables(self, variables: dict[str, Any], *, head: str = "keep",
                        epoch: int | None = None) -> dict[str, Any]:
    """The checkpoint's ``params`` and ``batch_stats`` only, checked against ``variables``.

    For the second stage of a two-stage run, whose optimizer (and so its state's structure)
    differs from the first stage's: nothing but the weights is carried over. With
    ``head="drop"`` the classifier keeps ``variables``' values (e.g. another class count).

    Raises:
      ValueError: naming the first parameter whose name or shape differs.
    """
    epoch = self.latest_epoch() if epoch is None else epoch
    path = epath.Path(self._manager.directory) / str(epoch) / "state"
    # Only these two collections, read as host NumPy arrays: no sharding is taken from the
    # file, so a stage-1 checkpoint of 64 chips restores on 8, and the optimizer state (of
    # another optimizer) is not read at all.
    checkpointer = ocp.PyTreeCheckpointer()
    meta = checkpointer.metadata(path)
    meta = getattr(meta, "item_metadata", meta)  # orbax versions differ in the wrapping.
    tree = getattr(meta, "tree", meta)
    wanted = {k: tree[k] for k in ("params", "batch_stats") if k in tree}
    saved = checkpointer.restore(path, args=ocp.args.PyTreeRestore(
        item=wanted, partial_restore=True,
        restore_args=jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), wanted)))
    out = dict(variables)
    for collection in ("params", "batch_stats"):
      if collection in variables:
        out[collection] = fit_to_template(saved.get(collection, {}), variables[collection],
                                          keep=("head",) if head == "drop" else (),
                                          where=f"{self._manager.directory}:{collection}")
    return out

  def close(self) -> None:
    self._manager.close()


def fit_to_template(loaded: Any, template: Any, *, keep: tuple[str, ...] = (),
                    where: str = "checkpoint") -> Any:
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
        raise ValueError(f"{where}: {path} has shape {tuple(got.shape)}; the model needs "
                         f"{tuple(want.shape)}. Is it the same architecture and class count "
                         f"(init_head='drop' starts a new classifier)?")
      return np.asarray(got).astype(want.dtype)
    if not isinstance(got, dict):
      raise ValueError(f"{where}: {path or 'the root'} is not a collection of parameters.")
    extra = sorted(set(got) - set(want))
    missing = sorted(set(want) - set(got))
    if missing or extra:
      raise ValueError(f"{where}: {path or 'the root'} " + (
          f"lacks {missing}" if missing else f"has unexpected entries {extra}") +
          ". Is it a checkpoint of the same model?")
    return {k: walk(got[k], want[k], f"{path}/{k}" if path else k) for k in want}

  loaded = {k: v for k, v in dict(loaded).items() if k not in keep}
  out = walk(loaded, {k: v for k, v in template.items() if k not in keep}, "")
  out.update({k: template[k] for k in keep if k in template})
  return out
