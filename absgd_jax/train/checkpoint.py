"""Checkpoints with orbax: the whole TrainState plus a JSON record of where the run stands.

Orbax writes each checkpoint to a temporary directory and renames it when complete, so a run
killed mid-save leaves the previous checkpoint intact and never a half-written one.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp


class Checkpointer:
  """Saves after every epoch (keeping the newest ``keep``) and restores the latest."""

  def __init__(self, directory: str, keep: int = 2):
    self._manager = ocp.CheckpointManager(
        os.path.abspath(directory),
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

  def close(self) -> None:
    self._manager.close()
