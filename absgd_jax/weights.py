"""ABSGD's per-sample weights: p_i = exp(L_i / lam) / s_{t+1} (Algorithm 1, steps 3 to 5).

The transform is functional, in the style of an optax ``GradientTransformation``:
``init()`` builds a small state, ``update(losses, state)`` returns ``(weights, new_state)``.
It is not one, though: a transform sees the gradient of the averaged loss, and the weights
must act on each sample's loss before that average. The weights carry no gradient, so
``sum(weights * losses) / n`` (:func:`absgd_jax.weighted_mean`) is ABSGD's loss and one
backward pass gives its gradient, exactly as in Eq. (2).

Numerics. ``s`` is a moving average of exp(L / lam), which overflows float32 once
L / lam > 88 (LDAM logits reach that with a small lam). The state therefore keeps ``log s``
and every quantity is formed as a difference of logs relative to the batch maximum, so for
any finite loss and any lam:

    log w_i = L_i / lam - log s_{t+1}  <=  log(B / gamma),

since s_{t+1} >= gamma * exp(L_i / lam) / B. The weights are always finite. Their relative
accuracy is that of float32 logs: about ulp(|L / lam|) / gamma, i.e. 1e-5 at |L/lam| ~ 100,
1e-3 at 1e4 and a few percent at 1e6, because log s is one float32 carried across steps.

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
from collections.abc import Callable, Mapping
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from absgd_jax._numerics import AxisName, log_mean_exp, moving_average_log_s

# A lam that follows a schedule is a function of the update count, like an optax schedule.
LamSchedule = Callable[[jax.Array], jax.typing.ArrayLike]


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
    return _state_from_dict(cls, tree, dtypes)


def _state_from_dict(cls, tree, dtypes: dict):
  """``cls`` (a weigher's state) from the dict of its fields, each cast to its dtype."""
  name = cls.__name__
  article = "an" if name[0] in "AEIOU" else "a"
  if not isinstance(tree, Mapping):
    raise TypeError(f"{name}.from_dict takes a dict; got {type(tree).__name__}.")
  missing = [k for k in cls._fields if k not in tree]
  extra = [k for k in tree if k not in cls._fields]
  if missing or extra:
    raise ValueError(
      f"not {article} {name}: missing keys {missing}, unexpected keys {extra} (the state has "
      f"{list(cls._fields)}). Restore the right sub-tree of the checkpoint."
    )
  return cls(**{k: jnp.asarray(tree[k], dtypes[k]) for k in cls._fields})


class WeightTransform(NamedTuple):
  """A pair of pure functions, ``init() -> state`` and ``update(losses, state) -> (w, state)``.

  Not an optax ``GradientTransformation``: ``init`` takes no params, and ``update`` takes
  per-sample losses, not gradients. Pass it to :func:`absgd_jax.weighted_mean`.

  Attributes:
    init: ``init() -> state``, the state before the first batch.
    update: ``update(losses, state, *, mask=None) -> (weights, state)``: float32 weights
      ``[B]`` for float losses ``[B]`` (``mask``: optional boolean ``[B]``, False on padding).
    axis_name: the mapped axis the batch is split over, or None.

  Examples:
    >>> import jax.numpy as jnp, absgd_jax
    >>> weigher = absgd_jax.absgd_weights(lam=-1.0)  # lam < 0: easy samples weigh more
    >>> isinstance(weigher, absgd_jax.WeightTransform)
    True
    >>> w, state = weigher.update(jnp.log(jnp.array([1.0, 3.0])), weigher.init())
    >>> w  # exp(-L) / mean(exp(-L)) = (1, 1/3) / (2/3)
    Array([1.5, 0.5], dtype=float32)
  """

  init: Callable[[], AbsgdWeightsState]
  update: Callable[..., tuple[jax.Array, AbsgdWeightsState]]
  # The mapped axis the batch is split over, so that the loss side (weighted_mean) can take
  # its denominator over the same global batch as the weights.
  axis_name: AxisName | None = None


def _concrete_float(x) -> float | None:
  """``x`` as a Python float, or None when it is traced (its value is not known yet)."""
  try:
    return float(x)
  except (
    jax.errors.ConcretizationTypeError,
    jax.errors.TracerArrayConversionError,
    jax.errors.TracerIntegerConversionError,
    jax.errors.TracerBoolConversionError,
  ):
    return None


def _check_lam_value(lam: float, what: str = "lam") -> float:
  lam = float(lam)
  # Checked as the float32 it is computed in: 1e-46 would round to 0 there.
  if math.isnan(lam) or float(np.float32(lam)) == 0.0:
    raise ValueError(
      f"{what} must be a nonzero number (lam > 0 for imbalance, lam < 0 for label noise, "
      f"+-inf for plain ERM) representable in float32; got {lam}."
    )
  return lam


def _lam_fn(lam: float | jax.Array | LamSchedule, num_steps: int | None) -> LamSchedule:
  """Returns lam as a function of the count, checking every value that is concrete now."""
  if callable(lam):
    # The schedule's first value (and, given num_steps, every value of the run) is checked
    # now when the schedule can be evaluated eagerly; a schedule closing over a traced value
    # cannot be, and is then left to the documented run-time behaviour.
    if num_steps is not None:
      steps = jnp.arange(int(num_steps), dtype=jnp.int32)
      try:
        values = jax.vmap(lam)(steps)
      except (
        jax.errors.ConcretizationTypeError,
        jax.errors.TracerBoolConversionError,
        jax.errors.TracerIntegerConversionError,
      ):
        # A schedule with Python control flow on the count: one call per step instead.
        values = jnp.stack([jnp.asarray(lam(t), jnp.float32) for t in steps])
      values = np.asarray(values, np.float32) if _concrete_float(values[0]) is not None else None
      if values is not None:
        bad = np.flatnonzero(np.isnan(values) | (values == 0))
        if bad.size:
          raise ValueError(
            f"the lam schedule is {values[bad[0]]} at step {bad[0]} (of {num_steps}); lam must "
            "be nonzero and not NaN at every step. Give that stage a nonzero lam, or +-inf "
            "for plain (unweighted) ERM."
          )
    first = _concrete_float(lam(jnp.zeros([], jnp.int32)))
    if first is not None:
      _check_lam_value(first, "lam schedule's value at step 0")
    return lam
  if isinstance(lam, (jax.Array, np.ndarray)):
    if jnp.shape(lam) != ():
      raise ValueError(
        f"lam must be a scalar; got an array of shape {jnp.shape(lam)}. To sweep "
        "several lam values, jax.vmap over them."
      )
    value = _concrete_float(lam)
    if value is None:  # Traced (under vmap or jit): a value of the program, checked nowhere.
      traced = jnp.asarray(lam, jnp.float32)
      return lambda count: traced
    lam = value
  value = _check_lam_value(lam)
  return lambda count: value


def _refuse_init_args(name: str, args: tuple, kwargs: dict) -> None:
  if args or kwargs:
    # optax.chain / optax.MultiSteps call init(params): name the mix-up, not the signature.
    raise TypeError(
      f"{name}(...).init() takes no arguments: the weigher is not an optax "
      "GradientTransformation and does not go in optax.chain or optax.MultiSteps (a "
      "transform sees only the averaged gradient, too late to weight each sample). Weight "
      "the loss instead: `loss, (w_state, w) = absgd_jax.weighted_mean(losses, w_state, "
      "weigher)` inside the function you differentiate, and give the optimizer alone "
      "(absgd_jax.absgd / abadam, or any optax one) to optax."
    )


def _describe(x) -> str:
  """What ``x`` is, in the words an error message about a swapped argument needs."""
  if isinstance(x, WeightTransform):
    maker = getattr(x.update, "__qualname__", "").split(".")[0]
    if maker in ("absgd_weights", "kl_absgd_weights"):
      return f"a weigher (the WeightTransform from {maker}(...))"
    return "a weigher (a WeightTransform)"
  name = type(x).__name__
  article = "an" if name[0] in "AEIOUaeiou" else "a"
  if isinstance(x, tuple) and hasattr(x, "_fields"):
    return f"{article} {name} (a weigher's state)"
  return f"{article} {name}"


def _check_state(name: str, state, cls) -> None:
  """Names the ways a wrong object reaches ``update`` as the state, and the fix of each.

  Only these are refused (the weigher itself, another weigher's state, a dict): any other
  kind is let through, as a custom weigher's state may be a pytree of its own.
  """
  if isinstance(state, cls):
    return
  if isinstance(state, WeightTransform):
    raise TypeError(
      f"{name}(...).update(losses, state): the state argument is {_describe(state)}; pass "
      f"the weigher's state instead (weigher.init(), or the state the last update "
      f"returned). Did you swap the weigher and its state?"
    )
  kind = type(state)
  if kind.__name__.endswith("WeightsState") and kind.__module__.startswith("absgd_jax"):
    raise TypeError(
      f"{name}(...).update got {_describe(state)}, the state of another weigher; pass the "
      f"state this weigher's init() returned (a {cls.__name__})."
    )
  if isinstance(state, Mapping):
    raise TypeError(
      f"{name}(...).update got a dict as its state, which is what orbax gives back for a "
      f"{cls.__name__} restored without a target: restore it with "
      f"absgd_jax.{cls.__name__}.from_dict(...) (or pass orbax the target "
      f"{{..., 'w_state': weigher.init()}}). Got keys {sorted(state)}."
    )


def _check_losses_and_mask(name: str, losses, mask):
  """The trace-time checks every weigher makes of its inputs; returns them as arrays."""
  losses = jnp.asarray(losses)
  if losses.ndim != 1:
    raise ValueError(
      f"{name} expects a 1-D vector of per-sample losses of shape [batch]; got shape "
      f"{losses.shape}. Reduce the other axes (e.g. mean over tokens) before weighting."
    )
  if losses.shape[0] == 0:
    raise ValueError(f"{name} got an empty batch (losses of shape (0,)).")
  if not jnp.issubdtype(losses.dtype, jnp.floating):
    raise ValueError(f"losses must be floating point; got dtype {losses.dtype}.")
  if mask is not None:
    mask = jnp.asarray(mask)
    if mask.shape != losses.shape:
      raise ValueError(f"mask must have the shape of losses {losses.shape}; got {mask.shape}.")
    if mask.dtype != jnp.bool_:
      # A float mask of 0.5 would silently count as True: a mask marks, it does not weigh.
      raise ValueError(
        f"mask must be boolean (True for a real sample, False for padding); got dtype "
        f"{mask.dtype}. Pass `mask > 0` for a 0/1 mask; to weigh samples, scale the losses."
      )
  return losses, mask


def absgd_weights(
  lam: float | jax.Array | LamSchedule,
  gamma: float = 0.9,
  *,
  s0: float | None = None,
  axis_name: AxisName | None = None,
  num_steps: int | None = None,
) -> WeightTransform:
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
      gamma 0.9 (docs/results/label_noise.md measures them within 0.06 points on noisy
      CIFAR-10).
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
    A :class:`WeightTransform`. ``update(losses, state, *, mask=None)`` takes ``losses`` of
    shape ``[B]`` (float32, bfloat16 or float16) and an optional boolean ``mask [B]`` that
    marks real samples (padding gets weight 0); it returns float32 ``weights [B]`` with no
    gradient, and the new :class:`AbsgdWeightsState`. :func:`~absgd_jax.weighted_mean` turns
    them into the loss. It is not an optax ``GradientTransformation`` (those see only the
    gradient of the averaged loss, too late to weight each sample), so it does not go in
    ``optax.chain``: ``init`` takes no params, and raises a ``TypeError`` saying so if given
    some.

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
  lam_fn = _lam_fn(lam, num_steps)
  gamma = float(gamma)
  if not 0.0 < gamma <= 1.0:
    raise ValueError(f"gamma must lie in (0, 1]; got {gamma}.")
  if s0 is not None:
    s0 = float(s0)
    if not (s0 >= 0.0 and math.isfinite(s0)):
      raise ValueError(f"s0 must be None or a finite number >= 0; got {s0}.")

  def init_fn(*args, **kwargs) -> AbsgdWeightsState:
    _refuse_init_args("absgd_weights", args, kwargs)
    lam0 = jnp.asarray(lam_fn(jnp.zeros([], jnp.int32)), jnp.float32)
    return AbsgdWeightsState(
      count=jnp.zeros([], jnp.int32),
      log_s=jnp.asarray(0.0 if s0 is None else math.log(s0) if s0 > 0 else -math.inf, jnp.float32),
      lam=lam0,
      has_s=jnp.asarray(s0 is not None),
    )

  def update_fn(
    losses: jax.Array, state: AbsgdWeightsState, *, mask: jax.Array | None = None
  ) -> tuple[jax.Array, AbsgdWeightsState]:
    _check_state("absgd_weights", state, AbsgdWeightsState)
    losses, mask = _check_losses_and_mask("absgd_weights", losses, mask)

    lam_t = jnp.asarray(lam_fn(state.count), jnp.float32)
    lam_now = _concrete_float(lam_t)  # known outside jit only
    if lam_now is not None and (math.isnan(lam_now) or lam_now == 0.0):
      raise ValueError(
        f"lam is {lam_now} at update {int(state.count)}; lam must be nonzero and not NaN. "
        "Give that stage of the schedule a nonzero lam, or +-inf for plain (unweighted) ERM."
      )
    losses = jax.lax.stop_gradient(losses).astype(jnp.float32)
    valid = jnp.isfinite(losses)
    if mask is not None:
      valid = valid & mask
    erm = jnp.isinf(lam_t)
    # z = L / lam; 0 for every sample at lam = +-inf (exp(0) = 1, the ERM weights). A finite
    # loss whose L / lam overflows float32 is clipped, so it still gets the largest weight.
    fmax = jnp.finfo(jnp.float32).max
    z = jnp.clip(jnp.where(erm, 0.0, losses / jnp.where(erm, 1.0, lam_t)), -fmax, fmax)
    # A schedule that reaches lam = 0 or NaN gives no usable sample: s is left as it was.
    valid = valid & (lam_t != 0) & jnp.logical_not(jnp.isnan(lam_t))
    shift, log_g_rel, n_valid = log_mean_exp(z, valid, axis_name)

    # Step 4 in log space, relative to the batch max: log(s_{t+1}) - shift.
    restart = jnp.logical_not(state.has_s) | (lam_t != state.lam)
    log_s_rel = moving_average_log_s(state.log_s, shift, log_g_rel, gamma, restart)
    any_valid = n_valid > 0
    log_s_new = jnp.where(erm, 0.0, shift + log_s_rel)
    log_s_new = jnp.where(any_valid, log_s_new, state.log_s)

    # Step 5: w = exp(z - log s_{t+1}), formed from relative quantities.
    weights = jnp.where(erm, 1.0, jnp.exp((z - shift) - log_s_rel))
    weights = jax.lax.stop_gradient(jnp.where(valid, weights, 0.0))
    new_state = AbsgdWeightsState(
      count=optax.safe_int32_increment(state.count),
      log_s=log_s_new,
      lam=jnp.where(any_valid, lam_t, state.lam),
      has_s=state.has_s | any_valid,
    )
    return weights, new_state

  return WeightTransform(init_fn, update_fn, axis_name)
