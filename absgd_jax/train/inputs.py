"""The batches of a run, as global arrays sharded over the ``("data",)`` mesh, and the two
pipelines that feed them to the step.

With several processes (``jax.distributed.initialize()``), each process reads only its own
rows of the global batch (:func:`process_rows`), and ``jax.make_array_from_process_local_data``
assembles them. The order of the global batch depends only on (seed, epoch), so it is the
same on one device or many, and on resume.

A run's epoch goes through one of two pipelines (the ``input_pipeline`` setting, resolved by
:func:`resolve_pipeline`): :class:`HostPipeline` sends each batch from the host, one dispatch
per step; :class:`DevicePipeline` keeps the training set on the device and runs the epoch as
one call (:mod:`absgd_jax.train.device_epoch`). Both run the same step on the same batches in
the same order, so a run's numbers do not depend on which one fed it.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterator
from typing import Any

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec, Sharding

from absgd_jax.data import epoch_batches
from absgd_jax.train import device_epoch, errors
from absgd_jax.train.config import Config
from absgd_jax.train.experiment_data import ExperimentData

# How many steps the host may dispatch ahead of the device. The progress bar counts steps the
# device has finished, by waiting on each step's metrics this many steps after sending it, so
# it never runs ahead of the work, while the queue keeps the device busy.
LAG_STEPS = 4


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


def run_steps(
  step: Callable,
  carry: Any,
  batches: Iterator[dict[str, jax.Array]],
  *,
  total: int,
  desc: str,
  show: bool,
  on_step: Callable[[int], None] | None = None,
) -> tuple[Any, list[Any]]:
  """Runs ``step(carry, batch) -> (carry, out)`` over ``batches``; returns the last carry and
  every step's ``out`` on the host, in order.

  At most :data:`LAG_STEPS` steps are in flight: the host waits on the oldest one's (small)
  output before it sends more, and the bar counts only finished steps. ``on_step(n)`` is told
  how many steps have been sent.
  """
  from tqdm.auto import tqdm

  done, pending = [], collections.deque()
  with tqdm(total=total, desc=desc, leave=False, disable=not show) as bar:
    for batch in batches:
      carry, out = step(carry, batch)
      pending.append(out)
      if on_step is not None:
        on_step(len(done) + len(pending))
      if len(pending) > LAG_STEPS:
        done.append(jax.device_get(pending.popleft()))
        bar.update(1)
    while pending:
      done.append(jax.device_get(pending.popleft()))
      bar.update(1)
  return carry, done


class HostPipeline:
  """Each step's batch sent from the host (:class:`MemberBatches`), the progress bar counting
  finished steps. Streamed data sets and learning to reweight's meta batches go this way."""

  def __init__(self, batches: MemberBatches, train_step: Callable, eval_step: Callable):
    self.batches, self.train_step, self.eval_step = batches, train_step, eval_step

  def train(self, state, epoch: int, *, total: int, show: bool, on_step=None):
    """One epoch: the new state and each step's metrics on the host."""
    return run_steps(
      self.train_step, state, self.batches.train(epoch), total=total, desc=f"epoch {epoch}",
      show=show, on_step=on_step,
    )  # fmt: skip

  def evaluate(self, state, split: str, *, show: bool) -> dict[str, np.ndarray]:
    """The members' per-class sums over ``split``."""
    n = len(getattr(self.batches.exps[0], split))
    step = lambda s, batch: (s, self.eval_step(s, batch))
    total = -(-n // self.batches.configs[0].optim.batch_size)
    _, sums = run_steps(
      step, state, self.batches.evaluation(split), total=total, desc=split, show=show
    )
    return jax.tree.map(lambda *xs: np.sum(xs, axis=0), *sums)


class DevicePipeline:
  """The training set (and the evaluated splits) kept on the device, an epoch's steps run as
  one jitted call, in the host pipeline's order (:mod:`absgd_jax.train.device_epoch`).

  Members that share a seed share one resident set; members with their own data keep theirs
  side by side, each member's indices offset into it.
  """

  def __init__(
    self, batches: MemberBatches, member_step: Callable, member_eval_step: Callable, mesh
  ):
    self.batches, self.mesh = batches, mesh
    members = list(batches._members())
    self.exps = [e for _, e in members]
    fields = ["images", "labels"] + (["flipped"] if batches.configs[0].data.noise != "none" else [])
    self.train_data = device_epoch.put_resident(
      {k: np.concatenate([_field(e, k) for e in self.exps]) for k in fields}, mesh
    )
    self.eval_data = {
      split: device_epoch.put_resident(
        {
          k: np.concatenate([getattr(getattr(e, split), k) for e in self.exps])
          for k in ("images", "labels")
        },
        mesh,
      )  # fmt: skip
      for split in ("test", "val")
      if getattr(self.exps[0], split) is not None
    }
    self.epoch = jax.jit(
      device_epoch.make_train_epoch(member_step, mesh=mesh),
      donate_argnums=0,
      out_shardings=NamedSharding(mesh, PartitionSpec()),
    )
    self.evaluate_all = jax.jit(device_epoch.make_evaluate(member_eval_step, mesh=mesh))

  def _indices(self, per_member, sizes):
    if self.batches.shared:
      return per_member[0]
    return device_epoch.stack_members(per_member, sizes=sizes)

  def train(self, state, epoch: int, *, total: int, show: bool, on_step=None):
    del total, show  # One dispatch: nothing to count by steps.
    per_member = [
      device_epoch.epoch_indices(
        len(e.train),
        c.optim.batch_size,
        c.seed,
        epoch,
        balanced_labels=e.train.labels if c.data.sampler == "balanced" else None,
      )  # fmt: skip
      for c, e in self.batches._members()
    ]
    indices, mask = self._indices(per_member, [len(e.train) for e in self.exps])
    state, metrics = self.epoch(
      state, self.train_data, *device_epoch.put_indices(indices, mask, self.mesh)
    )
    if on_step is not None:
      on_step(len(indices))
    return state, device_epoch.unstack(metrics)

  def evaluate(self, state, split: str, *, show: bool) -> dict[str, np.ndarray]:
    del show
    B = self.batches.configs[0].optim.batch_size
    sizes = [len(getattr(e, split)) for e in self.exps]
    indices, mask = self._indices([device_epoch.eval_indices(n, B) for n in sizes], sizes)
    sums = self.evaluate_all(
      state, self.eval_data[split], *device_epoch.put_indices(indices, mask, self.mesh)
    )
    return jax.device_get(sums)


def _field(exp: ExperimentData, name: str) -> np.ndarray:
  return exp.flipped if name == "flipped" else getattr(exp.train, name)


def resolve_pipeline(config: Config, exps: list[ExperimentData]) -> str:
  """``input_pipeline`` made concrete: "host" or "device".

  ``auto`` is the device pipeline on an accelerator where the training set fits (a quarter of
  the device's memory; :func:`absgd_jax.train.device_epoch.fits_on_device`), else the host's:
  XLA:CPU runs a convolution's gradient inside the epoch's loop far slower than alone.

  Raises:
    ValueError: for ``device`` with data it cannot hold (streamed file lists, learning to
      reweight's meta set) or that does not fit.
  """
  asked = config.input.pipeline
  if asked == "host":
    return "host"
  why_not = None
  if config.streamed:
    why_not = "the data are image files streamed from disk"
  elif config.method == "l2rw":
    why_not = "method='l2rw' draws its meta batches from another set at every step"
  else:
    nbytes = sum(e.train.images.nbytes for e in exps)
    if not device_epoch.fits_on_device(nbytes):
      why_not = f"the training set's {nbytes / 2**20:.0f} MiB do not fit a quarter of the device"
  if asked == "device" and why_not:
    raise ValueError(f"input_pipeline=device cannot be used here: {why_not}; use host or auto.")
  if asked == "auto" and (why_not or jax.default_backend() == "cpu"):
    return "host"
  return "device"
