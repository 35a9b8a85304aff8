"""What to log about ABSGD's weights: how concentrated they are, and on which classes.

References:
  Qi, Q., Xu, Y., Jin, R., Yin, W., Yang, T. (2020). Attentional-Biased Stochastic Gradient
  Descent. arXiv:2012.06951. Figure 4 (the mean weight per class).
  Kish, L. (1965). Survey Sampling. Wiley. (The effective sample size.)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from typing import Any


def effective_sample_size(weights: jax.Array) -> jax.Array:
  r"""Kish's effective sample size :math:`(\sum w)^2 / \sum w^2` of a batch's weights ``[B]``.

  B for uniform weights, 1 when one sample holds all the weight; 0 for an all-zero batch.

  Examples:
    >>> import jax.numpy as jnp, absgd_jax
    >>> absgd_jax.effective_sample_size(jnp.array([1.0, 1.0, 1.0, 1.0]))
    Array(4., dtype=float32)
    >>> absgd_jax.effective_sample_size(jnp.array([2.0, 0.0, 0.0, 0.0]))
    Array(1., dtype=float32)
  """
  w = jnp.asarray(weights, jnp.float32)
  sq = jnp.sum(w * w)
  return jnp.where(sq > 0, jnp.sum(w) ** 2 / jnp.where(sq > 0, sq, 1.0), 0.0)


def class_mean_weights(
  weights: jax.Array, labels: jax.Array, num_classes: int
) -> tuple[jax.Array, jax.Array]:
  """Per-class sum of weights and per-class sample count over a batch (Figure 4, right).

  Sums rather than means, so that batches and devices can be accumulated exactly; the mean
  weight of class c is ``sums[c] / counts[c]`` where ``counts[c] > 0``.

  Args:
    weights: ``[B]`` weights.
    labels: ``[B]`` integer labels in [0, num_classes).
    num_classes: C.

  Returns:
    ``(sums [C], counts [C])``, float32.

  Examples:
    >>> import jax.numpy as jnp, absgd_jax
    >>> s, n = absgd_jax.class_mean_weights(jnp.array([0.5, 1.5, 2.0]), jnp.array([0, 0, 2]), 3)
    >>> s / jnp.maximum(n, 1)
    Array([1., 0., 2.], dtype=float32)
  """
  w = jnp.asarray(weights, jnp.float32)
  sums = jax.ops.segment_sum(w, labels, num_segments=num_classes)
  counts = jax.ops.segment_sum(jnp.ones_like(w), labels, num_segments=num_classes)
  return sums, counts


def weight_stats(
  weights: jax.Array, state: Any, where: jax.Array | None = None
) -> dict[str, jax.Array]:
  """Scalars to log each step: ESS, ESS as a fraction of the batch, the largest weight, the
  weights' KL from uniform and log s.

  ``kl`` is KL(p || uniform) of the normalised weights ``p = w / sum(w)`` over the real
  samples: 0 for uniform weights, log n for all the weight on one of n samples; it is the
  quantity a KL budget (:func:`~absgd_jax.kl_absgd_weights`) holds near rho.

  ``log_s`` rather than ``s``: s = E exp(L/lam) overflows float32 whenever L/lam > 88.

  Args:
    weights: the batch's weights ``[B]`` (0 on padding).
    state: the weigher's state (any with a ``log_s``).
    where: optional boolean ``[B]``, True for real samples, as given to
      :func:`~absgd_jax.weighted_mean`: ``ess_fraction`` is then the ESS over the number of
      real samples, so a padded batch with uniform weights has 1.

  Examples:
    >>> import jax.numpy as jnp, absgd_jax
    >>> wt = absgd_jax.absgd_weights(1.0)
    >>> w, st = wt.update(jnp.array([0.0, 0.0]), wt.init())
    >>> {k: float(v) for k, v in absgd_jax.weight_stats(w, st).items()}
    {'ess': 2.0, 'ess_fraction': 1.0, 'max_weight': 1.0, 'kl': 0.0, 'log_s': 0.0}
    >>> real = jnp.array([True, True, False])
    >>> w, st = wt.update(jnp.array([0.0, 0.0, 0.0]), wt.init(), mask=real)
    >>> float(absgd_jax.weight_stats(w, st, where=real)["ess_fraction"])
    1.0
  """
  w = jnp.asarray(weights, jnp.float32)
  real = jnp.ones(w.shape, bool) if where is None else jnp.asarray(where)
  ess = effective_sample_size(w)
  n = jnp.sum(real, dtype=jnp.float32)
  total = jnp.sum(jnp.where(real, w, 0.0))
  p = jnp.where(real & (w > 0), w / jnp.where(total > 0, total, 1.0), 1.0)
  kl = jnp.sum(jnp.where(real & (w > 0), p * jnp.log(n * p), 0.0))
  return {
    "ess": ess,
    "ess_fraction": jnp.where(n > 0, ess / jnp.maximum(n, 1), 0.0),
    "max_weight": jnp.max(w),
    "kl": jnp.where(total > 0, kl, 0.0),
    "log_s": state.log_s,
  }
