"""Index batches for an epoch: shuffled with a seed, or class-balanced, always of one shape.

Every batch has exactly ``batch_size`` indices, so a jitted train step sees one shape and
compiles once. The last, partial batch of an epoch is padded with indices of real examples
(from the start of the epoch's order, so gathering them is safe) and a boolean ``mask`` marks
which entries are real; pass it to :func:`absgd_jax.absgd_weights`'s ``update(..., mask=mask)``
(and to the loss mean) so the padding counts for nothing.

The order depends only on ``(seed, epoch)``: ``np.random.default_rng([seed, epoch])``, so an
epoch can be replayed, e.g. after resuming from a checkpoint, without replaying the others.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import NamedTuple

import numpy as np

from absgd_jax.data.dataset import check_labels


class Batch(NamedTuple):
  """One batch: ``indices int32 [B]`` into the data set, ``mask bool [B]`` of real entries."""

  indices: np.ndarray
  mask: np.ndarray


def num_batches(num_examples: int, batch_size: int, *, drop_last: bool = False) -> int:
  """Batches per epoch: ``ceil(N / B)``, or ``floor(N / B)`` with ``drop_last``.

  Examples:
    >>> num_batches(10, 4), num_batches(10, 4, drop_last=True)
    (3, 2)
  """
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1; got {batch_size}.")
  if num_examples < 0:
    raise ValueError(f"num_examples must be >= 0; got {num_examples}.")
  return num_examples // batch_size if drop_last else -(-num_examples // batch_size)


def _balanced_draw(labels: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
  """``n`` indices: a class uniformly among those present, then an example of it uniformly."""
  order = np.argsort(labels, kind="stable")
  _, starts, counts = np.unique(labels[order], return_index=True, return_counts=True)
  which = rng.integers(0, len(counts), size=n)
  # Vectorised "uniform within the chosen class": a uniform offset into its block of `order`.
  offsets = np.floor(rng.random(n) * counts[which]).astype(np.int64)
  return order[starts[which] + np.minimum(offsets, counts[which] - 1)]


def epoch_batches(
  num_examples: int,
  batch_size: int,
  seed: int,
  epoch: int,
  *,
  balanced_labels: np.ndarray | Sequence[int] | None = None,
  drop_last: bool = False,
) -> Iterator[Batch]:
  """Yields the batches of one epoch, each of exactly ``batch_size`` entries.

  Args:
    num_examples: ``N``, the size of the data set.
    batch_size: ``B``.
    seed: the run's seed (an int ``>= 0``).
    epoch: the epoch number; with ``seed`` it fixes the order.
    balanced_labels: ``None`` for a uniform shuffle (every index exactly once per epoch).
      Otherwise the ``[N]`` labels, and every entry is drawn (with replacement) by picking a
      class uniformly among those present and then one of its examples uniformly: the
      class-balanced "Resampling" baseline of the paper's Table 2. The epoch then has
      ``num_batches(N, B)`` full batches.
    drop_last: drop the last partial batch instead of padding it.

  Yields:
    :class:`Batch` ``(indices, mask)``; ``mask`` is ``False`` only on the padding of the last
    batch of a shuffled epoch.

  Examples:
    >>> batches = list(epoch_batches(10, 4, seed=0, epoch=0))
    >>> [b.indices.shape for b in batches], batches[-1].mask.tolist()
    ([(4,), (4,), (4,)], [True, True, False, False])
    >>> sorted(np.concatenate([b.indices[b.mask] for b in batches]).tolist())
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
  """
  n_batches = num_batches(num_examples, batch_size, drop_last=drop_last)
  if int(seed) < 0 or int(epoch) < 0:
    raise ValueError(f"seed and epoch must be >= 0; got seed = {seed}, epoch = {epoch}.")
  rng = np.random.default_rng([int(seed), int(epoch)])
  if n_batches == 0:
    return
  if balanced_labels is not None:
    labels = np.asarray(balanced_labels)
    if labels.shape != (num_examples,):
      raise ValueError(f"balanced_labels must have shape ({num_examples},); got {labels.shape}.")
    if num_examples:
      labels = check_labels(labels, int(labels.max()) + 1, name="balanced_labels")
    idx = _balanced_draw(labels, n_batches * batch_size, rng).astype(np.int32)
    full = np.ones(batch_size, dtype=bool)
    for b in range(n_batches):
      yield Batch(idx[b * batch_size : (b + 1) * batch_size], full)
    return

  perm = rng.permutation(num_examples).astype(np.int32)
  for b in range(n_batches):
    idx = perm[b * batch_size : (b + 1) * batch_size]
    mask = np.ones(batch_size, dtype=bool)
    if len(idx) < batch_size:
      pad = batch_size - len(idx)
      mask[len(idx) :] = False
      # Real examples as filler (wrapping around if B > N), never an out-of-range index.
      idx = np.concatenate([idx, np.resize(perm, pad)])
    yield Batch(idx, mask)
