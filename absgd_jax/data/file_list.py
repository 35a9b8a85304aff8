"""Data sets that stay on disk: image files named by a split list, read as they are needed.

ImageNet-LT, Places-LT and Clothing1M publish each split as a text file of
``relative/path label`` lines; iNaturalist 2018 publishes COCO-style JSON. Both become a
:class:`FileDataset`: the paths and labels only, a few MB for a million images. The images are
decoded and augmented batch by batch by :mod:`absgd_jax.data.streaming`. The paths are kept
as UTF-8 bytes (one byte per character; NumPy's str arrays take four), about 30 MB for
iNaturalist's 437k paths.

A :class:`FileDataset` has the same ``labels``, ``num_classes``, ``class_counts``, ``subset``
and ``with_labels`` as an in-memory :class:`~absgd_jax.data.ArrayDataset`, so imbalance, label
noise and the validation split work on either.

Examples:
  >>> import os, tempfile
  >>> d = tempfile.mkdtemp()
  >>> with open(os.path.join(d, "train.txt"), "w") as f:
  ...   _ = f.write("n01/a.jpg 0\\nn01/b.jpg 0\\nn02/c.jpg 1\\n")
  >>> ds = read_split_list(os.path.join(d, "train.txt"), root=d)
  >>> len(ds), ds.class_counts().tolist(), ds.path(2)
  (3, [2, 1], 'n02/c.jpg')
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import os
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from absgd_jax.data.dataset import LabelledRows, check_labels


@dataclasses.dataclass(frozen=True)
class FileDataset(LabelledRows):
  """Image files under ``root`` and their labels; the images themselves stay on disk.

  Attributes:
    root: the folder the paths are relative to.
    paths: ``[N]`` relative paths, as UTF-8 bytes (``str`` input is encoded); ``path(i)``
      gives one as ``str``.
    labels: ``int32 [N]`` in ``[0, num_classes)``.
    num_classes: ``C``; classes may be absent from a subset.
    class_names: ``C`` names (``"0"``, ``"1"``, ... when the list gives none).
    meta: free-form facts (the list file, imbalance, ...).
  """

  root: str
  paths: np.ndarray
  labels: np.ndarray
  num_classes: int
  class_names: tuple[str, ...] = ()
  meta: Mapping[str, Any] = dataclasses.field(default_factory=dict, compare=False)
  ROW_FIELDS = ("paths", "labels")

  def __post_init__(self):
    labels = check_labels(self.labels, self.num_classes)
    paths = np.asarray(self.paths)
    if paths.dtype.kind != "S":
      paths = np.char.encode(paths.astype(str), "utf-8")
    if paths.shape != labels.shape:
      raise ValueError(f"paths and labels differ in length: {len(paths)} != {len(labels)}.")
    names = tuple(str(n) for n in self.class_names) or tuple(map(str, range(self.num_classes)))
    if len(names) != self.num_classes:
      raise ValueError(
        f"class_names has {len(names)} entries for num_classes = {self.num_classes}."
      )
    object.__setattr__(self, "labels", labels)
    object.__setattr__(self, "paths", paths)
    object.__setattr__(self, "class_names", names)
    object.__setattr__(self, "num_classes", int(self.num_classes))

  def path(self, i: int) -> str:
    """The ``i``-th relative path."""
    return self.paths[i].decode("utf-8")

  def full_path(self, i: int) -> str:
    return os.path.join(self.root, self.path(i))

  def missing_files(self, limit: int = 5) -> list[str]:
    """Up to ``limit`` paths that do not exist: a cheap check before a long run starts."""
    out = []
    for i in range(len(self)):
      if not os.path.exists(self.full_path(i)):
        out.append(self.full_path(i))
        if len(out) >= limit:
          break
    return out


def _check_files(list_path, root, paths: Sequence[str], where: Sequence[str]) -> None:
  """Stats every listed file; raises naming where the first missing ones are listed.

  One ``stat`` per file (threads, for network file systems) costs seconds for a million
  files: far less than a crash an hour into an epoch.
  """
  full = [os.path.join(root, p) for p in paths]
  with concurrent.futures.ThreadPoolExecutor(16) as pool:
    exists = list(pool.map(os.path.exists, full, chunksize=1024))
  missing = [i for i, ok in enumerate(exists) if not ok]
  if missing:
    shown = "; ".join(f"{where[i]}: {paths[i]}" for i in missing[:5])
    raise FileNotFoundError(
      f"{list_path}: {len(missing)} of {len(paths)} listed files are missing under {root} "
      f"({shown}{'; ...' if len(missing) > 5 else ''}). Is data_dir their root, and is the "
      "copy complete?"
    )


def _warn_absent(list_path, labels: np.ndarray, num_classes: int) -> None:
  absent = np.flatnonzero(np.bincount(labels, minlength=num_classes) == 0)
  if absent.size:
    shown = ", ".join(map(str, absent[:10].tolist())) + (", ..." if absent.size > 10 else "")
    warnings.warn(
      f"{list_path} has no image of {absent.size} of its {num_classes} classes "
      f"({shown}): they will never be trained on (or tested).",
      stacklevel=3,
    )


def read_split_list(
  path: str | os.PathLike,
  root: str | os.PathLike,
  *,
  num_classes: int | None = None,
  check_files: bool = False,
) -> FileDataset:
  """Reads a ``relative/path label`` list (ImageNet-LT, Places-LT, Clothing1M style).

  Args:
    path: the list file. Blank lines are skipped; a path may contain spaces (the label is the
      last whitespace-separated field), and a leading ``/`` (Places365's lists) is dropped,
      so that the path stays relative to ``root``.
    root: the folder the paths are relative to.
    num_classes: ``C``; by default the largest label + 1. Give it for a split (e.g. a small
      validation list) that may lack the last classes: every label is then checked against
      it, and a class with no line gets a warning.
    check_files: stat every listed file and raise if any is missing.

  Raises:
    ValueError: for a line without a path and an integer label, or with a label outside
      ``[0, num_classes)``, naming the file and line.
    FileNotFoundError: with ``check_files``, naming the lines of the first missing files.
  """
  paths, labels, lines = [], [], []
  C = None if num_classes is None else int(num_classes)
  with open(path, encoding="utf-8") as f:
    for lineno, line in enumerate(f, 1):
      line = line.strip()
      if not line:
        continue
      fields = line.rsplit(None, 1)
      head = fields[0].strip().lstrip("/") if len(fields) == 2 else ""
      try:
        label = int(fields[-1])
      except ValueError:
        label = None
      if not head or label is None:
        raise ValueError(f"{path}:{lineno}: expected 'relative/path label', got {line!r}.")
      if label < 0 or (C is not None and label >= C):
        allowed = f"[0, {C})" if C is not None else ">= 0"
        raise ValueError(
          f"{path}:{lineno}: label {label} of {head!r} is outside {allowed}"
          + (f" (num_classes = {C})." if C is not None else ".")
        )
      paths.append(head)
      labels.append(label)
      lines.append(f"line {lineno}")
  if not labels:
    raise ValueError(f"{path} lists no images.")
  labels = np.asarray(labels)
  if C is None:
    C = int(labels.max()) + 1
  else:
    _warn_absent(path, labels, C)
  if check_files:
    _check_files(path, root, paths, lines)
  return FileDataset(str(root), np.asarray(paths), labels, C, meta={"list": os.fspath(path)})


def read_inat_json(
  path: str | os.PathLike, root: str | os.PathLike, *, check_files: bool = False
) -> FileDataset:
  """Reads an iNaturalist 2017/2018 split (COCO-style ``images`` + ``annotations`` JSON).

  The label of an image is its annotation's ``category_id``; ``num_classes`` is the number of
  categories in the file (8,142 for iNaturalist 2018), or the largest id + 1 if that is more.

  Raises:
    ValueError: for an image without exactly one annotation, naming its id, or a negative
      category id.
    FileNotFoundError: with ``check_files``, naming the first missing images.
  """
  with open(path, encoding="utf-8") as f:
    doc = json.load(f)
  for key in ("images", "annotations"):
    if key not in doc:
      raise ValueError(f"{path} has no {key!r}: is it an iNaturalist split file?")
  label_of: dict[Any, int] = {}
  for ann in doc["annotations"]:
    if ann["image_id"] in label_of:
      raise ValueError(f"{path}: image {ann['image_id']} has more than one annotation.")
    label_of[ann["image_id"]] = int(ann["category_id"])
  paths, labels = [], []
  for img in doc["images"]:
    if img["id"] not in label_of:
      raise ValueError(f"{path}: image {img['id']} ({img['file_name']}) has no annotation.")
    if label_of[img["id"]] < 0:
      raise ValueError(
        f"{path}: image {img['id']} ({img['file_name']}) has the negative "
        f"category_id {label_of[img['id']]}."
      )
    paths.append(img["file_name"])
    labels.append(label_of[img["id"]])
  if check_files:
    _check_files(path, root, paths, [f"image id {img['id']}" for img in doc["images"]])
  categories = doc.get("categories") or []
  C = max(len(categories), max(labels) + 1)
  names = [""] * C
  for cat in categories:
    if 0 <= int(cat["id"]) < C:
      names[int(cat["id"])] = str(cat.get("name", cat["id"]))
  names = [n or str(i) for i, n in enumerate(names)]
  return FileDataset(
    str(root),
    np.asarray(paths),
    np.asarray(labels),
    C,
    tuple(names),
    meta={"list": os.fspath(path)},
  )
