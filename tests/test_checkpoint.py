"""Checkpoints under failure: the good checkpoint survives a blow-up, and a checkpoint that
does not read falls back to the one before it with a warning (or fails with a hint)."""

import os
import pathlib

import jax.numpy as jnp
import numpy as np
import pytest

from absgd_jax.train.checkpoint import CheckpointError, Checkpointer, find_run_checkpoints


def _state(epoch):
  return {"w": jnp.full((3,), float(epoch)), "opt": {"count": jnp.asarray(epoch, jnp.int32)}}


def _corrupt(step_dir: pathlib.Path):
  """Overwrites every array data file of a checkpoint with garbage, as a cut-short copy."""
  hit = 0
  for path in (step_dir / "state").rglob("*"):
    if path.is_file() and path.parent.name == "d":
      path.write_bytes(b"\x00garbage" * 7)
      hit += 1
  assert hit, "no data file found to corrupt"


def test_best_checkpoint_survives_a_blow_up(tmp_path):
  # 4 good epochs (accuracy up to 0.60), then epochs that blew up: with max_to_keep=2 a
  # rotation by age alone deletes the good one and leaves only diverged checkpoints.
  ckpt = Checkpointer(str(tmp_path), keep=2)
  accs = [0.30, 0.50, 0.60, 0.55]
  for epoch, acc in enumerate(accs):
    ckpt.save(epoch, _state(epoch), {"epoch": epoch}, healthy=True, metric=acc)
  for epoch in range(4, 9):  # Loss 1e16, accuracy 0.10: the loop marks them unhealthy.
    ckpt.save(epoch, _state(epoch), {"epoch": epoch}, healthy=False, metric=0.10)
  best = int(np.argmax(accs))
  assert ckpt.best_epoch() == best
  assert ckpt.all_epochs() == [best, 7, 8]  # The newest 2, and the best apart from them.
  state, meta = ckpt.restore(_state(0), epoch=ckpt.best_epoch())
  assert meta["epoch"] == best
  np.testing.assert_array_equal(state["w"], np.full(3, float(best)))
  # A new process (a resume) sees the same record and keeps protecting it.
  again = Checkpointer(str(tmp_path), keep=2)
  again.save(9, _state(9), {"epoch": 9}, healthy=False)
  assert again.best_epoch() == best and best in again.all_epochs()


def test_without_a_metric_the_last_healthy_checkpoint_is_kept(tmp_path):
  ckpt = Checkpointer(str(tmp_path), keep=1)
  for epoch in range(3):
    ckpt.save(epoch, _state(epoch), {"epoch": epoch}, healthy=True)
  for epoch in range(3, 6):
    ckpt.save(epoch, _state(epoch), {"epoch": epoch}, healthy=False)
  assert ckpt.best_epoch() == 2
  assert ckpt.all_epochs() == [2, 5]


def test_a_metric_beats_no_metric_and_unhealthy_never_counts(tmp_path):
  ckpt = Checkpointer(str(tmp_path), keep=1)
  ckpt.save(0, _state(0), {}, healthy=True, metric=0.4)
  ckpt.save(1, _state(1), {}, healthy=True)  # Not evaluated (eval_every > 1).
  ckpt.save(2, _state(2), {}, healthy=False, metric=0.9)  # Unhealthy: its metric is moot.
  ckpt.save(3, _state(3), {}, healthy=True, metric=float("nan"))
  assert ckpt.best_epoch() == 0
  assert 0 in ckpt.all_epochs() and 3 in ckpt.all_epochs()
  only_bad = Checkpointer(str(tmp_path / "bad"), keep=1)
  only_bad.save(0, _state(0), {}, healthy=False)
  assert only_bad.best_epoch() is None


def test_corrupt_latest_checkpoint_falls_back_with_a_warning_naming_both(tmp_path):
  # A corrupt checkpoint must give a fall-back and a warning, not a TensorStore dump.
  ckpt = Checkpointer(str(tmp_path), keep=3)
  for epoch in range(3):
    ckpt.save(epoch, _state(epoch), {"epoch": epoch})
  _corrupt(tmp_path / "2")
  fresh = Checkpointer(str(tmp_path), keep=3)
  with pytest.warns(
    UserWarning,
    match=r"checkpoint .*/2 does not read .*falling back to the "
    r"previous one, epoch 1",
  ):
    state, meta = fresh.restore(_state(0))
  assert meta["epoch"] == 1
  np.testing.assert_array_equal(state["w"], np.full(3, 1.0))
  assert int(state["opt"]["count"]) == 1


def test_no_readable_checkpoint_fails_with_a_short_hint(tmp_path):
  ckpt = Checkpointer(str(tmp_path), keep=2)
  for epoch in range(2):
    ckpt.save(epoch, _state(epoch), {"epoch": epoch})
  for epoch in range(2):
    _corrupt(tmp_path / str(epoch))
  fresh = Checkpointer(str(tmp_path), keep=2)
  with pytest.warns(UserWarning), pytest.raises(CheckpointError) as e:
    fresh.restore(_state(0))
  msg = str(e.value)
  assert "tried epochs [1, 0]" in msg and "corrupt" in msg and "--new-run" in msg
  assert len(msg) < 1200 and "\n" not in msg  # A hint, not a TensorStore dump.
  with pytest.raises(CheckpointError, match=r"/0 does not read"):
    fresh.restore(_state(0), epoch=0)


def test_find_run_checkpoints_resolves_a_preset_folder(tmp_path):
  # Stage 2's init_from names runs/<stage-1 preset>; the run sits one folder below it.
  run = tmp_path / "imagenet-lt-stage1" / "sgd-0123abcd"
  (run / "checkpoints").mkdir(parents=True)
  assert find_run_checkpoints(str(run)) == str(run / "checkpoints")
  assert find_run_checkpoints(str(tmp_path / "imagenet-lt-stage1")) == str(run / "checkpoints")
  (tmp_path / "imagenet-lt-stage1" / "sgd-4567cdef" / "checkpoints").mkdir(parents=True)
  with pytest.raises(FileNotFoundError, match="holds 2 runs .*sgd-0123abcd, sgd-4567cdef"):
    find_run_checkpoints(str(tmp_path / "imagenet-lt-stage1"))
  with pytest.raises(FileNotFoundError, match="has no checkpoints"):
    find_run_checkpoints(str(tmp_path / "nothing"))
  assert os.path.isdir(run)


def test_resume_passes_over_diverged_checkpoints_and_saves_past_them(tmp_path):
  ckpt = Checkpointer(str(tmp_path), keep=2)
  for epoch in range(3):
    ckpt.save(epoch, _state(epoch), {"epoch": epoch}, healthy=True)
  for epoch in (3, 4):
    ckpt.save(epoch, _state(epoch), {"epoch": epoch}, healthy=False)
  fresh = Checkpointer(str(tmp_path), keep=2)
  with pytest.warns(
    UserWarning,
    match=r"checkpoints \[3, 4\] .* diverged; resuming from the "
    r"last healthy one, epoch 2",
  ):
    state, meta = fresh.restore(_state(0))
  assert meta["epoch"] == 2 and float(state["w"][0]) == 2.0
  # The run goes on from epoch 3: the diverged 3 and 4 make way (orbax would otherwise skip a
  # save behind its latest step, silently).
  fresh.save(3, _state(30), {"epoch": 3}, healthy=True)
  assert fresh.latest_epoch() == 3
  assert float(fresh.restore(_state(0))[0]["w"][0]) == 30.0
  only_bad = Checkpointer(str(tmp_path / "bad"), keep=2)
  only_bad.save(0, _state(0), {}, healthy=False)
  with pytest.raises(CheckpointError, match="saved after the run diverged: none is worth"):
    only_bad.restore(_state(0))


def test_delete_all_empties_the_folder_for_a_new_run(tmp_path):
  ckpt = Checkpointer(str(tmp_path), keep=2)
  for epoch in range(3):
    ckpt.save(epoch, _state(epoch), {"epoch": epoch}, metric=0.1 * epoch)
  ckpt.delete_all()
  assert ckpt.all_epochs() == [] and ckpt.latest_epoch() is None
  ckpt.save(0, _state(5), {"epoch": 0})
  assert float(Checkpointer(str(tmp_path)).restore(_state(0))[0]["w"][0]) == 5.0
