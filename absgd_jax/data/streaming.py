"""Streaming a :class:`~absgd_jax.data.FileDataset` through grain: read, decode, crop, batch.

The training loop decides which examples form each global batch (the same
:func:`~absgd_jax.data.epoch_batches` permutation as for in-memory data) and which rows of it
this process feeds. This module turns those rows into decoded, augmented ``uint8`` images with
a grain ``DataLoader``: worker processes read and decode the files, a read-ahead buffer keeps
them busy, and the output comes back in order.

What makes the result independent of the number of hosts and workers:

- the rows are fixed by the loop before any reading starts;
- each example's augmentation draws from a generator seeded by ``(seed, epoch, position in the
  global epoch order)``, not by a worker or a process.

So one host and N hosts train on the same global batches, pixel for pixel, and an epoch
resumed from a checkpoint sees what it would have seen. grain is an optional extra
(``pip install -e ".[scale]"`` in the checkout): ``absgd_jax.data`` does not import this module, the
training loop imports it for a :class:`FileDataset` only.

Examples:
  >>> import numpy as np
  >>> rows = [np.array([2, 0]), np.array([1, 1])]
  >>> seeds = [np.array([10, 11]), np.array([12, 13])]
  >>> _flatten(rows, seeds)
  (array([2, 0, 1, 1]), array([10, 11, 12, 13]))
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence

import numpy as np

from absgd_jax.data.file_list import FileDataset
from absgd_jax.data.imagenet_transforms import decode_rgb, random_resized_crop, resize_center_crop

try:
  import grain.python as grain
except ImportError as e:
  raise ImportError(
    "streaming image files needs grain: pip install -e '.[scale]' in the "
    "absgd_jax checkout (or pip install grain)."
  ) from e


@dataclasses.dataclass(frozen=True)
class StreamOptions:
  """How the images are made and read.

  Attributes:
    image_size: the side of the training crop and of the test center crop (224).
    resize: the test transform's shorter side before the center crop (256).
    crop_scale: the training crop's area fraction range.
    workers: grain worker processes (0 reads in the calling process, for tests and debugging).
    prefetch: batches each worker prepares ahead.
    read_threads: threads per worker that read files, ahead of decoding.
  """

  image_size: int = 224
  resize: int = 256
  crop_scale: tuple[float, float] = (0.08, 1.0)
  workers: int = 0
  prefetch: int = 2
  read_threads: int = 4


class _FileSource:
  """grain's random-access source: record ``i`` is the file's bytes and its label."""

  def __init__(self, dataset: FileDataset):
    self._ds = dataset

  def __len__(self) -> int:
    return len(self._ds)

  def __getitem__(self, i: int) -> dict:
    path = self._ds.full_path(int(i))
    try:
      with open(path, "rb") as f:
        data = f.read()
    except OSError as e:
      raise FileNotFoundError(
        f"cannot read {path} (listed as {self._ds.path(int(i))!r} "
        f"under root {self._ds.root!r}): {e}"
      ) from e
    return {"data": data, "label": np.int32(self._ds.labels[int(i)]), "path": path}


class _ListSampler:
  """Yields the given record keys in order, each with its own seeded generator."""

  def __init__(self, keys: np.ndarray, seeds: np.ndarray | None, base_seed: Sequence[int]):
    self._keys, self._seeds, self._base = keys, seeds, [int(x) for x in base_seed]

  def __len__(self) -> int:
    return len(self._keys)

  def __getitem__(self, index: int):
    if index < 0 or index >= len(self._keys):
      raise IndexError(index)
    rng = None
    if self._seeds is not None:
      # The 1 keeps [seed, epoch, 1, pos] apart from the [seed, epoch] of the epoch's permutation.
      rng = np.random.default_rng([*self._base, 1, int(self._seeds[index])])
    return grain.RecordMetadata(index=index, record_key=int(self._keys[index]), rng=rng)


class _TrainTransform(grain.RandomMapTransform):
  """Decode, random-resized crop, flip; the generator is the sampler's, seeded per example."""

  def __init__(self, options: StreamOptions):
    self.o = options

  def random_map(self, record, rng):
    img = decode_rgb(record["data"], record["path"])
    return {
      "image": random_resized_crop(img, rng, self.o.image_size, self.o.crop_scale),
      "label": record["label"],
    }


class _TestTransform(grain.MapTransform):
  """Decode, resize the shorter side, center crop."""

  def __init__(self, options: StreamOptions):
    self.o = options

  def map(self, record):
    img = decode_rgb(record["data"], record["path"])
    return {
      "image": resize_center_crop(img, self.o.resize, self.o.image_size),
      "label": record["label"],
    }


def _absl_flags_ready() -> None:
  """grain's worker processes read absl flags; outside an absl app nobody has parsed them."""
  from absl import flags

  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()


def _flatten(rows: Sequence[np.ndarray], seeds: Sequence[np.ndarray] | None):
  keys = np.concatenate([np.asarray(r) for r in rows])
  flat_seeds = None if seeds is None else np.concatenate([np.asarray(s) for s in seeds])
  return keys, flat_seeds


def stream_images(
  dataset: FileDataset,
  rows: Sequence[np.ndarray],
  *,
  train: bool,
  seed: int | Sequence[int] = 0,
  positions: Sequence[np.ndarray] | None = None,
  options: StreamOptions = StreamOptions(),
) -> Iterator[np.ndarray]:
  """Yields ``uint8 [len(rows[i]), S, S, 3]`` images for each entry of ``rows``, in order.

  Args:
    dataset: the files.
    rows: per batch, the indices into ``dataset`` this process feeds (equal lengths).
    train: random-resized crop + flip (True) or resize + center crop (False).
    seed: with ``positions``, seeds the training crops; e.g. ``(run seed, epoch)``.
    positions: per batch, each row's position in the global epoch order; a training crop is
      drawn from ``default_rng([*seed, 1, position])``. Required when ``train``.
    options: sizes and parallelism.
  """
  if not rows:
    return
  sizes = {len(r) for r in rows}
  if len(sizes) != 1:
    raise ValueError(f"every batch must have the same number of rows; got sizes {sizes}.")
  if train and positions is None:
    raise ValueError("training crops need positions (each row's place in the epoch order).")
  keys, flat_pos = _flatten(rows, positions if train else None)
  o = options
  transform = _TrainTransform(o) if train else _TestTransform(o)
  if o.workers > 0:
    _absl_flags_ready()
  # No grain.Batch: with several workers grain batches within each worker, which would mix
  # the rows of different batches. Records come back in sampler order; they are stacked here.
  loader = grain.DataLoader(
    data_source=_FileSource(dataset),
    sampler=_ListSampler(keys, flat_pos, np.atleast_1d(seed)),
    operations=[transform],
    worker_count=o.workers,
    worker_buffer_size=o.prefetch,
    # The rows are this process's already: grain must not shard them again.
    shard_options=grain.NoSharding(),
    read_options=grain.ReadOptions(
      num_threads=o.read_threads, prefetch_buffer_size=max(16, 4 * o.read_threads)
    ),
  )
  size = sizes.pop()
  images: list[np.ndarray] = []
  for record in loader:
    images.append(record["image"])
    if len(images) == size:
      yield np.stack(images)
      images = []
