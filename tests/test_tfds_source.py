"""The tensorflow-datasets back-end against a real tfds data set, written and read without
TensorFlow. tests/test_data.py covers the same function with a fake tfds."""

import numpy as np
import pytest

tfds = pytest.importorskip("tensorflow_datasets")

from absgd_jax import data  # noqa: E402

CLASSES = ("cat", "dog", "newt")


def _records(n, seed):
  rng = np.random.default_rng(seed)
  return [
    {"image": rng.integers(0, 256, (32, 32, 3), dtype=np.uint8), "label": (i * 7) % 3}
    for i in range(n)
  ]


class AbsgdTinyImages(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """A CIFAR-shaped set of 9 + 4 records. ``Tensor`` images: ``Image`` would need TensorFlow."""

  VERSION = tfds.core.Version("1.0.0")

  def _info(self):
    return tfds.core.DatasetInfo(
      builder=self,
      features=tfds.features.FeaturesDict(
        {
          "image": tfds.features.Tensor(shape=(32, 32, 3), dtype=np.uint8),
          "label": tfds.features.ClassLabel(names=list(CLASSES)),
        }
      ),
    )

  def _split_generators(self, dl_manager):
    del dl_manager
    return {"train": self._generate_examples(9, 0), "test": self._generate_examples(4, 1)}

  def _generate_examples(self, n, seed):
    for i, rec in enumerate(_records(n, seed)):
      yield i, rec


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp("tfds")
  AbsgdTinyImages(data_dir=str(root), file_format="array_record").download_and_prepare()
  return root


def test_a_real_array_record_set_reads_back_through_load_tfds(tiny_dir):
  # The builder is not registered: tfds.data_source finds the prepared files by name alone,
  # as on a machine that received them from elsewhere.
  ds = data.load_tfds("absgd_tiny_images", "train", data_dir=tiny_dir)
  want = _records(9, 0)
  assert ds.images.shape == (9, 32, 32, 3) and ds.images.dtype == np.uint8
  # ArrayRecord keeps no promise about order: match records by content.
  got = {ds.images[i].tobytes(): int(ds.labels[i]) for i in range(len(ds))}
  assert got == {r["image"].tobytes(): r["label"] for r in want}
  assert ds.class_names == CLASSES and ds.num_classes == 3
  assert ds.meta["source"] == "tfds:absgd_tiny_images/train"
  test = data.load_tfds("absgd_tiny_images", "test", data_dir=tiny_dir)
  assert len(test) == 4 and test.class_counts().tolist() == [2, 1, 1]


def test_split_slicing(tiny_dir):
  ds = data.load_tfds("absgd_tiny_images", "train[:4]", data_dir=tiny_dir)
  full = data.load_tfds("absgd_tiny_images", "train", data_dir=tiny_dir)
  assert len(ds) == 4
  rows = {full.images[i].tobytes(): int(full.labels[i]) for i in range(len(full))}
  assert all(rows[ds.images[i].tobytes()] == int(ds.labels[i]) for i in range(4))


def test_missing_prepared_data_fails_at_once_with_the_hint(tmp_path):
  # Without the early check tfds said the data was "already prepared ... in the TFRECORD
  # format", which it was not.
  with pytest.raises(
    FileNotFoundError,
    match=rf"(?s)no prepared 'cifar10' under {tmp_path}.*"
    "--file_format=array_record",
  ):
    data.load_tfds("cifar10", "train", data_dir=tmp_path)
