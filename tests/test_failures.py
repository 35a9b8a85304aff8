"""What the command line does when a run meets a problem: one line and exit status 2 for the
user's errors, one line and 130 for Ctrl-C, a full disk that loses nothing, ``--new-run`` in any
folder, settings that cannot work refused before any data, and the console's lines.

Most cases run ``cli.main`` in this process (its stderr captured); the ones about a real
process (a signal, the libraries' output at exit) launch ``python -m absgd_jax.train``.
"""

import errno
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile

import numpy as np
import pytest
from PIL import Image

from absgd_jax.train import cli, errors, make_config
from absgd_jax.train.checks import kl_budget
from processes import ROOT, child_env

# digits-lt, short and without decays or DRW inside these few epochs, so that a run given more
# epochs keeps its schedule; no plots (matplotlib's time is not what these tests are about).
BASE = [
  "--config",
  "digits-lt",
  "--no-plots",
  "--no-progress",
  "--set",
  "lr_decay_epochs=",
  "--set",
  "drw_epoch=160",
]


def _main(capsys, *args):
  """``cli.main`` on BASE + args: (exit status, stdout, stderr)."""
  code = cli.main([*BASE, *args])
  out, err = capsys.readouterr()
  return code, out, err


def _one_error_line(err: str) -> str:
  lines = [ln for ln in err.splitlines() if ln.strip()]
  assert len(lines) == 1 and lines[0].startswith("error: "), err[-3000:]
  return lines[0]


def _process(*args, **kw):
  return subprocess.Popen(
    [sys.executable, "-m", "absgd_jax.train", *BASE, *args],
    env=child_env(),
    cwd=ROOT,
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
    **kw,
  )


def _metrics(out_dir):
  with open(os.path.join(out_dir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


# -------------------------------------------------------------- one line for the user's errors


def _jpeg(path, value, size=8):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(np.full((size, size, 3), value, np.uint8)).save(path, quality=90)


def _image_list(root, name="train.txt", per_class=8):
  lines = []
  for c in range(2):
    for i in range(per_class):
      rel = f"c{c}/{name[:-4]}_{i}.jpg"
      _jpeg(os.path.join(root, rel), 60 + 120 * c + i)
      lines.append(f"{rel} {c}")
  with open(os.path.join(root, name), "w") as f:
    f.write("\n".join(lines) + "\n")


LIST = [
  "--set",
  "dataset=image-list",
  "--set",
  "classes=2",
  "--set",
  "train_list=train.txt",
  "--set",
  "test_list=test.txt",
  "--set",
  "crop_size=8",
  "--set",
  "resize_size=8",
  "--set",
  "data_workers=0",
  "--set",
  "batch_size=8",
  "--set",
  "epochs=1",
  "--set",
  "model=mlp",
  "--set",
  "imbalance=none",
]


@pytest.fixture
def lists(tmp_path):
  root = tmp_path / "data"
  _image_list(str(root), "train.txt")
  _image_list(str(root), "test.txt", per_class=2)
  return root


def _cifar_zips(root, bad=None):
  from absgd_jax.data.cifar import CIFAR10_CLASSES

  os.makedirs(root, exist_ok=True)
  for split in ("train", "test"):
    with zipfile.ZipFile(os.path.join(root, f"{split}.zip"), "w") as z:
      for c, name in enumerate(CIFAR10_CLASSES):
        path = os.path.join(root, "img.jpg")
        _jpeg(path, 20 * c, size=32)
        blob = open(path, "rb").read()
        if bad == (split, c):
          blob = blob[: len(blob) // 3]  # A truncated JPEG.
        z.writestr(f"{name}/0.jpg", blob)


@pytest.mark.parametrize(
  "case", ["batch", "data_dir", "list", "image", "label", "jpeg", "zip_jpeg"]
)
def test_the_users_data_errors_are_one_line_naming_what_to_change(case, tmp_path, lists, capsys):
  out = ["--out", str(tmp_path / "run")]
  args = [*LIST, "--set", f"data_dir={lists}"]
  if case == "batch":  # 360 images are left of digits after imbalance.
    args, want = ["--set", "batch_size=361"], "choose batch_size <= 360"
  elif case == "data_dir":
    args, want = [*LIST, "--set", f"data_dir={tmp_path / 'nowhere'}"], "set data_dir"
  elif case == "list":
    os.remove(lists / "test.txt")
    want = "test.txt not found: set data_dir"
  elif case == "image":
    os.remove(lists / "c1" / "train_2.jpg")
    want = "train_2.jpg"
  elif case == "label":
    with open(lists / "train.txt", "a") as f:
      f.write("c0/train_0.jpg 7\n")
    want = "label 7"
  elif case == "jpeg":  # Streamed: decoded in the middle of the epoch.
    path = lists / "c0" / "train_1.jpg"
    path.write_bytes(path.read_bytes()[:100])
    want = "train_1.jpg"
  else:  # An in-memory zip of class folders, decoded while the data load.
    _cifar_zips(str(tmp_path / "cifar"), bad=("train", 3))
    args = [
      "--set",
      "dataset=cifar10",
      "--set",
      f"data_dir={tmp_path / 'cifar'}",
      "--set",
      "imbalance=none",
      "--set",
      "batch_size=8",
      "--set",
      "epochs=1",
    ]
    want = "cannot decode image 'cat/0.jpg'"
  code, _, err = _main(capsys, *args, *out)
  line = _one_error_line(err)
  assert code == 2 and want in line, line


def _read_only_folder(tmp_path) -> str:
  """A folder this process may not write in: a locked one, or (as root, who ignores the lock)
  /sys, which the system keeps read-only."""
  locked = tmp_path / "locked"
  locked.mkdir()
  locked.chmod(0o500)
  try:
    (locked / "probe").write_text("")
  except PermissionError:
    return str(locked / "run")
  try:
    os.mkdir("/sys/absgd-probe")
  except OSError:
    return "/sys/absgd-run"
  os.rmdir("/sys/absgd-probe")
  pytest.skip("no folder here refuses writes")


def test_a_read_only_out_is_one_line_and_debug_shows_the_traceback(tmp_path, capsys, monkeypatch):
  folder = _read_only_folder(tmp_path)
  code, _, err = _main(capsys, "--set", "epochs=1", "--out", folder)
  line = _one_error_line(err)
  assert code == 2 and "choose a folder you may write to (--out" in line, line
  monkeypatch.setenv(errors.DEBUG_ENV, "1")
  with pytest.raises(PermissionError):
    cli.main([*BASE, "--set", "epochs=1", "--out", folder])
  monkeypatch.delenv(errors.DEBUG_ENV)
  with pytest.raises(PermissionError):
    cli.main([*BASE, "--debug", "--set", "epochs=1", "--out", folder])


def test_an_unexpected_error_keeps_its_traceback(tmp_path, monkeypatch):
  # A bug is not the user's to fix: it must not be shortened to a line.
  from absgd_jax.train import trainer

  def broken(*args, **kwargs):
    raise KeyError("a bug")

  monkeypatch.setattr(trainer.Trainer, "evaluate", broken)
  with pytest.raises(KeyError, match="a bug"):
    cli.main(
      [*BASE, "--set", "epochs=1", "--set", "checkpoint=false", "--out", str(tmp_path / "run")]
    )


def test_user_input_keeps_the_value_error_contract():
  with pytest.raises(ValueError) as e:
    with errors.user_input():
      raise ValueError("x.txt:3: bad")
  assert isinstance(e.value, errors.UserError) and str(e.value) == "x.txt:3: bad"
  with pytest.raises(KeyError):  # Only ValueError (and ImportError) change.
    with errors.user_input():
      raise KeyError("k")


# ------------------------------------------------------------------- Ctrl-C and a full disk


def test_ctrl_c_is_one_line_and_the_rerun_resumes_exactly(tmp_path):
  out, straight = str(tmp_path / "run"), str(tmp_path / "straight")
  # Batches of 8 make an epoch about 8 steps long per 64 images, so that on an idle machine the
  # run is still training when the signal comes (at batch 64 all 40 epochs could finish
  # between the first checkpoint and the signal).
  settings = ("--set", "epochs=40", "--set", "batch_size=8")
  args = (*settings, "--out", out)
  # The uninterrupted run, in a process of its own as the interrupted one (a process's device
  # count can move the last bits).
  reference = _process(*settings, "--out", straight)
  # A shell's background job (`cmd &`) starts with SIGINT ignored, and a child inherits that:
  # the run gets SIGINT as a terminal's Ctrl-C finds it.
  p = _process(*args, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
  deadline, ckpts = time.time() + 240, os.path.join(out, "checkpoints")

  def saved():  # A numbered folder appears only once orbax has finished it. Any epoch's will
    # do: on a loaded machine this loop can wake after epoch 0's has rotated away.
    return os.path.isdir(ckpts) and any(name.isdigit() for name in os.listdir(ckpts))

  while not saved() and p.poll() is None and time.time() < deadline:
    time.sleep(0.05)
  late = os.path.exists(os.path.join(out, "summary.json"))  # The run had finished training.
  p.send_signal(signal.SIGINT)
  _, err = p.communicate(timeout=120)
  assert not late, "the run finished before this process could interrupt it"
  assert p.returncode == 130, (
    f"exit {p.returncode} after a signal sent while training: {err[-3000:]}"
  )
  lines = [ln for ln in err.splitlines() if ln.strip()]
  assert len(lines) == 1, err[-3000:]
  import re

  m = re.fullmatch(
    r"interrupted at epoch (\d+), step (\d+); the last checkpoint is epoch (\d+); "
    r"rerun the same command to resume",
    lines[0],
  )
  assert m, lines[0]
  stopped, last = int(m.group(1)), int(m.group(3))
  assert last == errors.last_checkpoint(out) and last <= stopped < 40
  again = _process(*args)
  rerun_out, err = again.communicate(timeout=300)
  assert again.returncode == 0, err[-3000:]
  assert f"resumed from epoch {last}" in rerun_out
  _, err = reference.communicate(timeout=300)
  assert reference.returncode == 0, err[-3000:]
  resumed = _metrics(out)
  assert [r["epoch"] for r in resumed] == list(range(40))
  for a, b in zip(resumed, _metrics(straight)):
    assert a["train_loss"] == b["train_loss"] and a["test_acc"] == b["test_acc"], a["epoch"]


@pytest.mark.parametrize("where", ["checkpoint", "metrics"])
def test_a_full_disk_stops_with_one_line_and_loses_nothing(where, tmp_path, capsys, monkeypatch):
  import orbax.checkpoint as ocp
  from etils import epath

  out = str(tmp_path / "run")
  full = OSError(errno.ENOSPC, "No space left on device", out + "/somefile")
  if where == "checkpoint":
    save = ocp.CheckpointManager.save

    def failing_save(self, step, *a, **k):
      if step == 2:
        raise full
      return save(self, step, *a, **k)

    monkeypatch.setattr(ocp.CheckpointManager, "save", failing_save)
  else:
    path_type = type(epath.Path(out))
    write = path_type.write_text
    calls = []

    def failing_write(self, text, *a, **k):
      if self.name == "metrics.jsonl.tmp":
        calls.append(1)
        if len(calls) == 3:
          raise full
      return write(self, text, *a, **k)

    monkeypatch.setattr(path_type, "write_text", failing_write)
  code, _, err = _main(capsys, "--set", "epochs=4", "--out", out)
  line = _one_error_line(err)
  assert code == 2 and f"no space left on the disk holding {out}" in line, line
  assert "the last checkpoint is epoch 1" in line and "rerun the same command" in line, line
  assert [r["epoch"] for r in _metrics(out)] == [0, 1, 2][: 3 if where == "checkpoint" else 2]
  monkeypatch.undo()
  code, stdout, _ = _main(capsys, "--set", "epochs=4", "--out", out)
  assert code == 0 and "resumed from epoch 1" in stdout
  straight = tmp_path / "straight"
  assert _main(capsys, "--set", "epochs=4", "--out", str(straight))[0] == 0
  assert [(r["train_loss"], r["test_acc"]) for r in _metrics(out)] == [
    (r["train_loss"], r["test_acc"]) for r in _metrics(straight)
  ]


def test_left_over_temporary_checkpoints_are_cleaned_on_the_next_start(tmp_path, capsys):
  out = tmp_path / "run"
  assert _main(capsys, "--set", "epochs=1", "--out", str(out))[0] == 0
  tmp = out / "checkpoints" / "1.orbax-checkpoint-tmp-1712345678"
  (tmp / "state").mkdir(parents=True)  # What a save killed half-way leaves.
  code, stdout, _ = _main(capsys, "--set", "epochs=2", "--out", str(out))
  assert code == 0 and "resumed from epoch 0" in stdout
  assert not tmp.exists()
  assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["0", "1"]


# --------------------------------------------------------------- --new-run, damaged folders


@pytest.fixture(scope="module")
def two_epochs(tmp_path_factory):
  """A finished 2-epoch run's folder (checkpoints 0 and 1), copied by the tests that damage it."""
  out = tmp_path_factory.mktemp("two") / "run"
  assert cli.main([*BASE, "--set", "epochs=2", "--out", str(out)]) == 0
  return out


def _copy(src, tmp_path):
  shutil.copytree(src, tmp_path / "run")
  return tmp_path / "run"


@pytest.mark.parametrize(
  "damage", ["config", "checkpoint_metrics", "metrics_file", "checkpoint_state"]
)
def test_new_run_starts_afresh_in_any_state_and_says_what_it_removed(
  damage, two_epochs, tmp_path, capsys
):
  out = _copy(two_epochs, tmp_path)
  if damage == "config":
    (out / "config.json").write_text("{bad")
  elif damage == "checkpoint_metrics":
    for epoch in ("0", "1"):
      (out / "checkpoints" / epoch / "metrics" / "metrics").write_text("garbage")
  elif damage == "metrics_file":
    (out / "metrics.jsonl").write_text('{"epoch": 0, "train_lo')
  else:
    for path in (out / "checkpoints").rglob("*"):
      if path.is_file() and "state" in path.parts:
        path.write_bytes(b"\x00garbage")
  (out / "notes.txt").write_text("mine")  # Not the run's: kept.
  code, stdout, err = _main(capsys, "--set", "epochs=2", "--out", str(out), "--new-run")
  assert code == 0, err
  assert (
    f"new run in {out}: removed config.json, metrics.jsonl, summary.json, checkpoints/, "
    "tensorboard/"
  ) in stdout
  assert "resumed" not in stdout and "epoch 0: loss" in stdout
  assert [r["epoch"] for r in _metrics(out)] == [0, 1]
  assert (out / "notes.txt").read_text() == "mine"
  # Without --new-run, the damaged config.json is one line that says to use it.
  if damage == "config":
    (out / "config.json").write_text("{bad")
    code, _, err = _main(capsys, "--set", "epochs=2", "--out", str(out))
    assert code == 2 and "pass --new-run" in _one_error_line(err)


@pytest.mark.parametrize("process", [0, 1])
def test_new_run_on_many_hosts_clears_on_process_0_before_any_host_reads(
  process, two_epochs, tmp_path, monkeypatch
):
  # Every host waits at one barrier after process 0 has cleared the folder, so that no host
  # can read the old config.json or restore the old checkpoints first.
  from absgd_jax.train import run_folder

  out = _copy(two_epochs, tmp_path)
  seen = []
  monkeypatch.setattr(run_folder.jax, "process_count", lambda: 2)
  monkeypatch.setattr(run_folder.jax, "process_index", lambda: process)
  monkeypatch.setattr(
    run_folder.multihost_utils,
    "sync_global_devices",
    lambda name: seen.append(((out / "checkpoints").exists(), (out / "config.json").exists())),
  )
  removed = run_folder.clear_on_every_host([str(out)])
  if process == 0:  # Cleared before the barrier.
    assert seen == [(False, False)] and removed == [
      ["config.json", "metrics.jsonl", "summary.json", "checkpoints/", "tensorboard/"]
    ]
  else:  # Another host removes nothing itself.
    assert seen == [(True, True)] and removed == [[]]


def test_a_damaged_metrics_record_is_passed_over_like_an_unreadable_checkpoint(
  two_epochs, tmp_path, capsys
):
  out = _copy(two_epochs, tmp_path)
  (out / "checkpoints" / "1" / "metrics" / "metrics").write_text("garbage")
  with pytest.warns(UserWarning) as caught:  # (The CLI's one-line form: the next test.)
    code, stdout, err = _main(capsys, "--set", "epochs=3", "--out", str(out))
  assert code == 0, err
  (message,) = [str(w.message) for w in caught if "does not read" in str(w.message)]
  assert "\n" not in message and "checkpoints/1 does not read" in message
  assert "metrics record" in message and "JSONDecodeError" in message
  assert "falling back to the previous one, epoch 0" in message
  assert "resumed from epoch 0" in stdout
  assert [r["epoch"] for r in _metrics(out)] == [0, 1, 2]


def test_a_corrupt_checkpoint_warns_in_one_clean_line_in_a_real_process(two_epochs, tmp_path):
  # TensorStore's abandoned reads printed a page each, and the warning held its spec.
  out = _copy(two_epochs, tmp_path)
  for path in (out / "checkpoints" / "1" / "state").glob("ocdbt.process_*"):
    shutil.rmtree(path)
  p = _process("--set", "epochs=3", "--out", str(out))
  stdout, err = p.communicate(timeout=300)
  assert p.returncode == 0, err[-3000:]
  lines = [ln for ln in err.splitlines() if ln.strip()]
  assert len(lines) == 1, err[-3000:]
  assert lines[0].startswith("warning: checkpoint ") and "falling back" in lines[0]
  assert "bound method" not in lines[0] and "TensorStore({" not in lines[0]
  assert "resumed from epoch 0" in stdout


# --------------------------------------------------------------- settings that cannot work


def test_a_kl_budget_at_or_above_log_batch_is_refused_before_any_data(monkeypatch, capsys):
  from absgd_jax.train import experiment_data

  def no_data(*a, **k):
    raise AssertionError("data was read")

  monkeypatch.setattr(experiment_data, "build", no_data)
  for budget in (10.0, math.log(64)):
    with pytest.raises(SystemExit) as e:
      cli.main([*BASE, "--set", f"kl_budget={budget}"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert f"kl_budget={budget:g} cannot be met with batch_size=64" in err
    assert "log(64) = 4.159" in err
  with pytest.raises(ValueError, match="cannot be met with batch_size=128"):
    make_config("digits-lt", kl_budget=math.log(128) + 1e-9, batch_size=128)


def test_the_low_ess_warning_follows_the_two_level_bound():
  # The bound: ESS <= B exp(-KL), met by weights uniform on B exp(-KL) of the B samples.
  B = 100
  for m in (10, 40):
    p = np.r_[np.full(m, 1.0 / m), np.zeros(B - m)]
    kl = float(np.sum(p[:m] * np.log(B * p[:m])))
    assert np.isclose(1 / np.sum(p**2), B * math.exp(-kl))
  rng = np.random.default_rng(0)
  for _ in range(200):  # Any other weights: below the bound.
    p = rng.dirichlet(np.full(B, rng.uniform(0.05, 3)))
    kl = float(np.sum(p * np.log(B * p)))
    assert 1 / np.sum(p**2) <= B * math.exp(-kl) * (1 + 1e-9)
  # So below a tenth of the batch is certain exactly above log(10).
  with pytest.warns(UserWarning, match=r"effective sample size fall to at most .* = 6\.3 of 64"):
    kl_budget(math.log(10) + 0.01, 64)
  import warnings

  with warnings.catch_warnings():
    warnings.simplefilter("error")
    kl_budget(math.log(10) - 0.01, 64)
    kl_budget(0.01, 64)


def test_a_tfds_set_pointed_at_a_folder_that_is_not_tfds_data_is_refused(
  tmp_path, capsys, monkeypatch
):
  from absgd_jax import data
  from absgd_jax.data import tfds_source

  def no_data(*a, **k):
    raise AssertionError("data was read")

  monkeypatch.setattr(data, "load_tfds", no_data)
  code, _, err = _main(
    capsys,
    "--config",
    "cifar100-lt",
    "--set",
    "epochs=2",
    "--set",
    f"data_dir={tmp_path}",
    "--out",
    str(tmp_path / "run"),
  )
  line = _one_error_line(err)
  assert code == 2 and f"data_dir={tmp_path} is not a TFDS data directory" in line
  assert "no cifar100/ folder" in line and "TFDS_DATA_DIR" in line  # via data_dir= (empty)
  # The loader's advice names TFDS_DATA_DIR only where it is consulted: no data_dir given.
  assert "TFDS_DATA_DIR" not in tfds_source._where_hint("cifar100", str(tmp_path))
  assert "TFDS_DATA_DIR" in tfds_source._where_hint("cifar100", None)
  assert make_config("cifar100-lt").data.data_dir == ""


# ------------------------------------------------------------------------------ the console


def test_no_progress_keeps_the_epoch_and_resumed_lines(tmp_path, capsys):
  out = str(tmp_path / "run")
  code, stdout, err = _main(capsys, "--set", "epochs=1", "--out", out)
  assert code == 0 and "epoch 0: loss" in stdout and "it/s" not in err + stdout
  assert stdout.splitlines()[0] == f"run folder: {out}"
  code, stdout, err = _main(capsys, "--set", "epochs=2", "--out", out)
  assert code == 0 and "resumed from epoch 0" in stdout and "epoch 1: loss" in stdout


def test_a_finished_run_says_so_and_trains_nothing(two_epochs, tmp_path, capsys, monkeypatch):
  out = _copy(two_epochs, tmp_path)
  from absgd_jax.train import trainer

  def no_training(*a, **k):
    raise AssertionError("trained")

  monkeypatch.setattr(trainer.Trainer, "train_epoch", no_training)
  code, stdout, _ = _main(capsys, "--set", "epochs=2", "--out", str(out))
  assert code == 0 and "resumed from epoch 1 (its checkpoint in " in stdout
  assert "the run is finished, trained to epochs=2; nothing left to train" in stdout
  assert "training on" not in stdout


def test_extending_a_runs_epochs_names_epochs_and_what_to_do(tmp_path, capsys):
  out = str(tmp_path / "run")
  preset = ["--config", "digits-lt", "--no-plots", "--no-progress"]  # Its schedule follows.
  assert cli.main([*preset, "--set", "epochs=4", "--out", out]) == 0
  capsys.readouterr()
  assert cli.main([*preset, "--set", "epochs=6", "--out", out]) == 2
  line = _one_error_line(capsys.readouterr().err)
  saved = make_config("digits-lt", epochs=4)
  assert "holds a run of epochs=4; epochs=6 comes with another schedule" in line, line
  keep = (
    f"--set epochs=6 --set drw_epoch={saved.loss.drw_epoch} "
    f"--set lr_decay_epochs={saved.schedule.lr_decay_epochs[0]}"
  )
  assert keep in line, line
  # The advice works: the run goes on to 6 epochs with its schedule.
  code = cli.main([*preset, *keep.split(), "--out", out])
  assert code == 0 and "resumed from epoch 3" in capsys.readouterr().out


def test_the_range_message_reads_right():
  with pytest.raises(ValueError, match=r"gamma must lie in \(0, 1\]\.$"):
    make_config("digits-lt", gamma=1.5)
  with pytest.raises(ValueError, match=r"lr must be > 0\.$"):
    make_config("digits-lt", lr=-1.0)


def test_a_bad_setting_is_one_line_without_the_usage_block(capsys):
  for argv in (
    ["--config", "digits-lt", "--set", "batch_size=100000"],
    ["--config", "digits-lt", "--set", "epochs"],
  ):
    with pytest.raises(SystemExit) as e:
      cli.main(argv)
    assert e.value.code == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and err[0].startswith("error: "), err
  assert "batch_size" not in err[0] and "KEY=VALUE" in err[0]


def test_a_failed_reads_leftovers_are_dropped_and_every_other_unraisable_is_passed_on():
  # The one text the hook matches is asyncio's own, here, on this Python.
  import asyncio
  import types

  loop = asyncio.new_event_loop()
  loop.close()
  with pytest.raises(RuntimeError) as closed:
    loop.call_soon_threadsafe(lambda: None)
  assert type(closed.value) is RuntimeError and str(closed.value) == "Event loop is closed"

  async def read():
    pass

  abandoned = read()
  leftovers = [
    types.SimpleNamespace(exc_value=closed.value, object=None),
    types.SimpleNamespace(exc_value=RuntimeError("never awaited"), object=abandoned),
  ]
  others = [
    types.SimpleNamespace(exc_value=RuntimeError("Event loop is closed"), object=len),
    types.SimpleNamespace(exc_value=RuntimeError("something else"), object=None),
    types.SimpleNamespace(exc_value=ValueError("Event loop is closed"), object=None),
  ]
  passed = []
  hook = errors._DropLeftovers(passed.append)
  for u in leftovers + others:
    hook(u)
  assert passed == others
  abandoned.close()
