"""An in-memory data set of images and integer labels, and the label check every source uses."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def check_labels(labels: Any, num_classes: int, *, name: str = "labels") -> np.ndarray:
  """Checks that ``labels`` is a 1-D array of integers in ``[0, num_classes)``.

  Args:
    labels: anything ``np.asarray`` turns into a 1-D integer array. Floats with integral values
      (as some loaders produce) are accepted; fractional ones are not.
    num_classes: the number of classes ``C`` (at least 1).
    name: how the error messages call the array.

  Returns:
    The labels as an ``int32`` NumPy array (a new array; the input is never modified).

  Raises:
    ValueError: naming the first offending value and its position, for a label outside
      ``[0, C)``, a fractional label, or an array that is not 1-D.

  Examples:
    >>> check_labels([0, 2, 1], 3)
    array([0, 2, 1], dtype=int32)
    >>> check_labels([0, 3], 3)
    Traceback (most recent call last):
    ...
    ValueError: labels[1] = 3 is outside [0, 3) ...
  """
  num_classes = int(num_classes)
  if num_classes < 1:
    raise ValueError(f"num_classes must be >= 1; got {num_classes}.")
  arr = np.asarray(labels)
  if arr.ndim != 1:
    raise ValueError(f"{name} must be a 1-D array; got shape {arr.shape}.")
  if arr.dtype == bool or not (
    np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)
  ):
    raise ValueError(f"{name} must hold integers; got dtype {arr.dtype}.")
  if np.issubdtype(arr.dtype, np.floating):
    fractional = ~np.isfinite(arr) | (arr != np.round(arr))
    if fractional.any():
      i = int(np.argmax(fractional))
      raise ValueError(f"{name}[{i}] = {arr[i].item()!r} is not an integer class label.")
  bad = (arr < 0) | (arr >= num_classes)
  if bad.any():
    i = int(np.argmax(bad))
    value = arr[i].item()
    raise ValueError(
      f"{name}[{i}] = {value:g} is outside [0, {num_classes}) "
      f"({int(bad.sum())} such labels in all)."
    )
  return arr.astype(np.int32)


class LabelledRows:
  """What every data set here shares: labelled rows that can be counted, subset and relabelled.

  A subclass is a frozen dataclass with ``labels`` and ``num_classes`` and names its per-row
  fields in ``ROW_FIELDS``; imbalance, label noise and the splits use only these methods.
  """

  ROW_FIELDS: tuple[str, ...] = ("labels",)

  def __len__(self) -> int:
    return len(self.labels)

  def class_counts(self) -> np.ndarray:
    """The number of examples of each class, ``[C]``."""
    return np.bincount(self.labels, minlength=self.num_classes)

  def subset(self, indices: Sequence[int] | np.ndarray):
    """The examples at ``indices``, in that order (copies of the arrays)."""
    idx = np.asarray(indices, dtype=np.int64)
    return dataclasses.replace(self, **{f: getattr(self, f)[idx] for f in self.ROW_FIELDS})

  def with_labels(self, labels: np.ndarray):
    """The same examples with other labels (e.g. noisy ones), checked against ``num_classes``."""
    return dataclasses.replace(self, labels=labels)


@dataclasses.dataclass(frozen=True)
class ArrayDataset(LabelledRows):
  """Images and labels held as NumPy arrays, with the class names.

  Attributes:
    images: ``[N, ...]``; ``uint8 [N, H, W, 3]`` for image folders and tensorflow-datasets,
      ``float32 [N, 8, 8, 1]`` in [0, 1] (or ``[N, 64]``) for digits.
    labels: ``int32 [N]`` in ``[0, num_classes)`` (checked on construction).
    num_classes: ``C``. Classes may be absent from a subset; ``C`` stays that of the source.
    class_names: ``C`` names, index = label.
    meta: free-form facts about where the arrays came from (cache file, decode time...).

  Examples:
    >>> import numpy as np
    >>> ds = ArrayDataset(np.zeros((4, 2, 2, 1), np.float32), np.array([0, 1, 1, 0]), 2, ("a", "b"))
    >>> len(ds), ds.class_counts()
    (4, array([2, 2]))
    >>> ds.subset([1, 2]).labels
    array([1, 1], dtype=int32)
  """

  images: np.ndarray
  labels: np.ndarray
  num_classes: int
  class_names: tuple[str, ...]
  meta: Mapping[str, Any] = dataclasses.field(default_factory=dict, compare=False)
  ROW_FIELDS = ("images", "labels")

  def __post_init__(self):
    labels = check_labels(self.labels, self.num_classes)
    if len(self.images) != len(labels):
      raise ValueError(f"images and labels differ in length: {len(self.images)} != {len(labels)}.")
    names = tuple(str(n) for n in self.class_names)
    if len(names) != self.num_classes:
      raise ValueError(
        f"class_names has {len(names)} entries for num_classes = {self.num_classes}."
      )
    # Frozen dataclass: normalise the fields through object.__setattr__.
    object.__setattr__(self, "labels", labels)
    object.__setattr__(self, "class_names", names)
    object.__setattr__(self, "num_classes", int(self.num_classes))
