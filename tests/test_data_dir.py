"""No machine's path as a default: where a CIFAR run looks for its data, and what it says when
the data is not there."""

import os

import pytest

from absgd_jax import data
from absgd_jax.train import PRESETS, Config, make_config
from absgd_jax.train import experiment_data


def test_no_preset_defaults_to_a_machine_path():
  assert Config().data.data_dir == ""
  for name in PRESETS:
    assert make_config(name).data.data_dir == "", name


def test_missing_zips_say_where_they_were_looked_for_and_how_to_get_the_data(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  with pytest.raises(FileNotFoundError) as e:
    experiment_data.build(make_config("cifar10-lt"))
  msg = str(e.value)
  assert f"looked for train.zip in the working directory {tmp_path}" in msg
  for hint in (
    "--set data_dir=DIR",
    "train.zip and test.zip",
    "<class>/<NNNN>.jpg",
    "absgd_jax[tfds]",
    "tfds build cifar10 --file_format=array_record",
    "--set source=tfds",
  ):
    assert hint in msg, hint

  where = tmp_path / "copy"
  with pytest.raises(FileNotFoundError, match="looked for " + os.path.join(where, "train.zip")):
    experiment_data.build(make_config("cifar10-lt", data_dir=str(where)))


def test_tfds_without_data_dir_reads_tfds_default_folder(monkeypatch):
  calls = []

  def load_tfds(name, split, *, data_dir):
    calls.append((name, split, data_dir))
    raise FileNotFoundError("stop here")

  monkeypatch.setattr(data, "load_tfds", load_tfds)
  with pytest.raises(FileNotFoundError, match="stop here"):
    experiment_data.build(make_config("cifar10-lt", source="tfds"))
  assert calls == [("cifar10", "train", None)]
