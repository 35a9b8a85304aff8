"""ABSGD's per-sample weights: p_i = exp(L_i / lam) / s_{t+1} (Algorithm 1, steps 3 to 5).

:func:`absgd_weights` makes a :class:`~absgd_jax.Weigher`: ``init()`` builds a small state,
``update(losses, state)`` returns ``(weights, new_state)``. The weights carry no gradient, so
``sum(weights * losses) / n`` (:func:`absgd_jax.weighted_mean`) is ABSGD's loss and one
backward pass gives its gradient, exactly as in Eq. (2).

Numerics. ``s`` is a moving average of exp(L / lam), which overflows float32 once
L / lam > 88 (LDAM logits reach that with a small lam). The state therefore keeps ``log s``
and the weights are formed from logs relative to the batch maximum
(:func:`absgd_jax._numerics.abs_weights`): they are finite for any finite loss and any lam.

Non-finite losses. A sample whose loss is NaN or +-inf (or which ``mask`` marks as padding)
gets weight 0 and is left out of the batch mean that updates ``s``. A batch without a single
usable sample leaves ``log_s`` and ``lam`` untouched (only ``count`` advances), so the carried
state never holds a NaN. The weighted loss of such a batch is still NaN (0 * NaN), which is
what ``optax.apply_if_finite`` is there to catch.

References:
  Qi, Q., Xu, Y., Jin, R., Yin, W., Yang, T. (2020). Attentional-Biased Stochastic Gradient
  Descent. arXiv:2012.06951.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from absgd_jax import _checks
from absgd_jax._numerics import abs_weights
from absgd_jax.weigher import AxisName, Weigher

# A lam that follows a schedule is a function of the update count, like an optax schedule.
LamSchedule = Callable[[jax.Array], jax.typing.ArrayLike]


@_checks.weigher_state_class
class AbsgdWeightsState(NamedTuple):
  """State of :func:`absgd_weights`: the log of the moving average ``s`` and its context.

  Attributes:
    count: int32 scalar, the number of ``update`` calls so far (drives a lam schedule).
    log_s: float32 scalar, ``log s_t``; -inf only for an explicit ``s0 = 0`` before step 1.
    lam: float32 scalar, the lam that ``log_s`` was estimated with.
    has_s: bool scalar, False until a batch (or ``s0``) has given ``s`` a value.

  Examples:
    >>> import jax.numpy as jnp, absgd_jax
    >>> weigher = absgd_jax.absgd_weights(lam=1.0)
    >>> w, state = weigher.update(jnp.log(jnp.array([1.0, 3.0])), weigher.init())
    >>> int(state.count), float(jnp.exp(state.log_s))  # s = mean(exp(L / lam)) = (1 + 3) / 2
    (1, 2.0)
    >>> w  # exp(L / lam) / s
    Array([0.5, 1.5], dtype=float32)
  """

  count: jax.Array
  log_s: jax.Array
  lam: jax.Array
  has_s: jax.Array

  @classmethod
  def from_dict(cls, tree: dict) -> "AbsgdWeightsState":
    """The state back from the plain dict that a checkpoint restored without a target holds.

    orbax (like any pytree store) restores a ``NamedTuple`` as a dict when it is given no
    target; this turns that dict back into the state, with each field's dtype.

    Examples:
      >>> import absgd_jax
      >>> d = {"count": 3, "log_s": 0.5, "lam": 1.0, "has_s": True}
      >>> absgd_jax.AbsgdWeightsState.from_dict(d).count
      Array(3, dtype=int32)
    """
    dtypes = {"count": jnp.int32, "log_s": jnp.float32, "lam": jnp.float32, "has_s": jnp.bool_}
    return _checks.state_from_dict(cls, tree, dtypes)


def absgd_weights(
  lam: float | jax.Array | LamSchedule,
  gamma: float = 0.9,
  *,
  s0: float | None = None,
  axis_name: AxisName | None = None,
  num_steps: int | None = None,
) -> Weigher:
  r"""ABSGD's attentional weights for a mini-batch of per-sample losses.

  For losses :math:`L_1..L_B` the update computes (Algorithm 1, steps 3 to 5)

  .. math::
     s_{t+1} = (1 - \gamma) s_t + \gamma \frac{1}{B}\sum_i e^{L_i/\lambda}, \qquad
     w_i = e^{L_i/\lambda} / s_{t+1}.

  Args:
    lam: the DRO temperature :math:`\lambda`, nonzero. ``lam > 0`` up-weights hard samples
      (min-max DRO, Eq. 3: imbalance); ``lam < 0`` up-weights easy samples (min-min DRO,
      Eq. 4: label noise); ``+-inf`` gives every weight exactly 1 (plain ERM). May also be a
      schedule ``count -> lam`` (Section 3.6's two-stage strategy): whenever its value
      changes, ``s`` is estimated afresh from the current batch. Changing value never
      recompiles. A schedule meant for stages (piecewise constant) is what fits: one that
      changes every step restarts ``s`` every step, and ``gamma`` then has no effect.
      And lam may be a scalar jax array, traced or not: build the weigher inside
      ``jax.vmap`` to sweep lam values in one program, or inside a jitted step with lam as an
      argument to change it without recompiling.
    gamma: moving-average rate in (0, 1]; ``gamma = 1`` normalises by the current batch alone
      (the paper's EG baseline). gamma never changes the ratio of two weights in one batch,
      only their common scale, the batch mean of ``exp(L/lam)`` over ``s``: with a fixed lam,
      ABSGD and EG differ by that per-step factor on the gradient, which stays near 1 at
      gamma 0.9 (the label-noise results page compares the two).
    s0: initial ``s``. ``None`` (default) sets ``s`` from the first batch, so that batch's
      weights average 1. A number ``>= 0`` is Algorithm 1's :math:`s_0`; ``s0=0`` is the
      authors' PyTorch code for a constant lam (their ``robAlpha`` = 1). ``s0`` is used
      once: every change of lam re-estimates ``s`` from the batch, whatever ``s0`` was.
    axis_name: under ``pmap`` or ``shard_map``, the mapped axis (or axes) the batch is split
      over; the batch mean is then taken over the global batch, so that every device gets the
      weights one device holding the whole batch would. Not needed under plain ``jax.jit``.
      Inside a mapped function it must name the mapped axis: without it each shard would
      silently normalise by its own s.
    num_steps: optional length of the run in ``update`` calls. Given it, a lam schedule is
      evaluated at every step now, and a 0 or NaN anywhere raises, naming the step.

  Returns:
    A :class:`~absgd_jax.Weigher`. ``update(losses, state, *, mask=None)`` takes ``losses`` of
    shape ``[B]`` (float32, bfloat16 or float16) and an optional boolean ``mask [B]`` that
    marks real samples (padding gets weight 0); it returns float32 ``weights [B]`` with no
    gradient, and the new :class:`AbsgdWeightsState`. :func:`~absgd_jax.weighted_mean` turns
    them into the loss. It does not go in ``optax.chain`` (:class:`~absgd_jax.Weigher`
    says why): ``init`` takes no params, and raises a ``TypeError`` saying so if given some.

  Raises:
    ValueError: at construction, for a concrete lam = 0 or NaN (a constant, a schedule's
      value at step 0, or at any step below ``num_steps``), gamma outside (0, 1] or s0 < 0;
      at trace time, for losses that are not a non-empty 1-D floating array or a mask that is
      not boolean; in an eager (un-jitted) ``update``, for a schedule that reaches 0 or NaN.
    TypeError: in ``update``, for a state that is the weigher itself or a dict (a state
      restored without a target: see :meth:`AbsgdWeightsState.from_dict`).

  A lam of 0 or NaN that cannot be seen (a traced lam, or a schedule evaluated inside a
  jitted step) is not an error at run time, as nothing inside jit can raise. That step gives
  every weight 0, so ``mean(w * L)`` is 0 and the batch teaches nothing; ``log_s`` and
  ``lam`` keep their values (only ``count`` advances), so the next good lam carries on as
  if the step had not been. :func:`~absgd_jax.weight_stats` shows it as ``ess = 0``.

  References:
    Qi, Q., Xu, Y., Jin, R., Yin, W., Yang, T. (2020). Attentional-Biased Stochastic
    Gradient Descent. arXiv:2012.06951. Algorithm 1; Eqs. (2), (3), (4); Section 3.6.

  Examples:
    >>> import jax.numpy as jnp, absgd_jax
    >>> wt = absgd_jax.absgd_weights(lam=1.0, gamma=0.5)
    >>> state = wt.init()
    >>> w, state = wt.update(jnp.array([0.0, jnp.log(3.0)]), state)
    >>> w  # exp(L) / mean(exp(L)) on the first batch: [1, 3] / 2
    Array([0.5, 1.5], dtype=float32)
    >>> w, state = wt.update(jnp.array([0.0, 0.0]), state)
    >>> w  # s = 0.5 * 2 + 0.5 * 1 = 1.5
    Array([0.6666667, 0.6666667], dtype=float32)
  """
  lam_fn = _checks.lam_schedule(lam, num_steps)
  gamma = _checks.gamma(gamma)
  if s0 is not None:
    s0 = float(s0)
    if not (s0 >= 0.0 and math.isfinite(s0)):
      raise ValueError(f"s0 must be None or a finite number >= 0; got {s0}.")
  log_s0 = 0.0 if s0 is None else math.log(s0) if s0 > 0 else -math.inf

  def init_fn(*args, **kwargs) -> AbsgdWeightsState:
    _checks.no_init_args("absgd_weights", args, kwargs)
    return AbsgdWeightsState(
      count=jnp.zeros([], jnp.int32),
      log_s=jnp.asarray(log_s0, jnp.float32),
      lam=jnp.asarray(lam_fn(jnp.zeros([], jnp.int32)), jnp.float32),
      has_s=jnp.asarray(s0 is not None),
    )

  def update_fn(
    losses: jax.Array, state: AbsgdWeightsState, *, mask: jax.Array | None = None
  ) -> tuple[jax.Array, AbsgdWeightsState]:
    _checks.weigher_state("absgd_weights", state, AbsgdWeightsState)
    losses, valid = _checks.losses_and_mask("absgd_weights", losses, mask)
    lam_t = jnp.asarray(lam_fn(state.count), jnp.float32)
    _checks.lam_at_update(lam_t, state.count)
    # s is estimated afresh from the batch before it has a value and whenever lam changes.
    restart = jnp.logical_not(state.has_s) | (lam_t != state.lam)
    batch = abs_weights(losses, valid, lam_t, state.log_s, restart, gamma, axis_name)
    any_valid = batch.n_valid > 0
    new_state = AbsgdWeightsState(
      count=optax.safe_increment(state.count),
      log_s=batch.log_s,
      lam=jnp.where(any_valid, lam_t, state.lam),
      has_s=state.has_s | any_valid,
    )
    return batch.weights, new_state

  return Weigher(init_fn, update_fn, axis_name)
