"""The health of a run's members over its epochs: which are still training, and why not.

:mod:`absgd_jax.train.health` holds the rules (what counts as diverged, as a blow-up, as a
class given up), each a function of one epoch's record and the epochs before it. A
:class:`Watch` applies them to every member of a run as the epochs come, and keeps what the
rules need between epochs: each member's status, its class-collapse guard and its last
epoch's per-step losses. A plain run is one member; a sweep's members are watched one by one,
so a member that diverges stops alone and the others carry on.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

from absgd_jax.train import health
from absgd_jax.train.health import DivergenceError


class Watch:
  """Watches M members: per-step guards, then divergence and blow-ups per epoch.

  Args:
    members: the run's members (:class:`~absgd_jax.train.members.Member`).
    exps: each member's data (its class names name the classes in warnings).
    folders: each member's :class:`~absgd_jax.train.run_folder.RunFolder` (its checkpointer
      names the last healthy checkpoint when the member diverges).
    steps_per_epoch: the steps of one epoch (a blow-up is dated by its global step).
    say: prints one line on the run's console.
  """

  def __init__(
    self,
    members: Sequence[Any],
    exps: Sequence[Any],
    folders: Sequence[Any],
    steps_per_epoch: int,
    say: Callable[[str], None],
  ):
    self.members, self.exps, self.folders = list(members), list(exps), list(folders)
    self.steps_per_epoch, self.say = steps_per_epoch, say
    self.guards = [health.ClassCollapseGuard.for_run(m.config, e) for m, e in zip(members, exps)]
    self.status = ["ok"] * len(self.members)  # or "diverged in epoch E: why"
    self.step_losses: list[list[float]] = [[] for _ in self.members]  # last epoch's, per step

  def training(self, i: int) -> bool:
    """Whether member ``i`` is still training (it has not diverged or been stopped)."""
    return self.status[i] == "ok"

  def steps(self, i: int, epoch: int, per_step: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Takes member ``i``'s per-step metrics of ``epoch``; warns of each class it has given
    up (:class:`~absgd_jax.train.health.ClassCollapseGuard`) and returns them."""
    self.step_losses[i] = [float(m["loss_sum"] / max(m["count"], 1)) for m in per_step]
    guard, prefix = self.guards[i], self.members[i].prefix
    first = epoch * self.steps_per_epoch
    hits = [hit for j, m in enumerate(per_step) for hit in guard.update(m, first + j)]
    for hit in hits:
      warnings.warn(prefix + guard.message(hit), RuntimeWarning, stacklevel=3)
      self.say("warning: " + prefix + guard.message(hit))
    return hits

  def divergence(
    self, epoch: int, records: list[dict[str, Any] | None], histories: Sequence[Sequence[dict]]
  ) -> None:
    """Marks each member that diverged this epoch (:func:`~absgd_jax.train.health.divergence`):
    its record becomes None and its folder keeps the last healthy checkpoint.

    Raises:
      DivergenceError: once every member has diverged, naming each and what to change.
    """
    messages = []
    for i, (member, record) in enumerate(zip(self.members, records)):
      why = None if record is None else health.divergence(record, histories[i])
      if why is None:
        continue
      self.status[i], records[i] = f"diverged in epoch {epoch}: {why}", None
      ckpt = self.folders[i].checkpointer
      messages.append(member.prefix + health.diverged_message(member.config, epoch, why, ckpt))
      if "ok" in self.status:
        self.say(f"{member.prefix}{self.status[i]}; the others carry on")
    if "ok" not in self.status:
      raise DivergenceError(" ".join(messages) if messages else "every member has diverged.")

  def blow_ups(
    self, epoch: int, records: list[dict[str, Any] | None], histories: Sequence[Sequence[dict]]
  ) -> None:
    """Warns of each member's blow-up this epoch (:func:`~absgd_jax.train.health.blow_up`),
    once per episode, and keeps it in the record; with ``on_blow_up=stop`` such a member stops
    as a diverged one.

    Raises:
      DivergenceError: when the members that stopped were the last ones training.
    """
    stops = []
    for i, (member, record) in enumerate(zip(self.members, records)):
      if record is None:
        continue
      event = health.blow_up(
        record, histories[i], self.step_losses[i], epoch * self.steps_per_epoch,
        self.exps[i].train.class_names,
      )  # fmt: skip
      going_on = bool(histories[i]) and histories[i][-1].get("blown_up", False)
      # An epoch without an evaluation cannot show that an accuracy came back: the episode
      # goes on until one does.
      record["blown_up"] = event is not None or (going_on and not _evaluated(record))
      if event is None or going_on:
        continue  # nothing, or the episode the last epoch reported goes on
      record["blow_up"] = event
      message = member.prefix + health.blow_up_message(member.config, event)
      if member.config.run.on_blow_up == "stop":
        self.status[i], records[i] = f"diverged in epoch {epoch}: it blew up", None
        stops.append(message)
      else:  # One line: the command line prints a warning as one (errors.console).
        warnings.warn(message, RuntimeWarning, stacklevel=2)
    if stops and "ok" not in self.status:
      raise DivergenceError(" ".join(stops) + " (on_blow_up=stop)")


def _evaluated(record: dict[str, Any]) -> bool:
  return any(k.endswith("_acc") and k.startswith(("val_", "test_")) for k in record)
