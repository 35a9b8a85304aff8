"""The batches of a run, as global arrays sharded over the ``("data",)`` mesh.

With several processes (``jax.distributed.initialize()``), each process reads only its own
rows of the global batch (:func:`process_rows`), and ``jax.make_array_from_process_local_data``
assembles them. The order of the global batch depends only on (seed, epoch), so it is the
same on one device or many, and on resume.
"""

from __future__ import annotations

from collections.abc import Iterator

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec, Sharding

from absgd_jax.data import epoch_batches
from absgd_jax.train import errors
from absgd_jax.train.config import Config
from absgd_jax.train.experiment_data import ExperimentData


def process_rows(rows: np.ndarray) -> np.ndarray:
  """This process's contiguous share of a global batch's rows (all of them on one process).

  Examples:
    >>> process_rows(np.arange(6)).tolist()  # one process
    [0, 1, 2, 3, 4, 5]
  """
  rows = np.asarray(rows)
  return rows.reshape(jax.process_count(), -1, *rows.shape[1:])[jax.process_index()]


def to_global(local: dict[str, np.ndarray], sharding: Sharding) -> dict[str, jax.Array]:
  """Every process's rows, assembled into global arrays split along the batch axis."""
  n = jax.process_count()
  return {
    k: jax.make_array_from_process_local_data(sharding, v, (v.shape[0] * n, *v.shape[1:]))
    for k, v in local.items()
  }


def _stream_options(config: Config):
  from absgd_jax.data.streaming import StreamOptions

  return StreamOptions(
    image_size=config.input.crop_size, resize=config.input.resize_size, workers=config.input.workers
  )


def _files(images: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
  """Streamed images, whose errors (an unreadable or cut-short file) are the user's to fix."""
  with errors.user_input():
    yield from images


def train_batches(
  config: Config, exp: ExperimentData, epoch: int, sharding: Sharding
) -> Iterator[dict[str, jax.Array]]:
  """The global batches of one training epoch: images, labels, mask (and flipped, val_*)."""
  train = exp.train
  balanced = train.labels if config.data.sampler == "balanced" else None
  batches = list(
    epoch_batches(len(train), config.optim.batch_size, config.seed, epoch, balanced_labels=balanced)
  )
  rows = [process_rows(b.indices) for b in batches]
  if config.streamed:
    from absgd_jax.data.streaming import stream_images

    # A row's crop is drawn from its position in the global epoch order, so the global batch
    # is the same, pixel for pixel, for any number of processes and workers.
    positions = [
      process_rows(i * config.optim.batch_size + np.arange(config.optim.batch_size))
      for i in range(len(batches))
    ]
    images = _files(
      stream_images(
        train,
        rows,
        train=True,
        seed=(config.seed, epoch),
        positions=positions,
        options=_stream_options(config),
      )
    )
  else:
    images = (train.images[idx] for idx in rows)
  for i, (b, idx, imgs) in enumerate(zip(batches, rows, images)):
    local = {"images": imgs, "labels": train.labels[idx], "mask": process_rows(b.mask)}
    if config.data.noise != "none":
      local["flipped"] = exp.flipped[idx]
    if exp.meta is not None:  # A batch of the meta set, drawn with replacement.
      rng = np.random.default_rng([config.seed, epoch, i, 13])
      meta_idx = process_rows(rng.integers(0, len(exp.meta), size=config.optim.batch_size))
      local["val_images"] = exp.meta.images[meta_idx]
      local["val_labels"] = exp.meta.labels[meta_idx]
    yield to_global(local, sharding)


def eval_batches(config: Config, dataset, sharding: Sharding) -> Iterator[dict[str, jax.Array]]:
  """``dataset`` in order, in global batches of ``batch_size`` (the last one padded)."""
  n, B = len(dataset), config.optim.batch_size
  rows, masks = [], []
  for start in range(0, n, B):
    idx = np.arange(start, start + B)
    rows.append(process_rows(np.where(idx < n, idx, 0)))
    masks.append(process_rows(idx < n))
  if config.streamed:
    from absgd_jax.data.streaming import stream_images

    images = _files(stream_images(dataset, rows, train=False, options=_stream_options(config)))
  else:
    images = (dataset.images[r] for r in rows)
  for r, mask, imgs in zip(rows, masks, images):
    yield to_global({"images": imgs, "labels": dataset.labels[r], "mask": mask}, sharding)


class MemberBatches:
  """The batches of a run's members, in one tree per step for the member step.

  Members that share a seed share their data and batch order, so a batch ``[B, ...]`` serves
  them all (``shared``); members with their own seeds get theirs stacked as ``[M, B, ...]``.

  Args:
    configs: the members' configs.
    exps: the members' data (:func:`absgd_jax.train.experiment_data.build_for_members`).
    sharding: the batch axis's sharding over the mesh (``P("data")``).
    shared: whether the members share one seed, and so one batch.
  """

  def __init__(self, configs, exps, sharding: NamedSharding, *, shared: bool):
    self.configs, self.exps, self.shared = list(configs), list(exps), shared
    self.sharding = sharding
    spec = PartitionSpec(None, *sharding.spec)
    self._stack = jax.jit(
      lambda trees: jax.tree.map(lambda *xs: jax.numpy.stack(xs), *trees),
      out_shardings=NamedSharding(sharding.mesh, spec),
    )

  def _members(self):
    return list(zip(self.configs, self.exps))[:1] if self.shared else zip(self.configs, self.exps)

  def _join(self, streams) -> Iterator[dict[str, jax.Array]]:
    if self.shared:
      yield from streams[0]
    else:
      for batches in zip(*streams):
        yield self._stack(list(batches))

  def train(self, epoch: int) -> Iterator[dict[str, jax.Array]]:
    """The global batches of one training epoch (:func:`train_batches`)."""
    return self._join([train_batches(c, e, epoch, self.sharding) for c, e in self._members()])

  def evaluation(self, split: str) -> Iterator[dict[str, jax.Array]]:
    """The global batches of ``split`` ("test" or "val") in order (:func:`eval_batches`)."""
    return self._join(
      [eval_batches(c, getattr(e, split), self.sharding) for c, e in self._members()]
    )
