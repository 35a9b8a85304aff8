"""A training epoch as one jitted call, over a data set kept on the device.

The host pipeline (:mod:`absgd_jax.train.inputs`) gathers each batch in NumPy and sends it to
the device, one dispatch per step. A data set that fits on the device (CIFAR-10-ST at
rho = 100 is 25,250 uint8 images of 32x32x3, 78 MB) can stay there instead: the epoch is then
a ``lax.scan`` over its steps, each gathering its rows from the resident arrays by an index
array, and the whole epoch is one dispatch.

The batch order is the host pipeline's: :func:`epoch_indices` stacks
:func:`absgd_jax.data.epoch_batches`' indices and masks (cheap integers, built on the host)
into ``[steps, B]`` arrays. The augmentation draws then agree too, as the train step keys
them off ``state.rng`` and ``state.step``. Every step sees the batch the host pipeline would
have sent it: the gathered ``"images"``, ``"labels"``, any other per-sample array held
(``"flipped"``) and the ``"mask"``.

What the epoch runs is any ``train_step(state, batch) -> (state, metrics)``: a single run's
(:func:`~absgd_jax.train.step.make_train_step`) or a sweep's over stacked members
(:func:`~absgd_jax.train.members.make_member_step`, with shared ``[steps, B]`` or per-member
``[steps, M, B]`` indices). With a mesh, the indices are split along their batch axis over
the ``("data",)`` devices and the resident arrays are replicated, so each step's batch is
sharded as :func:`~absgd_jax.train.inputs.train_batches` shards it.

Not covered: streamed (file-list) data sets, which do not fit, and learning to reweight's meta
batches, which the host pipeline draws from another set at each step. Nor is it for the CPU:
XLA:CPU runs a convolution's kernel gradient inside a loop about 40 times slower than the
same one alone, so a scanned epoch there took 3 to 40 times the host loop's time
(docs/results/speed.md).

Examples:
  >>> import jax, jax.numpy as jnp, numpy as np
  >>> data = put_resident({"x": np.arange(10.0, dtype=np.float32)})
  >>> def step(total, batch):  # any (state, batch) -> (state, metrics)
  ...   s = jnp.sum(jnp.where(batch["mask"], batch["x"], 0.0))
  ...   return total + s, {"sum": s}
  >>> idx, mask = epoch_indices(10, 4, seed=0, epoch=0)
  >>> idx.shape, int(mask.sum())
  ((3, 4), 10)
  >>> total, metrics = jax.jit(make_train_epoch(step))(jnp.float32(0), data, idx, mask)
  >>> float(total), metrics["sum"].shape  # every example once; one entry per step
  (45.0, (3,))
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from absgd_jax.data import epoch_batches, num_batches

Step = Callable[[Any, dict[str, jax.Array]], tuple[Any, dict[str, jax.Array]]]


def epoch_indices(
  num_examples: int,
  batch_size: int,
  seed: int,
  epoch: int,
  *,
  balanced_labels: np.ndarray | Sequence[int] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
  """One epoch's batches in the host pipeline's order: int32 indices and bool mask ``[steps, B]``.

  The arguments are :func:`absgd_jax.data.epoch_batches`' (``balanced_labels`` for the
  class-balanced sampler), and row ``t`` is its ``t``-th batch.

  Examples:
    >>> idx, mask = epoch_indices(5, 2, seed=0, epoch=0)
    >>> idx.shape, mask[-1].tolist()  # the last batch is padded
    ((3, 2), [True, False])
  """
  batches = list(
    epoch_batches(num_examples, batch_size, seed, epoch, balanced_labels=balanced_labels)
  )
  if not batches:
    raise ValueError(f"an epoch of {num_examples} examples has no batch of {batch_size}.")
  return (
    np.stack([b.indices for b in batches]).astype(np.int32),
    np.stack([b.mask for b in batches]),
  )


def stack_members(
  per_member: Sequence[tuple[np.ndarray, np.ndarray]], sizes: Sequence[int] | None = None
) -> tuple[np.ndarray, np.ndarray]:
  """Each member's ``(indices, mask)`` ``[steps, B]`` as ``[steps, M, B]``: the layout of a
  sweep's per-member batches, ``[M, B, ...]`` at every step.

  Members that share one data set (a sweep over lam, or over seeds of the batch order alone)
  index it as they are. Members with data sets of their own (a seed sweep whose seed also
  draws the imbalanced subset) keep them on the device concatenated in member order; pass
  their ``sizes`` and member ``m``'s indices are offset by the sizes of those before it.

  Examples:
    >>> a, b = epoch_indices(6, 3, 0, 0), epoch_indices(6, 3, 1, 0)
    >>> [x.shape for x in stack_members([a, b])]
    [(2, 2, 3), (2, 2, 3)]
    >>> idx, _ = stack_members([a, b], sizes=[6, 6])  # member 1's rows follow member 0's
    >>> bool((idx[:, 1] >= 6).all())
    True
  """
  shapes = {idx.shape for idx, _ in per_member}
  if len(shapes) != 1:
    raise ValueError(
      f"members' index arrays differ in shape ({sorted(shapes)}); one program needs one "
      f"shape: the same data size and batch size for every member."
    )
  indices = np.stack([idx for idx, _ in per_member], axis=1)
  if sizes is not None:
    if len(sizes) != len(per_member):
      raise ValueError(f"sizes has {len(sizes)} entries for {len(per_member)} members.")
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(indices.dtype)
    indices = indices + offsets[None, :, None]
  return indices, np.stack([mask for _, mask in per_member], axis=1)


def eval_indices(num_examples: int, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
  """The data set in order, in batches of ``batch_size``, the last one padded with row 0:
  the rows :func:`~absgd_jax.train.inputs.eval_batches` sends, as ``[steps, B]`` arrays.

  Examples:
    >>> idx, mask = eval_indices(5, 2)
    >>> idx.tolist(), mask[-1].tolist()
    ([[0, 1], [2, 3], [4, 0]], [True, False])
  """
  steps = num_batches(num_examples, batch_size)
  rows = np.arange(steps * batch_size).reshape(steps, batch_size)
  return np.where(rows < num_examples, rows, 0).astype(np.int32), rows < num_examples


def resident_bytes(arrays: Mapping[str, np.ndarray]) -> int:
  """The bytes the arrays take on each device holding them (every device holds all)."""
  return int(sum(np.asarray(a).nbytes for a in arrays.values()))


def fits_on_device(nbytes: int, device: Any = None, fraction: float = 0.25) -> bool:
  """Whether ``nbytes`` of resident data leave room on ``device`` (the default device).

  The limit is ``fraction`` of the device's memory as its allocator reports it
  (``memory_stats()["bytes_limit"]``); the rest is for the model, its activations and XLA's
  workspace. A device that reports no limit (the CPU, whose memory is the host's) takes it.

  Examples:
    >>> class Card:  # a device that reports 80 GB
    ...   def memory_stats(self): return {"bytes_limit": 80 * 2**30}
    >>> fits_on_device(78 * 2**20, Card()), fits_on_device(30 * 2**30, Card())
    (True, False)
  """
  device = jax.devices()[0] if device is None else device
  try:
    stats = device.memory_stats()
  except Exception:  # Backends without allocator statistics raise rather than return None.
    stats = None
  limit = (stats or {}).get("bytes_limit")
  return limit is None or nbytes <= fraction * limit


def _put(x: np.ndarray, sharding: NamedSharding) -> jax.Array:
  """A global array from the same host array on every process (multi-host safe)."""
  x = np.asarray(x)
  return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])


def put_resident(
  arrays: Mapping[str, np.ndarray], mesh: Mesh | None = None
) -> dict[str, jax.Array]:
  """The per-sample arrays (``"images"``, ``"labels"``, ...), ``[N, ...]`` each, on the device:
  replicated over ``mesh``'s devices, or on the default device without one. Images stay in
  their dtype (uint8 for CIFAR); the train step's preprocessing converts each batch."""
  if mesh is None:
    return {k: jax.device_put(np.asarray(v)) for k, v in arrays.items()}
  return {k: _put(v, NamedSharding(mesh, P())) for k, v in arrays.items()}


def _batch_spec(ndim: int) -> P:
  """The batch axis is the last of an index array (``[B]``, or ``[M, B]`` per member)."""
  return P(*([None] * (ndim - 1)), "data")


def put_indices(
  indices: np.ndarray, mask: np.ndarray, mesh: Mesh | None = None
) -> tuple[jax.Array, jax.Array]:
  """``[steps, B]`` (or ``[steps, M, B]``) indices and mask on the device, split along the
  batch axis over ``mesh`` when one is given."""
  if mesh is None:
    return jax.device_put(np.asarray(indices)), jax.device_put(np.asarray(mask))
  sharding = NamedSharding(mesh, _batch_spec(np.ndim(indices)))
  return _put(indices, sharding), _put(mask, sharding)


def _gather(data: Mapping[str, jax.Array], idx: jax.Array, mask: jax.Array, mesh: Mesh | None):
  """One step's batch: each resident array's rows ``idx`` (``[B]`` or ``[M, B]``), and the mask."""
  # "clip" rather than jnp.take's default "fill": the indices are in range by construction,
  # and clipping needs no masking of out-of-range rows.
  batch = {k: jnp.take(v, idx, axis=0, mode="clip") for k, v in data.items()}
  batch["mask"] = mask
  if mesh is not None:  # Shard each step's batch as the host pipeline's batch is sharded.
    batch = jax.lax.with_sharding_constraint(batch, NamedSharding(mesh, _batch_spec(idx.ndim)))
  return batch


def make_train_epoch(train_step: Step, *, mesh: Mesh | None = None) -> Callable:
  """Builds ``epoch(state, data, indices, mask) -> (state, metrics)``: ``train_step`` over
  every row of ``indices``, in order, as one ``lax.scan``.

  Args:
    train_step: ``(state, batch) -> (state, metrics)``, the step the host loop jits: a single
      run's, or a sweep's over stacked members.
    mesh: the ``("data",)`` mesh the batch is split over, or None for one device.

  Returns:
    ``epoch(state, data, indices, mask)``, a pure function to ``jax.jit`` (donate the state:
    ``donate_argnums=0``). ``data`` is :func:`put_resident`'s dict of ``[N, ...]`` arrays;
    ``indices`` and ``mask`` are ``[steps, B]`` (shared) or ``[steps, M, B]`` (per member),
    from :func:`epoch_indices` (and :func:`stack_members`), placed by :func:`put_indices`.
    The metrics are the steps' stacked along a leading ``[steps]`` axis: the host loop's list
    of per-step dicts as arrays (:func:`unstack` gives the list back).
  """

  def epoch(state, data, indices, mask):
    def body(state, xs):
      return train_step(state, _gather(data, *xs, mesh))

    return jax.lax.scan(body, state, (indices, mask))

  return epoch


def make_evaluate(eval_step: Step, *, mesh: Mesh | None = None) -> Callable:
  """Builds ``evaluate(state, data, indices, mask) -> sums``: ``eval_step``'s per-class sums
  (``class_correct``, ``class_count``), added up over every row of ``indices`` in one
  ``lax.scan``.

  ``eval_step(state, batch)`` is :func:`~absgd_jax.train.step.make_eval_step`'s, or its
  stacked members' (``over_members``), whose sums then lead with the member axis. The
  indices come from :func:`eval_indices`. Counts of correct predictions are whole numbers,
  which float32 adds exactly up to 2**24, so the sums equal the host loop's.
  """

  def evaluate(state, data, indices, mask):
    # The sums' shapes, from one step traced abstractly (no batch is gathered for it).
    batch = {
      k: jax.ShapeDtypeStruct(indices.shape[1:] + v.shape[1:], v.dtype) for k, v in data.items()
    }
    batch["mask"] = jax.ShapeDtypeStruct(mask.shape[1:], mask.dtype)
    shapes = jax.eval_shape(eval_step, state, batch)
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)

    def body(total, xs):
      out = eval_step(state, _gather(data, *xs, mesh))
      return jax.tree.map(jnp.add, total, out), None

    return jax.lax.scan(body, zeros, (indices, mask))[0]

  return evaluate


def unstack(metrics: Mapping[str, Any]) -> list[dict[str, np.ndarray]]:
  """Stacked per-step metrics ``{name: [steps, ...]}`` as the host loop's list of per-step
  dicts (NumPy), for :func:`~absgd_jax.train.metrics.train_epoch_metrics`.

  Examples:
    >>> [m["loss_sum"].item() for m in unstack({"loss_sum": np.array([1.0, 2.0])})]
    [1.0, 2.0]
  """
  metrics = jax.device_get(dict(metrics))
  steps = len(next(iter(metrics.values())))
  return [{k: np.asarray(v[t]) for k, v in metrics.items()} for t in range(steps)]
