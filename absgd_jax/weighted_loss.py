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

from collections.abc import Mapping

import jax
import jax.numpy as jnp

from absgd_jax._numerics import global_sum
from absgd_jax.kl_weights import KlAbsgdWeightsState
from absgd_jax.weights import AbsgdWeightsState, WeightTransform, _describe

_SIGNATURE = "weighted_mean(losses, state, weigher, where=None)"
_STATES = (AbsgdWeightsState, KlAbsgdWeightsState)


def _check_kinds(losses, state, weigher) -> None:
  """Refuses arguments of the wrong kind, naming which argument is which."""
  for i, arg in ((1, losses), (2, state)):
    if isinstance(arg, WeightTransform):
      which = (
        "the per-sample losses [B]"
        if i == 1
        else ("the weigher's state (weigher.init(), or the state the last step returned)")
      )
      raise TypeError(
        f"{_SIGNATURE}: the {('first', 'second')[i - 1]} argument must be {which}; got "
        f"{_describe(arg)}. Did you swap the arguments? The weigher comes third."
      )
  if isinstance(losses, _STATES):
    raise TypeError(
      f"{_SIGNATURE}: the first argument must be the per-sample losses [B]; got "
      f"{_describe(losses)}. The state comes second."
    )
  # A dict with a known state's keys (KlAbsgdWeightsState's saved before it kept its sign
  # lack "sign"); any other dict may be a custom weigher's own state.
  kind = isinstance(state, Mapping) and next(
    (cls for cls in _STATES if set(cls._fields) - {"sign"} <= set(state) <= set(cls._fields)), None
  )
  if kind:
    raise TypeError(
      f"{_SIGNATURE}: the second argument (the weigher's state) is a dict, which is what "
      f"orbax gives back for a state restored without a target: restore it with "
      f"absgd_jax.{kind.__name__}.from_dict(...), or pass orbax the target "
      f"{{..., 'w_state': weigher.init()}}."
    )
  if not callable(getattr(weigher, "update", None)):
    hint = " Did you swap the state and the weigher?" if isinstance(weigher, _STATES) else ""
    raise TypeError(
      f"{_SIGNATURE}: the third argument must be the weigher (from absgd_jax.absgd_weights "
      f"or kl_absgd_weights); got {_describe(weigher)}.{hint}"
    )


def weighted_mean(
  losses: jax.Array,
  state: AbsgdWeightsState | KlAbsgdWeightsState,
  weigher: WeightTransform,
  where: jax.Array | None = None,
  *,
  mask: jax.Array | None = None,
) -> tuple[jax.Array, tuple[AbsgdWeightsState | KlAbsgdWeightsState, jax.Array]]:
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
    weigher: the :class:`~absgd_jax.WeightTransform` from :func:`~absgd_jax.absgd_weights`
      or :func:`~absgd_jax.kl_absgd_weights`.
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
  _check_kinds(losses, state, weigher)
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
    if where.dtype != jnp.bool_:
      raise ValueError(
        f"where (the mask of real samples) must be boolean; got dtype {where.dtype}. A float "
        "mask is not a weight: pass `where=mask > 0` for a 0/1 mask, or multiply the losses."
      )
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
