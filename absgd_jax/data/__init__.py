"""Data for imbalanced and noisy-label training: part of the training kit (``absgd_jax[train]``).

The core package never imports this one. Everything here is NumPy on the host except the
augmentation, which is jax.numpy for use inside a jitted train step.

- Sources: :func:`load_digits` (scikit-learn's digits, no network), :func:`load_image_folder`
  (a folder or zip of ``<class>/<image>`` files, decoded once and cached as ``.npy``),
  :func:`load_tfds` (CIFAR-10/100 through tensorflow-datasets, an optional extra). Each gives an
  :class:`ArrayDataset`.
- Downsampling by area averaging: :func:`downsample`.
- Files on disk: :func:`read_split_list` and :func:`read_inat_json` give a
  :class:`FileDataset` (paths + labels), streamed by :mod:`absgd_jax.data.streaming` (grain).
- Imbalance: :func:`imbalanced_counts`, :func:`imbalanced_subset`, :func:`make_imbalanced`.
- Label noise: :func:`symmetric_noise`, :func:`asymmetric_noise` with :data:`CIFAR10_ASYM`,
  :func:`cifar100_asym_mapping` or :data:`DIGITS_ASYM`.
- Facts of each data set (classes, normalisation, default lists, asymmetric noise, whether it
  streams, training-split size), in one table: :data:`FACTS`, :func:`facts`.
- Batching: :func:`epoch_batches` (shuffled or class-balanced, fixed-shape :class:`Batch` es).
- Augmentation: :func:`random_crop_flip`, :func:`normalize`, :func:`augment_cifar`.

Examples:
  >>> from absgd_jax import data
  >>> train, test = data.load_digits(seed=0)
  >>> lt = data.make_imbalanced(train, rho=10, seed=0)
  >>> lt.class_counts().tolist()
  [130, 100, 77, 60, 46, 36, 28, 21, 16, 13]
  >>> noisy, flipped = data.symmetric_noise(lt.labels, 0.2, lt.num_classes, seed=0)
  >>> round(float(flipped.mean()), 2)
  0.2
"""

from __future__ import annotations

from absgd_jax.data.augment import (
  CropFlipParams,
  augment_cifar,
  crop_flip,
  crop_flip_params,
  normalize,
  random_crop_flip,
)
from absgd_jax.data.batching import Batch, epoch_batches, num_batches
from absgd_jax.data.cifar import (
  CIFAR10_CLASSES,
  CIFAR10_MEAN,
  CIFAR10_STD,
  CIFAR100_CLASSES,
  CIFAR100_COARSE,
  CIFAR100_COARSE_CLASSES,
  CIFAR100_MEAN,
  CIFAR100_STD,
)
from absgd_jax.data.dataset import ArrayDataset, check_labels
from absgd_jax.data.digits import DIGITS_CLASSES, load_digits
from absgd_jax.data.facts import FACTS, DatasetFacts, check_class_names, facts
from absgd_jax.data.file_list import FileDataset, read_inat_json, read_split_list
from absgd_jax.data.image_folder import default_cache_dir, load_image_folder
from absgd_jax.data.imbalance import imbalanced_counts, imbalanced_subset, make_imbalanced
from absgd_jax.data.noise import (
  CIFAR10_ASYM,
  DIGITS_ASYM,
  asymmetric_noise,
  cifar100_asym_mapping,
  symmetric_noise,
)
from absgd_jax.data.resize import downsample
from absgd_jax.data.tfds_source import load_tfds

__all__ = [
  "ArrayDataset",
  "FileDataset",
  "Batch",
  "CIFAR100_CLASSES",
  "CIFAR100_COARSE",
  "CIFAR100_COARSE_CLASSES",
  "CIFAR100_MEAN",
  "CIFAR100_STD",
  "CIFAR10_ASYM",
  "CIFAR10_CLASSES",
  "CIFAR10_MEAN",
  "CIFAR10_STD",
  "CropFlipParams",
  "DatasetFacts",
  "FACTS",
  "DIGITS_ASYM",
  "DIGITS_CLASSES",
  "asymmetric_noise",
  "augment_cifar",
  "check_class_names",
  "check_labels",
  "cifar100_asym_mapping",
  "crop_flip",
  "crop_flip_params",
  "default_cache_dir",
  "downsample",
  "epoch_batches",
  "facts",
  "imbalanced_counts",
  "imbalanced_subset",
  "load_digits",
  "load_image_folder",
  "load_tfds",
  "make_imbalanced",
  "normalize",
  "num_batches",
  "random_crop_flip",
  "read_inat_json",
  "read_split_list",
  "symmetric_noise",
]
