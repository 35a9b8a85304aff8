"""The loss side of ABSGD: reduce per-sample losses to the weighted mean of Eq. (2).

ABSGD's weights cannot live in an optax ``GradientTransformation``: a transform sees only the
gradient of the already averaged loss, and the weights must multiply each sample's loss
before the average, within the one backward pass. So they enter where optax users already
reduce their per-sample losses, through :func:`weighted_mean`, the weighted counterpart of
``jnp.mean(losses, where=...)``.

References:
  Qi, Q., Xu, Y., Jin, R., Yin, W., Yang, T. (2020). Attentional-Biased Stochastic Gradient
  Descent. arXiv:2012.06951.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from absgd_jax import _checks
from absgd_jax._numerics import global_sum
from absgd_jax.weigher import Weigher


def weighted_mean(
  losses: jax.Array,
  state: Any,
  weigher: Weigher,
  where: jax.Array | None = None,
  *,
  mask: jax.Array | None = None,
) -> tuple[jax.Array, tuple[Any, jax.Array]]:
  r"""ABSGD's loss :math:`\frac{1}{n}\sum_i w_i L_i` over the ``n`` valid samples of a batch.

  The weights :math:`w_i = e^{L_i/\lambda} / s_{t+1}` come from ``weigher.update`` and carry
  no gradient, so the gradient of the returned loss is Eq. (2)'s weighted gradient
  :math:`\frac{1}{n}\sum_i w_i \nabla L_i`, from one backward pass. The return value has the
  shape that ``jax.value_and_grad(..., has_aux=True)`` expects.

  The denominator is the number of valid samples, not the padded batch size: a batch padded
  from 100 to 128 rows averages over 100. Under ``pmap``/``shard_map`` with a weigher built
  with ``axis_name``, it is the number of valid samples of the global batch, so the per-shard
  losses (and gradients) ``psum`` to the loss of one device holding the whole batch.

  A real sample whose loss is NaN or inf has weight 0, yet the returned loss is NaN (0 * NaN
  is kept on purpose), so that ``optax.apply_if_finite`` or a divergence check sees it.

  Args:
    losses: per-sample losses ``[B]``, float32, bfloat16 or float16.
    state: the weigher's state, from ``weigher.init()`` or the previous step.
    weigher: the :class:`~absgd_jax.Weigher`, from :func:`~absgd_jax.absgd_weights`,
      :func:`~absgd_jax.kl_absgd_weights` or any object with their ``update``.
    where: optional boolean ``[B]``, True for real samples and False for padding, as in
      ``jnp.mean(..., where=...)``. Padding gets weight 0 and is left out of ``n`` and of ``s``.
    mask: another name for ``where`` (the name the weigher's ``update`` uses).

  Returns:
    ``(loss, (new_state, weights))``: the float32 scalar loss, the weigher's new state, and
    the float32 weights ``[B]`` (0 on padding), for logging.

  Raises:
    TypeError: for an argument of the wrong kind (the weigher and its state swapped, a state
      that is a dict, as orbax restores one without a target), naming which is which.
    ValueError: if both ``where`` and ``mask`` are given, or ``where`` is not boolean.

  Examples:
    >>> import jax, jax.numpy as jnp, absgd_jax
    >>> weigher = absgd_jax.absgd_weights(lam=1.0)
    >>> L = jnp.array([0.0, jnp.log(3.0), 5.0])
    >>> loss, (state, w) = absgd_jax.weighted_mean(L, weigher.init(), weigher,
    ...                                            where=jnp.array([True, True, False]))
    >>> w.round(4)  # exp(L) / mean(exp(L)) over the two real samples; padding gets 0
    Array([0.5, 1.5, 0. ], dtype=float32)
    >>> loss.round(4)  # (0.5 * 0 + 1.5 * log 3) / 2
    Array(0.824, dtype=float32)
    >>> def f(x, state):
    ...   return absgd_jax.weighted_mean(x ** 2, state, weigher)
    >>> (loss, (state, w)), g = jax.value_and_grad(f, has_aux=True)(
    ...     jnp.array([0.0, 1.0]), weigher.init())
    >>> g.round(4)  # w_i * 2 x_i / n with w = [2, 2e] / (1 + e) held fixed
    Array([0.    , 1.4621], dtype=float32)
  """
  _checks.weighted_mean_arguments(losses, state, weigher)
  if mask is not None:
    if where is not None:
      raise ValueError(
        "weighted_mean got both where= and mask=; they are one argument "
        "(mask= is an alias of where=). Pass only where=."
      )
    where = mask
  losses = jnp.asarray(losses)
  if where is not None:
    where = jnp.asarray(where)
    _checks.boolean_mask("where", where, fix="where=mask > 0")
  weights, new_state = weigher.update(losses, state, mask=where)
  axis_name = getattr(weigher, "axis_name", None)
  if where is None:
    n_local = jnp.asarray(losses.shape[0] if losses.ndim else 1, jnp.float32)
    terms = weights * losses
  else:
    n_local = jnp.sum(where, dtype=jnp.float32)
    # where(), not weights * losses: padding's loss may be anything (NaN from a dummy row),
    # and the weight 0 alone would still leak it as 0 * NaN.
    terms = jnp.where(where, weights * losses, 0.0)
  n = global_sum(n_local, axis_name)
  loss = jnp.sum(terms.astype(jnp.float32)) / jnp.maximum(n, 1.0)
  return loss, (new_state, weights)
