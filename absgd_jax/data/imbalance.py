"""Imbalanced (long-tailed or step) subsets of a balanced training set (Section 4 of the paper).

The imbalance ratio ``rho`` is the size of the largest class over that of the smallest. Class 0
is the head and class ``C - 1`` the tail, as in the LDAM code the paper follows (its ref. 49):

* ``"exp"`` (long-tailed, LT): ``n_c = int(n_max * (1 / rho) ** (c / (C - 1)))``, an
  exponential decay from ``n_max`` to ``n_max / rho``.
* ``"step"`` (ST): the first ``C - C // 2`` classes keep ``n_max``, the last ``C // 2`` get
  ``int(n_max / rho)``. (With an odd ``C`` the majority has the extra class.)

Only the training set is made imbalanced; the test set stays as it is (balanced).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

from absgd_jax.data.dataset import ArrayDataset, check_labels

PROFILES = ("exp", "step")


def imbalanced_counts(n_max: int, num_classes: int, rho: float, profile: str = "exp") -> np.ndarray:
  """The per-class sample counts of an imbalanced training set.

  Args:
    n_max: the size of the head class (5000 for CIFAR-10, 500 for CIFAR-100).
    num_classes: ``C >= 2``.
    rho: the imbalance ratio ``n_max / n_min``, ``>= 1`` (1 gives a balanced set).
    profile: ``"exp"`` (long-tailed) or ``"step"``.

  Returns:
    ``int64 [C]`` counts, non-increasing, ``counts[0] == n_max``.

  Raises:
    ValueError: for ``rho < 1`` (or not finite), an unknown profile, ``n_max < 1``, ``C < 2``,
      or a profile that leaves a class with zero samples (the message names the class).

  Examples:
    >>> imbalanced_counts(5000, 10, 100).tolist()
    [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
    >>> imbalanced_counts(5000, 10, 10, "step").tolist()
    [5000, 5000, 5000, 5000, 5000, 500, 500, 500, 500, 500]
  """
  rho = float(rho)
  if not (math.isfinite(rho) and rho >= 1.0):
    raise ValueError(f"the imbalance ratio rho must be a finite number >= 1; got rho = {rho}.")
  if profile not in PROFILES:
    raise ValueError(f"profile must be one of {PROFILES}; got {profile!r}.")
  n_max, num_classes = int(n_max), int(num_classes)
  if n_max < 1:
    raise ValueError(f"n_max must be >= 1; got {n_max}.")
  if num_classes < 2:
    raise ValueError(f"num_classes must be >= 2; got {num_classes}.")
  if profile == "exp":
    # The reference formula, factor ** (c / (C - 1)) with factor = 1 / rho; written this way
    # (not rho ** -x) so that int() truncates exactly as the published counts do.
    factor = 1.0 / rho
    counts = [int(n_max * factor ** (c / (num_classes - 1.0))) for c in range(num_classes)]
  else:
    num_minor = num_classes // 2
    counts = [n_max] * (num_classes - num_minor) + [int(n_max / rho)] * num_minor
  counts = np.asarray(counts, dtype=np.int64)
  empty = np.flatnonzero(counts == 0)
  if empty.size:
    raise ValueError(
      f"profile {profile!r} with n_max = {n_max} and rho = {rho:g} leaves class "
      f"{int(empty[0])} with zero samples ({empty.size} empty class(es) in all; "
      f"n_max / rho = {n_max / rho:g} < 1); raise n_max or lower rho."
    )
  return counts


def imbalanced_subset(
  labels: np.ndarray | Sequence[int], counts: np.ndarray | Sequence[int], seed: int
) -> np.ndarray:
  """Indices of a subset with ``counts[c]`` examples of each class ``c``, drawn with a seed.

  Each class's examples are drawn uniformly without replacement, classes in order, from one
  ``np.random.default_rng(seed)``, so the same labels, counts and seed give the same subset.

  Args:
    labels: ``[N]`` integer labels in ``[0, len(counts))``.
    counts: ``[C]`` the number of examples to keep per class (``0`` drops a class).
    seed: the seed of the draw.

  Returns:
    ``int64 [sum(counts)]`` indices into ``labels``, sorted increasingly.

  Raises:
    ValueError: for a label outside ``[0, C)``, a negative count, or a count larger than what
      the class has (the message names the class and both numbers).

  Examples:
    >>> labels = [0, 1, 0, 1, 0, 1]
    >>> idx = imbalanced_subset(labels, [3, 1], seed=0)
    >>> len(idx), [labels[i] for i in idx].count(1)
    (4, 1)
  """
  counts = np.asarray(counts, dtype=np.int64)
  if counts.ndim != 1:
    raise ValueError(f"counts must be 1-D; got shape {counts.shape}.")
  labels = check_labels(labels, len(counts))
  rng = np.random.default_rng(seed)
  chosen = []
  for c, n_c in enumerate(counts):
    members = np.flatnonzero(labels == c)
    if n_c < 0:
      raise ValueError(f"counts[{c}] = {n_c} is negative.")
    if n_c > members.size:
      raise ValueError(
        f"counts[{c}] = {n_c} is more than the {members.size} examples class {c} has."
      )
    chosen.append(rng.choice(members, size=int(n_c), replace=False))
  return np.sort(np.concatenate(chosen)).astype(np.int64)


def make_imbalanced(
  dataset: ArrayDataset,
  rho: float,
  *,
  profile: str = "exp",
  seed: int = 0,
  n_max: int | None = None,
) -> ArrayDataset:
  """An imbalanced training subset of a (balanced) data set, e.g. CIFAR-10-LT.

  Args:
    dataset: the training set; the test set should be left untouched.
    rho: the imbalance ratio (``>= 1``).
    profile: ``"exp"`` or ``"step"``.
    seed: the seed of the draw.
    n_max: the head-class size; by default the size of the smallest class, so that every
      class can supply its count (5000 on CIFAR-10).

  Returns:
    The subset, with ``meta["imbalance"]`` recording profile, rho, seed and the counts.

  Examples:
    >>> import numpy as np
    >>> ds = ArrayDataset(np.zeros((40, 1)), np.repeat(np.arange(4), 10), 4, "abcd")
    >>> make_imbalanced(ds, 10, seed=1).class_counts().tolist()
    [10, 4, 2, 1]
  """
  if n_max is None:
    n_max = int(dataset.class_counts().min())
  counts = imbalanced_counts(n_max, dataset.num_classes, rho, profile)
  sub = dataset.subset(imbalanced_subset(dataset.labels, counts, seed))
  meta = dict(dataset.meta)
  meta["imbalance"] = {
    "profile": profile,
    "rho": float(rho),
    "seed": seed,
    "counts": counts.tolist(),
  }
  return dataclasses.replace(sub, meta=meta)
