"""The command line as a new user meets it: every setting discoverable, settings from a file,
and messages that say what is true (what a preset scaled, what a sweep saved, what was
rebuilt, what a data set ignores)."""

import json
import os
import types

import pytest

from absgd_jax.train import cli, errors, make_config
from absgd_jax.train.config import Config

BASE = ["--config", "digits-lt", "--no-plots", "--no-progress"]


def _run(capsys, *argv):
  code = cli.main(list(argv))
  out = capsys.readouterr()
  return code, out.out, out.err


def test_settings_lists_every_key_by_section_with_its_help(capsys):
  code, out, _ = _run(capsys, "--settings")
  assert code == 0
  for key, path in Config.settings().items():
    line = next(ln for ln in out.splitlines() if ln.strip().split(" ")[0].rstrip(":") == key)
    if len(path) > 1:
      assert f"({'.'.join(path)})" in line, key
    assert Config.declared(key).metadata["help"] in out, key
  assert "[optim]" in out and "lr (optim.lr): float = 0.1; > 0" in out
  assert "focal_gamma (loss.focal.gamma)" in out
  assert "--settings lists every setting" in " ".join(cli._parser().format_help().split())


def test_several_settings_after_one_set_and_by_section_path(tmp_path):
  args, config = cli.parse(
    ["--config", "digits-lt", "--set", "epochs=2", "optim.lr=0.05", "--set", "lam=2"]
  )
  assert config.schedule.epochs == 2 and config.optim.lr == 0.05 and config.weighting.lam == 2


def test_an_unknown_key_says_what_was_meant(capsys):
  with pytest.raises(SystemExit):
    cli.parse(["--config", "digits-lt", "--set", "lerning_rate=0.1", "ephocs=3"])
  err = capsys.readouterr().err
  assert err.startswith("error: unknown setting") and "Did you mean" in err


def test_lam_nan_asks_for_a_number(capsys):
  with pytest.raises(SystemExit):
    cli.parse([*BASE, "--set", "lam=nan"])
  assert "lam=nan is not a number: give lam a number" in capsys.readouterr().err


def test_a_preset_scaled_with_epochs_says_so_and_a_refusal_names_the_scaled_value(capsys):
  cli.parse(["--config", "cifar10-lt", "--set", "epochs=20"])
  note = capsys.readouterr().out
  assert "epochs=20 scaled the preset's schedule: " in note
  assert "stage2_epoch 160 -> 16" in note and "lr_decay_epochs 160,180 -> 16,18" in note
  with pytest.raises(SystemExit):
    cli.parse(["--config", "cifar10-lt", "--set", "epochs=1"])
  err = capsys.readouterr().err
  assert "stage2_epoch=1 is the preset's 160 scaled with epochs=1" in err


def test_config_takes_a_saved_config_json_and_a_toml_file(tmp_path, capsys):
  out = tmp_path / "run"
  assert cli.main([*BASE, "--set", "epochs=1", "checkpoint=false", "--out", str(out)]) == 0
  _, again = cli.parse(["--config", str(out / "config.json")])
  assert (
    again.flat() == make_config("digits-lt", epochs=1, checkpoint=False, out_dir=str(out)).flat()
  )
  toml = tmp_path / "mine.toml"
  toml.write_text(
    'preset = "digits-st"\nepochs = 3\n[optim]\nlr = 0.05\n[loss.focal]\ngamma = 2.0\n'
  )
  _, cfg = cli.parse(["--config", str(toml), "--set", "loss=focal"])
  assert cfg.run.preset == "digits-st" and cfg.schedule.epochs == 3
  assert cfg.optim.lr == 0.05 and cfg.loss.focal.gamma == 2.0 and cfg.loss.name == "focal"
  bad = tmp_path / "bad.json"
  bad.write_text("{not json")
  with pytest.raises(SystemExit):
    cli.parse(["--config", str(bad)])
  assert f"{bad} does not read as settings" in capsys.readouterr().err


def test_a_setting_the_data_set_does_not_read_is_named(recwarn):
  make_config("digits-lt", data_dir="/data/cifar", crop_size=32)
  said = sorted(str(w.message) for w in recwarn if "is not used by dataset" in str(w.message))
  assert said == [
    "crop_size=32 is not used by dataset='digits': it is ignored.",
    "data_dir='/data/cifar' is not used by dataset='digits': it is ignored.",
  ]


def test_a_finished_run_says_so_and_writes_nothing(tmp_path, capsys):
  # Nothing written means a finished run in a read-only folder answers the same.
  out = tmp_path / "run"
  assert cli.main([*BASE, "--set", "epochs=2", "--out", str(out)]) == 0
  capsys.readouterr()

  def snapshot():
    return {
      os.path.relpath(os.path.join(d, f), out): os.stat(os.path.join(d, f)).st_mtime_ns
      for d, _, files in os.walk(out)
      for f in files
    }

  before = snapshot()
  code, stdout, _ = _run(capsys, *BASE, "--set", "epochs=2", "--out", str(out))
  assert code == 0 and "the run is finished, trained to epochs=2" in stdout
  assert snapshot() == before


def test_a_metrics_file_that_does_not_read_is_rebuilt_and_says_so(tmp_path, recwarn):
  out = tmp_path / "run"
  argv = [*BASE, "--set", "epochs=2", "--out", str(out)]
  assert cli.main(argv) == 0
  good = (out / "metrics.jsonl").read_text()
  (out / "metrics.jsonl").write_bytes(os.urandom(300))
  # On to 3 epochs with the 2-epoch run's schedule (the preset's would move with epochs).
  longer = ["epochs=3", "drw_epoch=1", "lr_decay_epochs=1"]
  assert cli.main([*BASE, "--set", *longer, "--out", str(out)]) == 0
  said = [str(w.message) for w in recwarn if "metrics.jsonl did not match" in str(w.message)]
  assert len(said) == 1 and "rebuilt from the checkpoint of epoch 1" in said[0]
  lines = (out / "metrics.jsonl").read_text().splitlines()
  assert [json.loads(ln)["epoch"] for ln in lines] == [0, 1, 2]
  assert lines[:2] == good.splitlines()


def test_a_sweeps_interrupt_names_the_members_checkpoints(tmp_path):
  runs = {}
  for label, last in (("lam=1", 14), ("lam=2", 13)):
    folder = tmp_path / label / "checkpoints" / str(last)
    folder.mkdir(parents=True)
    runs[label] = types.SimpleNamespace(
      label=label,
      config=types.SimpleNamespace(run=types.SimpleNamespace(out_dir=str(tmp_path / label))),
    )
  trainer = types.SimpleNamespace(members=list(runs.values()), folders=[], position=(14, 5))
  config = make_config("digits-lt", out_dir=str(tmp_path))
  line = cli._interrupted(config, trainer)
  assert line == (
    "interrupted at epoch 14, step 5; the members' last checkpoints: lam=1 epoch 14, lam=2 "
    "epoch 13; rerun the same command to resume"
  )
  assert errors.last_checkpoint(str(tmp_path)) is None  # the sweep's own folder has none
