"""What the kit knows about each data set, in one table: read by the config, the loader and
the train loop, so that a fact is written once.

Each :class:`DatasetFacts` says how many classes a data set has (and their names where they
are fixed), the per-channel statistics its uint8 images are normalised with, its split lists'
default names, its asymmetric-noise mapping, whether it is streamed from files on disk, and
the size of its full training split (an upper bound that lets a config reject a batch larger
than the data before anything is read).

Examples:
  >>> from absgd_jax.data.facts import facts
  >>> f = facts("cifar10")
  >>> f.num_classes, f.streamed, f.class_names[3]
  (10, False, 'cat')
  >>> facts("imagenet-lt").default_lists
  ('ImageNet_LT_train.txt', 'ImageNet_LT_test.txt')
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from absgd_jax.data.cifar import (
  CIFAR10_CLASSES,
  CIFAR10_MEAN,
  CIFAR10_STD,
  CIFAR100_CLASSES,
  CIFAR100_MEAN,
  CIFAR100_STD,
)
from absgd_jax.data.digits import DIGITS_CLASSES
from absgd_jax.data.imagenet_transforms import IMAGENET_MEAN, IMAGENET_STD
from absgd_jax.data.noise import CIFAR10_ASYM, DIGITS_ASYM, cifar100_asym_mapping

Stats = tuple[float, float, float]


@dataclasses.dataclass(frozen=True)
class DatasetFacts:
  """The fixed facts of one data set.

  Attributes:
    name: the ``dataset`` setting that selects it.
    num_classes: ``C``; 0 where the user says it (``image-list``'s ``classes``).
    class_names: the ``C`` names in label order, or ``()`` where the source gives them.
    mean, std: per-channel statistics of its uint8 images scaled to [0, 1], used to normalise
      them on the accelerator; ``None`` where the images arrive as floats (digits).
    default_lists: ``(train, test)`` split-list names as their publishers ship them, relative
      to ``data_dir`` (streamed data sets only).
    asym_noise: ``() -> mapping`` for ``noise="asym"`` (a ``{clean: noisy}`` dict or an array
      ``[C]``), or ``None`` where the data set has none.
    streamed: whether its images are files read batch by batch rather than held in memory.
    train_size: the number of images of its full training split (0: unknown).
  """

  name: str
  num_classes: int
  class_names: tuple[str, ...] = ()
  mean: Stats | None = None
  std: Stats | None = None
  default_lists: tuple[str, str] = ("", "")
  asym_noise: Callable[[], Mapping[int, int] | Sequence[int] | np.ndarray] | None = None
  streamed: bool = False
  train_size: int = 0

  @property
  def normalisation(self) -> tuple[Stats, Stats] | None:
    """``(mean, std)`` or ``None``."""
    return None if self.mean is None else (self.mean, self.std)


# ImageNet-LT, Places-LT and iNaturalist are fine-tuned from (or compared with) ImageNet
# models, so their images are normalised with ImageNet's statistics, as everyone does.
# Clothing1M's lists are ours (docs/large_scale.md has the joins that make them).
FACTS: dict[str, DatasetFacts] = {
  f.name: f
  for f in (
    # 1,797 images; the default 25 % test split leaves 1,346 to train on.
    DatasetFacts("digits", 10, DIGITS_CLASSES, asym_noise=lambda: DIGITS_ASYM, train_size=1797),
    DatasetFacts(
      "cifar10",
      10,
      CIFAR10_CLASSES,
      CIFAR10_MEAN,
      CIFAR10_STD,
      asym_noise=lambda: CIFAR10_ASYM,
      train_size=50_000,
    ),
    DatasetFacts(
      "cifar100",
      100,
      CIFAR100_CLASSES,
      CIFAR100_MEAN,
      CIFAR100_STD,
      asym_noise=cifar100_asym_mapping,
      train_size=50_000,
    ),
    DatasetFacts(
      "imagenet-lt",
      1000,
      (),
      IMAGENET_MEAN,
      IMAGENET_STD,
      ("ImageNet_LT_train.txt", "ImageNet_LT_test.txt"),
      streamed=True,
      train_size=115_846,
    ),
    DatasetFacts(
      "places-lt",
      365,
      (),
      IMAGENET_MEAN,
      IMAGENET_STD,
      ("Places_LT_train.txt", "Places_LT_test.txt"),
      streamed=True,
      train_size=62_500,
    ),
    DatasetFacts(
      "inat2018",
      8142,
      (),
      IMAGENET_MEAN,
      IMAGENET_STD,
      ("train2018.json", "val2018.json"),
      streamed=True,
      train_size=437_513,
    ),
    DatasetFacts(
      "clothing1m",
      14,
      (),
      IMAGENET_MEAN,
      IMAGENET_STD,
      ("noisy_train.txt", "clean_test.txt"),
      streamed=True,
      train_size=1_000_000,
    ),
    # Any "relative/path label" lists: classes, lists and size come from the user.
    DatasetFacts("image-list", 0, (), IMAGENET_MEAN, IMAGENET_STD, streamed=True),
  )
}


def facts(dataset: str) -> DatasetFacts:
  """The facts of ``dataset``.

  Raises:
    ValueError: for an unknown name, listing the known ones.
  """
  try:
    return FACTS[dataset]
  except KeyError:
    raise ValueError(f"dataset={dataset!r} is not one of {', '.join(FACTS)}.") from None


def check_class_names(found: Sequence[str], dataset: str, where: str) -> None:
  """Checks a source's class names against the data set's, naming what is missing or extra.

  A class folder that is missing or empty shifts every later label by one (labels follow the
  sorted folder names), so this is an error, not a warning.

  Raises:
    ValueError: naming the missing and unexpected classes and ``where`` they were read.
  """
  want = facts(dataset).class_names
  if not want or tuple(found) == tuple(want):
    return
  missing = [c for c in want if c not in found]
  extra = [c for c in found if c not in want]
  if not missing and not extra:
    raise ValueError(
      f"{where}: the class folders of {dataset} sort as {list(found)}, not in "
      f"the label order {list(want)}."
    )
  parts = []
  if missing:
    parts.append(f"no images of class(es) {missing} (a missing or empty class folder)")
  if extra:
    parts.append(f"unexpected class folder(s) {extra}")
  raise ValueError(
    f"{where} has {len(found)} classes; {dataset} needs {len(want)}: " + "; ".join(parts) + "."
  )
