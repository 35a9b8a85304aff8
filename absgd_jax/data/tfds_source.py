"""CIFAR-10, CIFAR-100 (or any image-classification set) through ``tfds.data_source``.

``tfds.data_source`` reads the prepared ArrayRecord files directly and needs no TensorFlow.
tensorflow-datasets is an optional extra (``pip install -e ".[tfds]"``) and is imported only
inside :func:`load_tfds`. Nothing is downloaded unless ``download=True``: offline, a missing
data set fails at once with a message saying where the prepared files go, instead of a
minutes-long retry loop. Without tensorflow-datasets, the zip reader
(:func:`absgd_jax.data.load_image_folder`) serves CIFAR-10 from ``shared/data/cifar10-jpeg``.
"""

from __future__ import annotations

import os
import time

import numpy as np

from absgd_jax.data.cifar import CIFAR10_CLASSES, CIFAR100_CLASSES
from absgd_jax.data.dataset import ArrayDataset

TFDS_NAMES: dict[str, tuple[str, ...]] = {"cifar10": CIFAR10_CLASSES, "cifar100": CIFAR100_CLASSES}
_INSTALL_HINT = 'pip install -e ".[tfds]"  (or: pip install tensorflow-datasets)'


def _where_hint(name: str, data_dir: str | None) -> str:
  place = data_dir or os.environ.get("TFDS_DATA_DIR") or "~/tensorflow_datasets"
  # TFDS_DATA_DIR is consulted only when no data_dir is given: advising it otherwise misleads.
  where = (
    "or pass data_dir=... to where they are"
    if data_dir
    else "or pass data_dir=... or set TFDS_DATA_DIR to where they are"
  )
  # data_source reads ArrayRecord files only; tfds's default TFRecord build does not serve.
  return (
    f"Put the prepared {name} files (the '{name}/<version>/' folder written on a machine "
    f"with a network by `tfds build {name} --file_format=array_record`) under {place}, "
    f"{where}; or call load_tfds(..., download=True) with a network."
  )


def load_tfds(
  name: str,
  split: str = "train",
  *,
  data_dir: str | os.PathLike | None = None,
  download: bool = False,
) -> ArrayDataset:
  """CIFAR-10 or CIFAR-100 as ``uint8 [N, 32, 32, 3]`` images and ``int32`` fine labels.

  Another prepared tfds data set with an ``image`` and a ``label`` (``ClassLabel``) feature
  reads the same way: its images must share one shape, and the class names come from its
  ``label`` feature. tfds writes ``Image`` features only with TensorFlow installed;
  ``tfds.features.Tensor`` image features (``uint8 [H, W, C]``) need none.

  Args:
    name: ``"cifar10"``, ``"cifar100"``, or the name of another prepared data set as above.
    split: a tfds split, e.g. ``"train"``, ``"test"`` or ``"train[:10%]"``.
    data_dir: where the prepared data lives; default ``$TFDS_DATA_DIR`` or
      ``~/tensorflow_datasets`` (tfds's own default).
    download: let tfds download and prepare the data if it is missing (needs a network).

  Returns:
    An :class:`ArrayDataset` (CIFAR-100: the 100 fine labels; ``meta["coarse_labels"]`` holds
    the 20 super-class labels).

  Raises:
    ValueError: for a data set whose records have no ``image`` and ``label``, images of
      different shapes, or labels outside its classes.
    ImportError: at once, if tensorflow-datasets is not installed (says how to install it).
    FileNotFoundError: at once, if the prepared data is missing and ``download`` is off (says
      where to put it).

  Examples:
    >>> train = load_tfds("cifar10", "train")  # doctest: +SKIP
    >>> train.images.shape  # doctest: +SKIP
    (50000, 32, 32, 3)
  """
  if not isinstance(name, str) or not name:
    raise ValueError(f"load_tfds needs a tfds data set name such as 'cifar10'; got {name!r}.")
  try:
    import tensorflow_datasets as tfds
  except ImportError as e:
    raise ImportError(
      f"load_tfds({name!r}) needs tensorflow-datasets, which is not installed. Install it "
      f"with: {_INSTALL_HINT}. Then: {_where_hint(name, data_dir)} Without it, "
      "absgd_jax.data.load_image_folder reads CIFAR-10 from a zip of class folders."
    ) from e

  data_dir = None if data_dir is None else os.fspath(data_dir)
  if data_dir is not None and not download and not os.path.isdir(os.path.join(data_dir, name)):
    # Checked here: tfds itself answers a missing folder with a misleading "already prepared
    # ... in the TFRECORD format" when a builder of that name is registered.
    raise FileNotFoundError(
      f"no prepared {name!r} under {data_dir} (there is no folder "
      f"{os.path.join(data_dir, name)}). {_where_hint(name, data_dir)}"
    )
  t0 = time.perf_counter()
  try:
    source = tfds.data_source(name, split=split, data_dir=data_dir, download=download)
  except Exception as e:  # tfds raises AssertionError, DatasetNotFoundError, OSError...
    raise FileNotFoundError(
      f"tensorflow-datasets could not open {name!r} split {split!r}"
      f"{'' if download else ' without downloading'}: {type(e).__name__}: {e}. "
      f"{_where_hint(name, data_dir)}"
    ) from e

  classes = TFDS_NAMES.get(name) or _class_names(source, name)
  n = len(source)
  if n == 0:
    raise ValueError(f"tfds {name!r} split {split!r} holds no records.")
  first = source[0]
  missing = [k for k in ("image", "label") if k not in first]
  if missing:
    raise ValueError(
      f"tfds {name!r} records have no {missing} feature(s) (they have "
      f"{sorted(first)}); load_tfds reads image classification sets only."
    )
  shape = np.shape(first["image"])
  images = np.empty((n, *shape), dtype=np.asarray(first["image"]).dtype)
  labels = np.empty((n,), dtype=np.int64)
  coarse = np.empty((n,), dtype=np.int64) if name == "cifar100" else None
  getitems = getattr(source, "__getitems__", None)
  step = 1024
  for start in range(0, n, step):
    idx = list(range(start, min(start + step, n)))
    # Batched reads when the source offers them (ArrayRecord does); one by one otherwise.
    records = getitems(idx) if getitems is not None else [source[i] for i in idx]
    for i, rec in zip(idx, records):
      if np.shape(rec["image"]) != shape:
        raise ValueError(
          f"tfds {name!r} record {i} has an image of shape "
          f"{np.shape(rec['image'])}, record 0 one of {shape}; load_tfds needs "
          "one shape (resize when preparing the data set)."
        )
      images[i] = rec["image"]
      labels[i] = rec["label"]
      if coarse is not None:
        coarse[i] = rec["coarse_label"]
  meta = {"source": f"tfds:{name}/{split}", "load_seconds": time.perf_counter() - t0}
  if coarse is not None:
    meta["coarse_labels"] = coarse.astype(np.int32)
  return ArrayDataset(images, labels, len(classes), tuple(classes), meta)


def _class_names(source, name: str) -> tuple[str, ...]:
  """The class names of a data set outside TFDS_NAMES, from its ``label`` ClassLabel."""
  info = getattr(source, "dataset_info", None)
  try:
    names = tuple(info.features["label"].names)
  except (AttributeError, KeyError, TypeError) as e:
    raise ValueError(
      f"tfds {name!r}: cannot tell its classes; load_tfds reads data sets whose 'label' "
      "feature is a tfds.features.ClassLabel (with names or num_classes)."
    ) from e
  if not names:
    raise ValueError(f"tfds {name!r}: its 'label' feature lists no classes.")
  return names
