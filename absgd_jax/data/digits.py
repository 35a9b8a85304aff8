"""scikit-learn's 8x8 handwritten digits: the embedded data set of the demo and the tests.

It ships inside scikit-learn (1,797 images, 10 classes of 174 to 183 images each), so it needs
no network and no download. The train/test split is stratified and seeded, so the same seed
always gives the same split on any machine.
"""

from __future__ import annotations

import math

import numpy as np

from absgd_jax.data.dataset import ArrayDataset

DIGITS_CLASSES: tuple[str, ...] = tuple(str(d) for d in range(10))


def stratified_split(
  labels: np.ndarray, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
  """Sorted ``(train_idx, test_idx)`` with ``round(test_fraction * n_c)`` of each class in test.

  Examples:
    >>> tr, te = stratified_split(np.repeat([0, 1], 10), 0.3, seed=0)
    >>> len(tr), len(te)
    (14, 6)
  """
  if not 0.0 < test_fraction < 1.0:
    raise ValueError(f"test_fraction must lie in (0, 1); got {test_fraction}.")
  labels = np.asarray(labels)
  rng = np.random.default_rng(seed)
  test = []
  for c in np.unique(labels):
    members = np.flatnonzero(labels == c)
    n_test = int(math.floor(test_fraction * members.size + 0.5))
    test.append(rng.choice(members, size=n_test, replace=False))
  test_idx = np.sort(np.concatenate(test))
  train_idx = np.setdiff1d(np.arange(labels.size), test_idx)
  return train_idx, test_idx


def load_digits(
  *, test_fraction: float = 0.25, seed: int = 0, flatten: bool = False
) -> tuple[ArrayDataset, ArrayDataset]:
  """The digits data set, split into a training and a test set.

  Args:
    test_fraction: the share of every class that goes to the test set.
    seed: the seed of the split.
    flatten: ``True`` gives ``[N, 64]`` images (for an MLP), ``False`` ``[N, 8, 8, 1]``.

  Returns:
    ``(train, test)`` :class:`ArrayDataset` s; images ``float32`` in ``[0, 1]`` (the raw pixels
    are 0..16), labels ``int32`` 0..9, class names ``"0"`` .. ``"9"``.

  Examples:
    >>> train, test = load_digits()
    >>> train.images.shape, train.images.dtype, len(test)
    ((1346, 8, 8, 1), dtype('float32'), 451)
  """
  from sklearn import datasets  # Imported here: scikit-learn is part of the training extra.

  raw = datasets.load_digits()
  images = (raw.images / 16.0).astype(np.float32)
  images = images.reshape(len(images), -1) if flatten else images[..., None]
  labels = raw.target.astype(np.int32)
  train_idx, test_idx = stratified_split(labels, test_fraction, seed)
  meta = {"source": "sklearn.datasets.load_digits", "seed": seed, "test_fraction": test_fraction}
  make = lambda idx, split: ArrayDataset(
    images[idx], labels[idx], 10, DIGITS_CLASSES, {**meta, "split": split}
  )
  return make(train_idx, "train"), make(test_idx, "test")
