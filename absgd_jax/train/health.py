"""Is the run healthy? Divergence beyond NaN, blow-ups it survives, and classes that lam < 0
has locked out.

Host-side checks on the metrics the steps already return; they cost nothing on the device.

- :func:`divergence` looks at one epoch against the epochs before it. Besides a non-finite
  loss it flags a loss far above its running level, weights that have all collapsed to 0
  (ESS 0, weighted loss 0: the model no longer moves), and ``log s`` jumping by orders of
  magnitude (a carried ``log s`` of 1e30 zeroes every later weight, which float32 cannot undo).
- :func:`blow_up` looks at one epoch against the last few for what a run survives but should
  not be called healthy for: a training loss several times its best recent level (from the
  step where it began), an accuracy that collapses, or a class that was learnt and is lost.
  The run warns (the ``on_blow_up`` setting can make it stop), and its summary and a sweep's
  table say so.
- :class:`ClassCollapseGuard` watches each class's mean weight per step. With lam < 0 a class
  whose loss is high when lam starts acting gets ever smaller weights and is given up ("rich
  get richer"); the paper is silent on it, and it is the failure users meet first.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np


class DivergenceError(RuntimeError):
  """The run diverged: a non-finite or exploding loss, collapsed weights or a log s jump.

  :meth:`Trainer.fit` raises it with a message that says what diverged, in which epoch, and
  which checkpoint is the last healthy one (kept apart from the rolling ones).

  Examples:
    >>> from absgd_jax.train import DivergenceError
    >>> issubclass(DivergenceError, RuntimeError)  # `except RuntimeError` catches it too
    True
  """


# A loss this many times the median of the earlier epochs' is a blow-up, not noise: a healthy
# run's mean loss rarely rises 10x between epochs, while a diverging one climbs by decades.
LOSS_BLOWUP_FACTOR = 100.0
# Above this many times the median the run goes on, but its checkpoint is not marked healthy:
# the Checkpointer keeps the last healthy one apart, and a resume passes over such ones.
LOSS_SUSPECT_FACTOR = 10.0
# |log s| this many times its earlier size (and above LOG_S_FLOOR) is a jump of orders of
# magnitude. log s ~ L / lam, so the floor keeps small lam's large but steady log s quiet.
LOG_S_JUMP_FACTOR = 100.0
LOG_S_FLOOR = 10.0
# A training loss this many times the best of the last SPIKE_WINDOW epochs, and higher than
# that best by SPIKE_RISE times the first epoch's loss (the loss's own scale), is a blow-up.
# On digits the healthy presets' epoch losses never rose above 1.5 times that best (a
# warm-up, a lam switch and label noise included), and ABSGD with lam = 1 switched on at the
# first step rose 19 times in one epoch, by 1.9 times the first epoch's loss; 4 sits well
# between. The rise keeps a loss near 0 (a focal loss on data it fits) from counting: there
# a rise from 0.005 to 0.17 is 34 times, and nothing.
SPIKE_FACTOR = 4.0
SPIKE_WINDOW = 5
SPIKE_RISE = 0.5
# An accuracy below this fraction of its best so far, lower by at least ACC_DROP, has collapsed
# (digits' blow-up: 0.65 to 0.10). It is the balanced accuracy where the split has one: on an
# imbalanced validation split, weighting the tail up lowers the plain accuracy by design
# (CIFAR-10-ST with class-balanced weights: 0.79 to 0.35 while the balanced rose 0.40 to 0.57).
ACC_COLLAPSE = 0.5
ACC_DROP = 0.1
# A class whose accuracy reached LEARNT and has been 0 for LOST_EVALS evaluations in a row was
# lost. One evaluation is not enough: a tail class of CIFAR-10-LT's validation split has about
# 20 images, and at lr 0.1 plain SGD took one from 0.52 to 0 and back to 0.39 in 8 epochs.
LEARNT = 0.5
LOST_EVALS = 2


def divergence(record: dict[str, Any], history: Sequence[dict[str, Any]]) -> str | None:
  """Why epoch ``record`` has diverged given the earlier ``history``, or None if healthy.

  Examples:
    >>> ok = {"train_loss": 2.0, "weighted_loss": 2.0, "ess_mean": 60.0, "log_s": 0.4,
    ...       "lam": 5.0}
    >>> divergence(ok, [ok]) is None
    True
    >>> divergence({**ok, "train_loss": 1e16}, [ok])
    'the mean training loss 1e+16 is 5e+15 times the median of the earlier epochs (2)'
    >>> divergence({**ok, "ess_mean": 0.0, "weighted_loss": 0.0}, [ok])[:37]
    'every ABSGD weight has collapsed to 0'
  """
  loss = record.get("train_loss")
  if loss is None or not math.isfinite(loss):
    return f"the mean training loss is {loss}"
  wloss = record.get("weighted_loss")
  if wloss is None or not math.isfinite(wloss):
    return f"the weighted training loss is {wloss}"
  earlier = [r["train_loss"] for r in history if r.get("train_loss") is not None]
  if earlier:
    level = float(np.median(earlier))
    if level > 0 and loss > LOSS_BLOWUP_FACTOR * level:
      return (
        f"the mean training loss {loss:.3g} is {loss / level:.3g} times the median of "
        f"the earlier epochs ({level:.3g})"
      )
  if loss > 0 and record.get("ess_mean", 1.0) < 1.0:
    # Kish's ESS is >= 1 whenever one weight is nonzero; below 1 most steps had none.
    return (
      f"every ABSGD weight has collapsed to 0 (mean ESS {record['ess_mean']:.3g}, "
      f"log s {record.get('log_s'):.3g}): the model no longer moves"
    )
  if loss > 0 and wloss == 0.0:
    return (
      f"the weighted loss is 0 while the loss is {loss:.3g}: the weight sits on samples "
      f"the model already fits exactly, so it no longer moves"
    )
  log_s = record.get("log_s")
  if log_s is not None and not math.isfinite(log_s):
    return f"log s is {log_s}"
  if history and log_s is not None and record.get("lam") == history[-1].get("lam"):
    before = abs(history[-1].get("log_s") or 0.0)
    if abs(log_s) > LOG_S_JUMP_FACTOR * max(before, LOG_S_FLOOR):
      return f"log s jumped from {history[-1]['log_s']:.3g} to {log_s:.3g} at the same lam"
  return None


def suspect(record: dict[str, Any], history: Sequence[dict[str, Any]]) -> str | None:
  """Why epoch ``record``'s state is not one to fall back on, though not diverged; or None.

  Examples:
    >>> suspect({"train_loss": 30.0}, [{"train_loss": 2.0}])
    'the mean training loss 30 is 15 times the median of the earlier epochs'
  """
  earlier = [r["train_loss"] for r in history if r.get("train_loss") is not None]
  level = float(np.median(earlier)) if earlier else 0.0
  if level > 0 and record["train_loss"] > LOSS_SUSPECT_FACTOR * level:
    return (
      f"the mean training loss {record['train_loss']:.3g} is "
      f"{record['train_loss'] / level:.3g} times the median of the earlier epochs"
    )
  if record.get("ess_min", 1.0) < 1.0 and math.isfinite(record.get("lam", math.inf)):
    return "a step had every ABSGD weight at 0"
  return None


class ClassCollapseGuard:
  """Warns, once per episode, when a class's mean weight stays below ``threshold``.

  Fed the per-step sums the train step returns (``class_weight_sum [C]``, ``class_count [C]``,
  ``lam``). Only steps with lam < 0 count: with lam > 0 a small weight marks a class already
  learnt, which is what the weights are for. A class counts one step each time it is in the
  batch with a mean weight below ``threshold`` (1 is the batch's mean weight); after ``steps``
  such steps in a row it is reported. A step at or above the threshold resets its count. The
  counts live on the host and start afresh when a run resumes.

  Examples:
    >>> guard = ClassCollapseGuard(threshold=0.05, steps=2, class_names=["cat", "dog"])
    >>> step = {"class_weight_sum": np.array([1.9, 0.02]), "class_count": np.array([2.0, 2.0]),
    ...         "lam": -1.0}
    >>> guard.update(step, global_step=0)
    []
    >>> hits = guard.update(step, global_step=1)
    >>> hits
    [{'step': 1, 'class': 1, 'name': 'dog', 'mean_weight': 0.01}]
    >>> guard.update(step, global_step=2)  # reported once until it recovers
    []
    >>> guard.message(hits[0])[:60]
    'class 1 (dog) has had a mean weight below 0.05 for 2 steps ('
  """

  @classmethod
  def for_run(cls, config: Any, exp: Any) -> "ClassCollapseGuard":
    """The guard of a run, from its settings and its data's class names."""
    w = config.weighting
    return cls(w.collapse_weight, w.collapse_steps, exp.train.class_names)

  def __init__(self, threshold: float, steps: int, class_names: Sequence[str]):
    self.threshold = float(threshold)
    self.steps = int(steps)
    self.class_names = list(class_names)
    self.run = np.zeros(len(self.class_names), np.int64)
    self.reported = np.zeros(len(self.class_names), bool)

  def update(self, step: dict[str, Any], global_step: int) -> list[dict[str, Any]]:
    """Takes one step's metrics; returns a record of each class that has just collapsed."""
    lam = float(step["lam"])
    if self.steps <= 0 or not (lam < 0 and math.isfinite(lam)):
      return []
    count = np.asarray(step["class_count"], np.float64)
    present = count > 0
    mean = np.where(
      present,
      np.asarray(step["class_weight_sum"], np.float64) / np.where(present, count, 1.0),
      np.inf,
    )
    low = present & (mean < self.threshold)
    high = present & ~low
    self.run = np.where(low, self.run + 1, np.where(high, 0, self.run))
    self.reported &= ~high
    new = np.flatnonzero((self.run >= self.steps) & ~self.reported)
    self.reported[new] = True
    return [
      {
        "step": int(global_step),
        "class": int(c),
        "name": self.class_names[c],
        "mean_weight": float(mean[c]),
      }
      for c in new
    ]

  def message(self, hit: dict[str, Any]) -> str:
    return (
      f"class {hit['class']} ({hit['name']}) has had a mean weight below "
      f"{self.threshold:g} for {self.steps} steps (now {hit['mean_weight']:.3g} at step "
      f"{hit['step']}): lam < 0 is giving it up. Switch lam on later, from a stable "
      f"point (stage2_epoch), or use a larger |lam|."
    )


def diverged_message(config: Any, epoch: int, why: str, checkpointer: Any) -> str:
  """What a run that diverged is told: why, what to lower or raise, and where its last
  healthy checkpoint is."""
  w = config.weighting
  msg = f"training diverged in epoch {epoch}: {why}. Lower lr (now {config.optim.lr}) or " + (
    f"lower kl_budget (now {w.kl_budget})." if w.kl_budget > 0 else f"raise |lam| (now {w.lam})."
  )
  if checkpointer is not None and checkpointer.best_epoch() is not None:
    msg += (
      f" The last healthy checkpoint is epoch {checkpointer.latest_healthy_epoch()}"
      f" (the best, kept apart from the rolling ones: epoch "
      f"{checkpointer.best_epoch()}) in {checkpointer.directory}; this epoch "
      f"was not saved, and a resume starts from the last healthy one."
    )
  return msg


def resumed_message(start: int, epochs: int, folders: Sequence[Any]) -> str:
  """The line of a run that resumed: from which checkpoint, and whether it is finished."""
  where = ", ".join(str(f.path / "checkpoints") for f in folders)
  if start >= epochs:
    return (
      f"resumed from epoch {start - 1} (its checkpoint in {where}): the run is finished, "
      f"trained to epochs={epochs}; nothing left to train (--new-run starts it again)"
    )
  return (
    f"resumed from epoch {start - 1} (its checkpoint in {where}); training on from epoch {start}"
  )


def blow_up(
  record: dict[str, Any],
  history: Sequence[dict[str, Any]],
  step_losses: Sequence[float] = (),
  first_step: int = 0,
  class_names: Sequence[str] = (),
) -> dict[str, Any] | None:
  """What blew up in epoch ``record`` given the epochs before it, or None if nothing did.

  Returns ``{"epoch", "step", "what": [...]}``: the epoch, the step where a loss spike began
  (the first of ``step_losses``, the epoch's per-step mean losses, above the threshold; the
  epoch's first step otherwise) and one phrase per finding. The loop reports an episode
  once: the epochs after one that blew up are the same episode until one is clear again.

  Examples:
    >>> calm = [{"train_loss": 2.0, "test_acc": 0.3}] + [{"train_loss": 0.2, "test_acc": 0.65}] * 2
    >>> event = blow_up({"epoch": 3, "train_loss": 3.6, "test_acc": 0.1}, calm, [0.2, 3, 4], 30)
    >>> event["epoch"], event["step"]  # the spike began at the epoch's second step
    (3, 31)
    >>> for what in event["what"]: print(what)
    the training loss rose to 3.6, 18 times the best of the last 3 epochs (0.2)
    test accuracy fell to 0.1 from 0.65
    >>> blow_up({"epoch": 3, "train_loss": 0.25, "test_acc": 0.6}, calm) is None
    True
  """
  what, step = [], first_step
  recent = [r["train_loss"] for r in history[-SPIKE_WINDOW:] if _finite(r.get("train_loss"))]
  loss = record.get("train_loss")
  scale = history[0].get("train_loss") if history else None
  if (
    recent
    and _finite(loss)
    and _finite(scale)
    and min(recent) > 0
    and loss > SPIKE_FACTOR * min(recent)
    and loss - min(recent) > SPIKE_RISE * scale
  ):
    best = min(recent)
    high = [j for j, x in enumerate(step_losses) if x > SPIKE_FACTOR * best]
    step = first_step + (high[0] if high else 0)
    what.append(
      f"the training loss rose to {loss:.3g}, {loss / best:.3g} times the best of the last "
      f"{len(recent)} epochs ({best:.3g})"
    )
  for split in ("val", "test"):
    label = "validation" if split == "val" else "test"
    key = (
      f"{split}_balanced_acc" if _finite(record.get(f"{split}_balanced_acc")) else f"{split}_acc"
    )
    acc = record.get(key)
    earlier = [r[key] for r in history if _finite(r.get(key))]
    if _finite(acc) and earlier:
      best = max(earlier)
      if acc < ACC_COLLAPSE * best and best - acc >= ACC_DROP:
        name = f"{label} balanced accuracy" if key.endswith("balanced_acc") else f"{label} accuracy"
        what.append(f"{name} fell to {acc:.3g} from {best:.3g}")
    lost = _lost_classes(record, history, split, class_names)
    if lost:
      what.append(
        f"{label} accuracy of {lost} has been 0 for {LOST_EVALS} evaluations after it was learnt"
      )
  if not what:
    return None
  return {"epoch": record.get("epoch"), "step": step, "what": what}


def _lost_classes(record, history, split, class_names) -> str:
  """The classes at 0 in this and the LOST_EVALS - 1 evaluations of ``split`` before it,
  having reached LEARNT before those."""
  key = f"{split}_class_acc"
  evals = [r[key] for r in history if r.get(key)]
  if not record.get(key) or len(evals) < LOST_EVALS:
    return ""
  cut = len(evals) - (LOST_EVALS - 1)
  recent, before = [*evals[cut:], record[key]], evals[:cut]
  lost = []
  for c in range(len(record[key])):
    at_zero = all(c < len(e) and e[c] == 0.0 for e in recent)
    learnt = any(c < len(e) and _finite(e[c]) and e[c] >= LEARNT for e in before)
    if at_zero and learnt:
      lost.append(f"class {c}" + (f" ({class_names[c]})" if c < len(class_names) else ""))
  return ", ".join(lost)


def _finite(x: Any) -> bool:
  return x is not None and math.isfinite(x)


def blow_up_message(config: Any, event: dict[str, Any]) -> str:
  """The warning for a blow-up: where it began, what was seen, and the likely cause."""
  w = config.weighting
  if config.method in ("absgd", "abadam", "eg") and w.kl_budget <= 0 and w.lam > 0:
    cause = (
      f"with lam > 0 (lam={w.lam:g}) the weights pile onto a few hard samples; Section 3.6 "
      f"switches them on from a trained model: a later stage2_epoch (now {w.stage2_epoch}) or "
      "a larger lam"
    )
  elif config.method in ("absgd", "abadam", "eg") and w.lam < 0:
    cause = "with lam < 0 the weights can give classes up: a later stage2_epoch or a larger |lam|"
  else:
    cause = f"a lower lr (now {config.optim.lr})"
  return (
    f"epoch {event['epoch']} blew up from step {event['step']}: {'; '.join(event['what'])}. "
    f"Likely cause and fix: {cause}."
  )
