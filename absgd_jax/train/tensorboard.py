"""TensorBoard event files of a run: every metric of its ``metrics.jsonl``, one step per epoch.

A run folder's ``tensorboard/`` holds them (:class:`EventLog`), so ``tensorboard --logdir
runs/`` shows each run, and each member of a sweep, as a run of its own. They are written with
tensorboardX, which needs no TensorFlow, and imported only here, when a run writes them: a
checkout without it trains on, with one warning saying what to install or how to turn the
logs off (``tensorboard=false``).

What an epoch's record becomes (:func:`scalars`): each number under its key (``train_loss``,
``test_balanced_acc``, ``ess_mean``, ``log_s``, ``lam``, ``kl_mean``, ...) and each per-class
list as one scalar per class (``class_mean_weight/3``, ``test_class_acc/3``); with more than
:data:`MAX_CLASS_SCALARS` classes, where a chart per class would bury the rest, a list is one
histogram over the classes instead (:func:`histograms`). The step is the record's ``epoch``,
counted from 0 as in ``metrics.jsonl``.
"""

from __future__ import annotations

import math
import numbers
import time
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from etils import epath

EVENTS_FOLDER = "tensorboard"
# Up to this many classes (CIFAR-100's 100 included), each class has its own chart.
MAX_CLASS_SCALARS = 100

_MISSING = (
  "tensorboardX is not installed, so this run writes no TensorBoard logs: install it (pip "
  "install tensorboardX, or the kit's extra: pip install 'absgd_jax[train]'), or set "
  "tensorboard=false to turn them off."
)
_warned_missing = False


def _number(x: Any) -> bool:
  return isinstance(x, numbers.Real) and not isinstance(x, bool)


def _per_class(x: Any) -> bool:
  """A list of one number (or None: a class absent from the split) per class."""
  return isinstance(x, (list, tuple)) and bool(x) and all(v is None or _number(v) for v in x)


def scalars(record: dict[str, Any]) -> dict[str, float]:
  """The scalars of an epoch's record, by tag: each number under its key, and each per-class
  list (up to :data:`MAX_CLASS_SCALARS` classes) as ``<key>/<class>``.

  ``epoch`` is the step, not a scalar; flags (``healthy``), text (``health_note``), records
  (``collapsed_classes``) and missing values (None) are left out.

  Examples:
    >>> scalars({"epoch": 3, "train_loss": 0.5, "healthy": True, "health_note": None,
    ...          "class_mean_weight": [0.9, None, 1.2]})
    {'train_loss': 0.5, 'class_mean_weight/0': 0.9, 'class_mean_weight/2': 1.2}
  """
  out = {}
  for key, value in record.items():
    if key == "epoch":
      continue
    if _number(value):
      out[key] = float(value)
    elif _per_class(value) and len(value) <= MAX_CLASS_SCALARS:
      width = len(str(len(value) - 1))  # test_class_acc/07 sorts before test_class_acc/10
      for c, v in enumerate(value):
        if v is not None:
          out[f"{key}/{c:0{width}d}"] = float(v)
  return out


def histograms(record: dict[str, Any]) -> dict[str, np.ndarray]:
  """The per-class lists of more than :data:`MAX_CLASS_SCALARS` classes, by key: the finite
  values, for a histogram over the classes.

  Examples:
    >>> histograms({"class_mean_weight": [1.0] * 101, "test_class_acc": [0.5] * 10})
    {'class_mean_weight': array([1., 1., ..., 1.])}
  """
  out = {}
  for key, value in record.items():
    if _per_class(value) and len(value) > MAX_CLASS_SCALARS:
      finite = np.array([v for v in value if v is not None and math.isfinite(v)], np.float64)
      if finite.size:
        out[key] = finite
  return out


def _tensorboardx() -> Any:
  """tensorboardX's writer and protos, or None (warning once) when it is not installed."""
  global _warned_missing
  try:
    from tensorboardX import summary
    from tensorboardX.event_file_writer import EventsWriter
    from tensorboardX.proto import event_pb2, summary_pb2
  except ImportError:
    if not _warned_missing:
      _warned_missing = True
      warnings.warn(_MISSING, RuntimeWarning, stacklevel=3)
    return None
  return summary, EventsWriter, event_pb2, summary_pb2


class EventLog:
  """A run's event files in ``folder``, kept equal to its history: each epoch once.

  :meth:`write` takes the whole history, as ``metrics.jsonl`` is written. While the history
  grows by the epochs this process trains, only the new epochs are appended (and flushed, so
  that TensorBoard and a crash see every finished epoch). The first write of a process (a
  resumed run, whose history is its checkpoint's), or a history that does not extend what was
  written, replaces the folder's event files with one holding the whole history. That, rather
  than appending and hiding the epochs written twice (TensorBoard's "purge" on restart), keeps
  every epoch on disk exactly once, whichever reader opens the files; epochs trained after the
  checkpoint a run resumed from are gone from them as they are from ``metrics.jsonl``. The cost
  is rewriting the history once per start. A new file starts with a restart marker at its first
  epoch, so a TensorBoard already showing the old file drops what it had loaded from there on.

  Args:
    folder: where the event files go (local, or gs:// with google-cloud-storage installed).
  """

  def __init__(self, folder: str | epath.Path):
    self.folder = epath.Path(folder)
    self._writer: Any = None
    self._epochs: list[int] = []  # The epochs in the open file, in order.

  def write(self, history: Sequence[dict[str, Any]]) -> None:
    """Writes the epochs of ``history`` the event files lack (see the class)."""
    tbx = _tensorboardx()
    if tbx is None or not history:
      return
    summary, events_writer, event_pb2, summary_pb2 = tbx
    epochs = [int(r["epoch"]) for r in history]
    if self._writer is None or epochs[: len(self._epochs)] != self._epochs:
      self._start(events_writer, event_pb2, epochs[0])
    for record in history[len(self._epochs) :]:
      values = [
        summary_pb2.Summary.Value(tag=tag, simple_value=v) for tag, v in scalars(record).items()
      ]
      for key, v in histograms(record).items():
        values.extend(summary.histogram(key, v, bins="auto").value)
      self._writer.write_event(
        event_pb2.Event(
          wall_time=time.time(),
          step=int(record["epoch"]),
          summary=summary_pb2.Summary(value=values),
        )
      )
      self._epochs.append(int(record["epoch"]))
    self._writer.flush()

  def _start(self, events_writer: Any, event_pb2: Any, first_epoch: int) -> None:
    self.close()
    clear(self.folder)
    self.folder.mkdir(parents=True, exist_ok=True)
    self._writer = events_writer(str(self.folder / "events"))
    self._epochs = []
    # A SessionLog START: TensorBoard's loader drops the steps >= first_epoch it read before.
    self._writer.write_event(
      event_pb2.Event(
        wall_time=time.time(),
        step=first_epoch,
        session_log=event_pb2.SessionLog(status=event_pb2.SessionLog.START),
      )
    )

  def close(self) -> None:
    """Closes the open event file (everything written is already flushed)."""
    if self._writer is not None:
      self._writer.close()
      self._writer = None
      self._epochs = []


def clear(folder: str | epath.Path) -> None:
  """Removes the event files in ``folder`` (nothing else there)."""
  folder = epath.Path(folder)
  if folder.exists():
    for path in folder.glob("events.out.tfevents.*"):
      path.unlink()
