"""Synthetic label noise: symmetric and asymmetric (class-dependent) flips, as in the paper's
Section 5, which follows the SCE paper (Wang et al., 2019; the paper's ref. 50).

Both kinds are decided per class from the clean label, and the number of flips in a class
``c`` with ``n_c`` examples is exactly ``round(rate * n_c)`` (halves round up), so the realised
noise rate of every class is the requested one to within half a sample. Each function returns
the noisy labels and the boolean mask of the samples that were flipped (a flipped sample's
label always differs from its clean one).

Asymmetric mappings (clean class -> noisy class; classes not listed never flip):

* :data:`CIFAR10_ASYM`: truck -> automobile, bird -> airplane, deer -> horse, cat <-> dog.
  Cat and dog are each flipped at ``rate`` from their own clean labels, so the swap happens at
  the stated rate in both directions.
* :func:`cifar100_asym_mapping`: every class flips to the next class of its super-class
  (fine labels of a super-class in increasing order, the last one wrapping to the first), so
  the mapping is a permutation made of 20 cycles of length 5.
* :data:`DIGITS_ASYM`: 2 -> 7, 3 -> 8, 5 <-> 6, 7 -> 1, the visually confusable pairs of the
  MNIST asymmetric-noise setting (Patrini et al., 2017; also used by the SCE paper), applied to
  scikit-learn's 8x8 digits.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from absgd_jax.data.cifar import CIFAR100_COARSE
from absgd_jax.data.dataset import check_labels

# Clean label -> noisy label. CIFAR-10 order: airplane 0, automobile 1, bird 2, cat 3, deer 4,
# dog 5, frog 6, horse 7, ship 8, truck 9.
CIFAR10_ASYM: dict[int, int] = {9: 1, 2: 0, 4: 7, 3: 5, 5: 3}
DIGITS_ASYM: dict[int, int] = {2: 7, 3: 8, 5: 6, 6: 5, 7: 1}


def cifar100_asym_mapping() -> np.ndarray:
  """CIFAR-100's asymmetric noise: each fine class flips to the next one of its super-class.

  Returns:
    ``int64 [100]``, ``mapping[c]`` = the noisy label of clean class ``c``; a permutation with
    ``coarse(mapping[c]) == coarse(c)`` and no fixed point.

  Examples:
    >>> m = cifar100_asym_mapping()
    >>> m[[4, 30, 55, 72, 95]].tolist()  # aquatic mammals: beaver, dolphin, otter, seal, whale
    [30, 55, 72, 95, 4]
  """
  coarse = np.asarray(CIFAR100_COARSE)
  mapping = np.empty(len(coarse), dtype=np.int64)
  for sc in range(int(coarse.max()) + 1):
    members = np.flatnonzero(coarse == sc)  # Increasing fine labels.
    mapping[members] = np.roll(members, -1)
  return mapping


def _check_rate(rate: float) -> float:
  rate = float(rate)
  if not (math.isfinite(rate) and 0.0 <= rate < 1.0):
    raise ValueError(f"the noise rate must lie in [0, 1); got rate = {rate}.")
  return rate


def _num_flips(rate: float, n: int) -> int:
  # Round half up (Python's round() rounds half to even): the closest count to rate * n.
  return int(math.floor(rate * n + 0.5))


def symmetric_noise(
  labels: np.ndarray | Sequence[int], rate: float, num_classes: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
  """Flips a fraction ``rate`` of every class to another class chosen uniformly.

  In each class ``c``, ``round(rate * n_c)`` samples chosen uniformly without replacement get
  a label drawn uniformly from the ``C - 1`` other classes (never ``c`` itself, so every
  flipped label is wrong).

  Args:
    labels: ``[N]`` clean labels in ``[0, C)``.
    rate: the noise rate, in ``[0, 1)``.
    num_classes: ``C >= 2``.
    seed: seed of ``np.random.default_rng``.

  Returns:
    ``(noisy_labels int32 [N], flipped bool [N])``.

  Raises:
    ValueError: for a rate outside ``[0, 1)``, ``C < 2`` or a label outside ``[0, C)``.

  Examples:
    >>> import numpy as np
    >>> clean = np.repeat(np.arange(4), 10)
    >>> noisy, flipped = symmetric_noise(clean, 0.2, 4, seed=0)
    >>> int(flipped.sum()), bool(np.all(noisy[flipped] != clean[flipped]))
    (8, True)
  """
  rate = _check_rate(rate)
  num_classes = int(num_classes)
  if num_classes < 2:
    raise ValueError(f"symmetric noise needs num_classes >= 2; got {num_classes}.")
  clean = check_labels(labels, num_classes)
  noisy = clean.copy()
  flipped = np.zeros(clean.shape, dtype=bool)
  rng = np.random.default_rng(seed)
  for c in range(num_classes):
    members = np.flatnonzero(clean == c)
    idx = rng.choice(members, size=_num_flips(rate, members.size), replace=False)
    # Uniform over the other C - 1 classes: draw from [0, C - 1) and skip over c.
    other = rng.integers(0, num_classes - 1, size=idx.size)
    noisy[idx] = other + (other >= c)
    flipped[idx] = True
  return noisy, flipped


def _mapping_array(
  mapping: Mapping[int, int] | Sequence[int] | np.ndarray, num_classes: int | None
) -> np.ndarray:
  """The mapping as an array ``target[c]`` (identity for the classes that never flip)."""
  if isinstance(mapping, Mapping):
    keys = [int(k) for k in mapping]
    values = [int(v) for v in mapping.values()]
    if num_classes is None:
      num_classes = max(keys + values) + 1
    target = np.arange(int(num_classes), dtype=np.int64)
    for k, v in zip(keys, values):
      for what, x in (("source", k), ("target", v)):
        if not 0 <= x < num_classes:
          raise ValueError(f"mapping {what} class {x} ({k} -> {v}) is outside [0, {num_classes}).")
      target[k] = v
    return target
  target = np.asarray(mapping)
  if target.ndim != 1:
    raise ValueError(f"an array mapping must be 1-D; got shape {target.shape}.")
  if num_classes is not None and len(target) != int(num_classes):
    raise ValueError(f"the mapping has {len(target)} entries for num_classes = {num_classes}.")
  return check_labels(target, len(target), name="mapping").astype(np.int64)


def asymmetric_noise(
  labels: np.ndarray | Sequence[int],
  rate: float,
  mapping: Mapping[int, int] | Sequence[int] | np.ndarray,
  seed: int,
  *,
  num_classes: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
  """Flips a fraction ``rate`` of each mapped class ``c`` to ``mapping[c]``.

  The decision is made from the clean label alone: in every class ``c`` with
  ``mapping[c] != c``, ``round(rate * n_c)`` samples chosen uniformly without replacement get
  label ``mapping[c]``; the other classes keep their labels. A swap such as cat <-> dog
  therefore happens at ``rate`` in both directions.

  Args:
    labels: ``[N]`` clean labels.
    rate: the noise rate, in ``[0, 1)``.
    mapping: ``{clean: noisy}`` (e.g. :data:`CIFAR10_ASYM`), or an array ``[C]`` of targets
      where ``mapping[c] == c`` means class ``c`` never flips (e.g.
      :func:`cifar100_asym_mapping`).
    seed: seed of ``np.random.default_rng``.
    num_classes: ``C``; by default the length of an array mapping, or one more than the
      largest class a dict mapping names. Give it to check the labels against the true ``C``.

  Returns:
    ``(noisy_labels int32 [N], flipped bool [N])``.

  Raises:
    ValueError: for a rate outside ``[0, 1)``, or a label or mapping entry outside ``[0, C)``.

  Examples:
    >>> import numpy as np
    >>> clean = np.repeat(np.arange(10), 10)
    >>> noisy, flipped = asymmetric_noise(clean, 0.4, CIFAR10_ASYM, seed=0)
    >>> np.bincount(clean[flipped], minlength=10).tolist()  # 4 of each of 2, 3, 4, 5, 9
    [0, 0, 4, 4, 4, 4, 0, 0, 0, 4]
    >>> sorted(set(zip(clean[flipped].tolist(), noisy[flipped].tolist())))
    [(2, 0), (3, 5), (4, 7), (5, 3), (9, 1)]
  """
  rate = _check_rate(rate)
  target = _mapping_array(mapping, num_classes)
  clean = check_labels(labels, len(target))
  noisy = clean.copy()
  flipped = np.zeros(clean.shape, dtype=bool)
  rng = np.random.default_rng(seed)
  for c in range(len(target)):
    if target[c] == c:
      continue
    members = np.flatnonzero(clean == c)
    idx = rng.choice(members, size=_num_flips(rate, members.size), replace=False)
    noisy[idx] = target[c]
    flipped[idx] = True
  return noisy, flipped
