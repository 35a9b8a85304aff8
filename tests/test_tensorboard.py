"""TensorBoard event files, read back with TensorBoard's own readers: every number of
``metrics.jsonl`` per epoch, for a run and for each member of a sweep; each epoch once after a
resume; none with ``tensorboard=false``; and a run that goes on without tensorboardX.
"""

import json
import sys
from collections import Counter

import jax
import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer

from absgd_jax.train import Sweep, Trainer, make_config, run_folder
from absgd_jax.train import tensorboard as tensorboard_lib

ONE = jax.devices()[:1]


def _cfg(out, **kw):
  # No decay and no DRW within these few epochs, so that a resume keeps the schedule.
  base = dict(
    epochs=2,
    checkpoint=False,
    out_dir=str(out),
    batch_size=64,
    lr_decay_epochs=(),
    drw_epoch=160,
  )
  base.update(kw)
  return make_config("digits-lt", **base)


def _metrics(folder):
  return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def _expected(record):
  """The scalars an epoch's record should give, by tag: each number under its key, each
  per-class list as ``<key>/<class>`` (digits has 10 classes: one digit)."""
  out = {}
  for key, value in record.items():
    if key == "epoch" or isinstance(value, bool):
      continue
    if isinstance(value, (int, float)):
      out[key] = value
    elif isinstance(value, list) and value and all(isinstance(v, (int, float)) for v in value):
      out.update({f"{key}/{c}": v for c, v in enumerate(value)})
  return out


def _accumulator(folder):
  acc = EventAccumulator(str(folder), size_guidance={"scalars": 0})
  acc.Reload()
  return acc


def _assert_scalars_are_the_metrics(acc, history):
  """Every tag holds one value per epoch, each the record's (to float32, TensorBoard's)."""
  want = [_expected(r) for r in history]
  assert set(acc.Tags()["scalars"]) == set().union(*want)
  for tag in acc.Tags()["scalars"]:
    events = acc.Scalars(tag)
    got = {e.step: e.value for e in events}
    assert len(got) == len(events), f"{tag}: an epoch twice"
    assert got == {
      r["epoch"]: pytest.approx(w[tag], rel=1e-6, abs=1e-30)
      for r, w in zip(history, want)
      if tag in w
    }, tag


def _steps_on_disk(folder):
  """(tag, step) -> how many times the event files in ``folder`` hold it, read file by file."""
  seen = Counter()
  for path in sorted(folder.glob("events.out.tfevents.*")):
    for event in EventFileLoader(str(path)).Load():
      for value in event.summary.value:
        seen[value.tag, event.step] += 1
  return seen


def test_a_runs_scalars_are_its_metrics_epoch_by_epoch(tmp_path):
  out = tmp_path / "run"
  Trainer(_cfg(out, val_fraction=0.2), progress=False, devices=ONE).fit()
  history = _metrics(out)
  acc = _accumulator(out / "tensorboard")
  _assert_scalars_are_the_metrics(acc, history)
  tags = set(acc.Tags()["scalars"])
  for tag in (
    "train_loss",
    "weighted_loss",
    "train_acc",
    "test_acc",
    "test_balanced_acc",
    "val_balanced_acc",
    "ess_mean",
    "ess_min",
    "kl_mean",
    "max_weight",
    "log_s",
    "lam",
    "class_mean_weight/9",
    "test_class_acc/0",
    "val_class_acc/9",
  ):
    assert tag in tags, tag
  assert [e.step for e in acc.Scalars("test_acc")] == [0, 1]


def test_a_resumed_run_holds_each_epoch_once(tmp_path):
  # Checkpoints at epochs 1 and 3; stopped in epoch 3, after epoch 2's record was written.
  # The resume restarts from epoch 1's checkpoint and trains epoch 2 again: its first
  # record must be gone from the event files, as it is from metrics.jsonl.
  out = tmp_path / "run"
  cfg = _cfg(out, epochs=4, checkpoint=True, checkpoint_every=2)
  cut = Trainer(cfg, progress=False, devices=ONE)
  train_epoch = cut.train_epoch

  def stop_in_epoch_3(epoch):
    if epoch == 3:
      raise KeyboardInterrupt
    return train_epoch(epoch)

  cut.train_epoch = stop_in_epoch_3
  with pytest.raises(KeyboardInterrupt):
    cut.fit()
  events = out / "tensorboard"
  _assert_scalars_are_the_metrics(_accumulator(events), _metrics(out))
  assert {step for _, step in _steps_on_disk(events)} == {0, 1, 2}

  Trainer(cfg, progress=False, devices=ONE).fit()
  history = _metrics(out)
  assert [r["epoch"] for r in history] == [0, 1, 2, 3]
  on_disk = _steps_on_disk(events)
  assert set(on_disk.values()) == {1}  # on disk, not only once TensorBoard has purged
  assert sorted(step for tag, step in on_disk if tag == "train_loss") == [0, 1, 2, 3]
  _assert_scalars_are_the_metrics(_accumulator(events), history)

  # --new-run clears them with the rest of the run.
  assert "tensorboard/" in run_folder.clear(str(out))
  assert not events.exists()


def test_a_sweeps_members_are_runs_of_their_own(tmp_path):
  root = tmp_path / "sweep"
  Sweep(_cfg(root), {"lam": [2, 5]}, progress=False, devices=ONE).fit()
  runs = EventMultiplexer(size_guidance={"scalars": 0}).AddRunsFromDirectory(str(root))
  runs.Reload()
  assert sorted(runs.Runs()) == ["lam=2/tensorboard", "lam=5/tensorboard"]
  for label in ("lam=2", "lam=5"):
    _assert_scalars_are_the_metrics(
      runs.GetAccumulator(f"{label}/tensorboard"), _metrics(root / label)
    )
  lams = {r: runs.Scalars(r, "lam")[-1].value for r in runs.Runs()}
  assert lams == {"lam=2/tensorboard": 2.0, "lam=5/tensorboard": 5.0}


def test_tensorboard_false_writes_no_event_files(tmp_path):
  out = tmp_path / "run"
  Trainer(_cfg(out, epochs=1, tensorboard=False), progress=False, devices=ONE).fit()
  assert [r["epoch"] for r in _metrics(out)] == [0]
  assert not (out / "tensorboard").exists()


def _record(epoch, classes):
  rng = np.random.default_rng(epoch)
  weights = [float(w) for w in rng.uniform(0.5, 2.0, classes)]
  weights[3] = None  # a class the epoch did not see
  return {"epoch": epoch, "train_loss": 1.0 / (epoch + 1), "class_mean_weight": weights}


def test_without_tensorboardx_the_run_goes_on_with_one_warning(tmp_path, monkeypatch):
  monkeypatch.setitem(sys.modules, "tensorboardX", None)  # import tensorboardX fails
  monkeypatch.setattr(tensorboard_lib, "_warned_missing", False)
  folder = run_folder.RunFolder(make_config("digits-lt", out_dir=str(tmp_path)))
  history = []
  with pytest.warns(RuntimeWarning) as caught:
    for epoch in range(3):
      history.append(_record(epoch, 10))
      folder.write_history(history)
  messages = [str(w.message) for w in caught]
  assert len(messages) == 1, messages
  assert "pip install tensorboardX" in messages[0] and "tensorboard=false" in messages[0]
  assert [r["epoch"] for r in _metrics(tmp_path)] == [0, 1, 2]
  assert not (tmp_path / "tensorboard").exists()


def test_more_classes_than_charts_give_a_histogram_over_the_classes(tmp_path):
  classes = tensorboard_lib.MAX_CLASS_SCALARS + 1
  folder = run_folder.RunFolder(make_config("digits-lt", out_dir=str(tmp_path)))
  history = [_record(0, classes), _record(1, classes)]
  folder.write_history(history)
  acc = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"histograms": 0})
  acc.Reload()
  assert acc.Tags()["scalars"] == ["train_loss"]  # no chart per class
  for record, event in zip(history, acc.Histograms("class_mean_weight")):
    seen = [w for w in record["class_mean_weight"] if w is not None]
    h = event.histogram_value
    assert event.step == record["epoch"] and h.num == len(seen) == classes - 1
    assert h.min == pytest.approx(min(seen)) and h.max == pytest.approx(max(seen))
    assert h.sum == pytest.approx(sum(seen))
