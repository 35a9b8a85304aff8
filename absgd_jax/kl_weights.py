"""ABSGD's weights with lam chosen by the algorithm: the KL-constrained form of the DRO.

ABSGD regularises the weights p with ``lam * KL(p || uniform)`` (Eq. 3), so the user must pick
lam, whose scale follows the loss (CE takes lam = 5 where LDAM needs 100). The constrained form
of the same DRO bounds the divergence instead:

    max_{p in simplex, KL(p || uniform) <= rho}  sum_i p_i L_i
      = min_{lam > 0}  lam * log E exp(L / lam) + lam * rho            (strong duality)

The optimal p is again exp(L / lam) / s, so the weights keep ABSGD's form; lam becomes the dual
variable of the constraint, and the algorithm updates it online. rho is dimensionless: it fixes
how uneven the weights may be (ESS / B <= exp(-rho), and = exp(-2 rho) for Gaussian losses),
whatever the loss scale. The derivation and a table for picking rho are in docs/kl_budget.md.

The update of lam is a stochastic mirror-descent step on the dual, with the entropy mirror map
on lam > 0 (so the step is additive in log lam, and lam can neither change sign nor reach 0):

    dF/dlam = log s + rho - E_p[L] / lam = rho - KL(p || uniform)
    log lam_{t+1} = log lam_t + eta * (KL_t - rho) / rho,   |step| <= 0.5,

with KL_t = mean_i(w_i log w_i - w_i + 1) over the batch's ABSGD weights w = exp(L/lam) / s,
an estimate of KL(p || uniform) that stays >= 0 and, unlike log s + rho - mean(w L) / lam, does
not move when every loss is shifted by a constant while s lags behind. After the step, s is
carried to the new lam with the envelope theorem (d(lam log s)/dlam = -KL) instead of being
re-estimated from one batch, so the moving average of Algorithm 1, step 4 survives. A guard
lifts |lam| on a batch whose own weights would be far more uneven than the budget: on the
lam > 0 side a single huge loss could take all of the batch's weight, and the guard bounds the
loss range (Hoeffding's lemma: that batch's KL is at most R^2 / (8 lam^2)); on the lam < 0
side the weight piles onto the easiest samples instead, the range is set by losses that get
no weight anyway, and the guard bounds the batch's KL itself.

The guarantees of :func:`absgd_jax.absgd_weights` carry over: the weights are finite for any
finite loss (log w <= log(B / gamma)), a NaN/inf or masked sample gets weight 0 and is left out
of every batch statistic, a batch with no usable sample leaves the state untouched, and under
``axis_name`` every statistic is reduced over the global batch.
"""

from __future__ import annotations

import math
from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from absgd_jax import _checks
from absgd_jax._numerics import FMAX, abs_weights, global_count, global_max, global_sum
from absgd_jax.weigher import AxisName, Weigher

# Largest change of log|lam| in one step (a factor e^0.5 = 1.65): a trust region for the first
# steps, when the losses spread out faster than lam follows and KL_t / rho can be 30 or more.
_MAX_LOG_STEP = 0.5
# log|lam| stays inside float32's normal range, so lam is never 0 or inf.
_LOG_LAM_BOUND = 80.0
# Bisection steps of the "kl" guard: they halve a bracket of at most 160 in log|lam| to 1e-5.
_GUARD_STEPS = 24
BatchGuard = Literal["range", "kl"]


@_checks.weigher_state_class
class KlAbsgdWeightsState(NamedTuple):
  """State of :func:`kl_absgd_weights`: log s, log |lam|, the sign of lam, the last KL.

  Attributes:
    count: int32 scalar, the number of ``update`` calls so far.
    log_s: float32 scalar, ``log s_t``, the moving average of ``exp(L / lam_t)``.
    log_abs_lam: float32 scalar, ``log |lam_t|``; ``lam_t = sign * exp(log_abs_lam)``
      (:func:`kl_lam`).
    kl: float32 scalar, the last batch's estimate of ``KL(p || uniform)`` (to log).
    has_s: bool scalar, False until a batch has given ``s`` a value.
    has_lam: bool scalar, False until ``lam0`` or a batch with distinct losses set lam.
    sign: float32 scalar, +1 (lam > 0, imbalance) or -1 (lam < 0, label noise): the
      weigher's ``sign``, kept so that :func:`kl_lam` needs only the state.

  Examples:
    >>> import jax.numpy as jnp, absgd_jax
    >>> weigher = absgd_jax.kl_absgd_weights(rho=0.1, lam0=2.0)
    >>> w, state = weigher.update(jnp.array([0.0, 1.0, 2.0, 3.0]), weigher.init())
    >>> int(state.count), bool(state.kl > 0)  # lam moves to bring KL towards rho
    (1, True)
  """

  count: jax.Array
  log_s: jax.Array
  log_abs_lam: jax.Array
  kl: jax.Array
  has_s: jax.Array
  has_lam: jax.Array
  sign: jax.Array

  @classmethod
  def from_dict(cls, tree: dict) -> "KlAbsgdWeightsState":
    """The state back from the plain dict that a checkpoint restored without a target holds.

    orbax (like any pytree store) restores a ``NamedTuple`` as a dict when it is given no
    target; this turns that dict back into the state, with each field's dtype.

    Raises:
      TypeError: if ``tree`` is not a dict.
      ValueError: for missing or unexpected keys, or a sign that is not +-1.

    Examples:
      >>> import absgd_jax
      >>> d = {"count": 3, "log_s": 0.5, "log_abs_lam": 0.0, "kl": 0.1, "has_s": True,
      ...      "has_lam": True, "sign": -1.0}
      >>> absgd_jax.kl_lam(absgd_jax.KlAbsgdWeightsState.from_dict(d))
      Array(-1., dtype=float32)
    """
    if isinstance(tree, dict) and "sign" in tree:
      saved = np.asarray(jax.device_get(tree["sign"]))
      if not np.all(np.abs(saved) == 1):
        raise ValueError(f"the state's sign must be +1 or -1; got {saved}.")
    dtypes = {
      "count": jnp.int32,
      "log_s": jnp.float32,
      "log_abs_lam": jnp.float32,
      "kl": jnp.float32,
      "has_s": jnp.bool_,
      "has_lam": jnp.bool_,
      "sign": jnp.float32,
    }
    return _checks.state_from_dict(cls, tree, dtypes)


def kl_lam(state: KlAbsgdWeightsState) -> jax.Array:
  """The lam a :class:`KlAbsgdWeightsState` holds: ``state.sign * exp(log_abs_lam)``.

  Args:
    state: the state of a :func:`kl_absgd_weights` weigher.

  Returns:
    lam as a float32 scalar (an array of them for a batched state), to log beside the loss.

  Examples:
    >>> import absgd_jax
    >>> wt = absgd_jax.kl_absgd_weights(rho=0.1, sign=-1, lam0=2.0)
    >>> absgd_jax.kl_lam(wt.init())
    Array(-2., dtype=float32)
  """
  return state.sign * jnp.exp(state.log_abs_lam)


def _log_std(
  losses: jax.Array, valid: jax.Array, n: jax.Array, axis_name: AxisName | None
) -> jax.Array:
  """log of the global batch's standard deviation of the valid losses, or -inf if 0.

  The losses are divided by their largest magnitude first, so that squares of losses up to
  float32's max cannot overflow.
  """
  scale = global_max(jnp.max(jnp.where(valid, jnp.abs(losses), 0.0)), axis_name)
  x = jnp.where(valid, losses / jnp.where(scale > 0, scale, 1.0), 0.0)
  mean = global_sum(jnp.sum(x), axis_name) / jnp.maximum(n, 1.0)
  var = global_sum(jnp.sum(jnp.where(valid, (x - mean) ** 2, 0.0)), axis_name)
  var = var / jnp.maximum(n, 1.0)
  return jnp.where(var > 0, jnp.log(scale) + 0.5 * jnp.log(jnp.where(var > 0, var, 1.0)), -jnp.inf)


def _loss_bounds(
  losses: jax.Array, valid: jax.Array, axis_name: AxisName | None
) -> tuple[jax.Array, jax.Array]:
  """The smallest and largest valid loss of the global batch (+inf, -inf if none is valid)."""
  hi = global_max(jnp.max(jnp.where(valid, losses, -jnp.inf)), axis_name)
  lo = -global_max(jnp.max(jnp.where(valid, -losses, -jnp.inf)), axis_name)
  return lo, hi


def _log_range(lo: jax.Array, hi: jax.Array) -> jax.Array:
  """log(hi - lo), -inf when the losses are all equal (or none is valid).

  Formed from the halves, so that a range wider than float32's maximum (losses near +-max)
  still has a finite log, and its guard still acts.
  """
  half = 0.5 * hi - 0.5 * lo
  ok = jnp.isfinite(half) & (half > 0)
  return jnp.where(ok, jnp.log(jnp.where(ok, half, 1.0)) + math.log(2.0), -jnp.inf)


def _batch_kl(
  losses: jax.Array,
  valid: jax.Array,
  n_valid: jax.Array,
  log_abs_lam: jax.Array,
  sign: int,
  lo: jax.Array,
  hi: jax.Array,
  axis_name: AxisName | None,
) -> jax.Array:
  """KL(softmax(L / lam) || uniform) over the global batch's valid losses, at this lam."""
  lam = sign * jnp.exp(log_abs_lam)
  # Clipped to a quarter of float32's range so that z - shift cannot overflow; the largest z
  # is at the largest loss for lam > 0, at the smallest for lam < 0.
  bound = FMAX / 4
  z = jnp.clip(jnp.where(valid, losses, 0.0) / lam, -bound, bound)
  shift = jnp.clip(jnp.where(jnp.isfinite(hi), hi if sign > 0 else lo, 0.0) / lam, -bound, bound)
  d = jnp.where(valid, z - shift, 0.0)
  e = jnp.where(valid, jnp.exp(d), 0.0)
  ez = e * d
  total, mean_z = global_sum(jnp.stack([jnp.sum(e), jnp.sum(ez)]), axis_name)
  total = jnp.maximum(total, jnp.finfo(jnp.float32).tiny)
  return mean_z / total - (jnp.log(total) - jnp.log(jnp.maximum(n_valid, 1.0)))


def _guarded_lam(
  losses: jax.Array,
  valid: jax.Array,
  n_valid: jax.Array,
  state: KlAbsgdWeightsState,
  *,
  rho: float,
  sign: int,
  guard: BatchGuard,
  batch_cap: float | None,
  axis_name: AxisName | None,
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Step 1: the |lam| this batch's weights use, as ``(log|lam_t|, has_lam, guarded)``.

  ``has_lam`` says whether lam has a value (from lam0, or set now from this batch), and
  ``guarded`` whether the batch guard lifted it.
  """
  # lam0 = std(L) / sqrt(2 rho), the root of KL = rho for Gaussian losses (KL = Var(L/lam)/2),
  # until a batch with distinct losses arrives; before that every lam gives uniform weights.
  log_std = _log_std(losses, valid, n_valid, axis_name)
  can_set = jnp.logical_not(state.has_lam) & jnp.isfinite(log_std)
  log_dual = jnp.where(
    can_set,
    jnp.clip(log_std - 0.5 * math.log(2.0 * rho), -_LOG_LAM_BOUND, _LOG_LAM_BOUND),
    state.log_abs_lam,
  )
  has_lam = state.has_lam | can_set
  if batch_cap is None:
    return log_dual, has_lam, jnp.zeros([], bool)
  budget = batch_cap * rho
  lo, hi = _loss_bounds(losses, valid, axis_name)
  # Hoeffding's lemma: for losses spanning a range R, KL(softmax(L/lam) || uniform) <=
  # R^2 / (8 lam^2), so this |lam| keeps the batch's KL within the cap whatever the losses.
  log_hoeffding = _log_range(lo, hi) - 0.5 * math.log(8.0 * budget)
  if guard == "range":
    log_guard = log_hoeffding
  else:
    # The smallest |lam| >= |lam_dual| whose batch KL is within the cap: KL falls as |lam|
    # grows (docs/kl_budget.md), and the Hoeffding |lam| is above the root, so bisection on
    # [log|lam_dual|, log_hoeffding] finds it. The upper end is kept, which meets the cap.
    def kl_at(log_lam):
      return _batch_kl(losses, valid, n_valid, log_lam, sign, lo, hi, axis_name)

    def bisect(_, bracket):
      low, high = bracket
      mid = 0.5 * (low + high)
      over = kl_at(mid) > budget
      return jnp.where(over, mid, low), jnp.where(over, high, mid)

    finite_top = jnp.where(jnp.isfinite(log_hoeffding), log_hoeffding, log_dual)
    _, top = jax.lax.fori_loop(0, _GUARD_STEPS, bisect, (log_dual, finite_top))
    log_guard = jnp.where(kl_at(log_dual) > budget, top, -jnp.inf)
  guarded = has_lam & (log_guard > log_dual)
  log_abs_lam = jnp.clip(jnp.where(guarded, log_guard, log_dual), -_LOG_LAM_BOUND, _LOG_LAM_BOUND)
  return log_abs_lam, has_lam, guarded


def _mirror_step(
  weights: jax.Array,
  log_w: jax.Array,
  valid: jax.Array,
  n_valid: jax.Array,
  log_abs_lam: jax.Array,
  has_lam: jax.Array,
  *,
  rho: float,
  lam_lr: float,
  axis_name: AxisName | None,
) -> tuple[jax.Array, jax.Array]:
  """Step 3: the batch's KL estimate and the mirror step on log|lam|, as ``(kl, log|lam'|)``.

  The step (entropy mirror map on |lam|) grows |lam| when the weights are more uneven than
  the budget allows and shrinks it when they are more even. It starts from the lam actually
  used, so that the budget is met by the weights the caller receives.
  """
  # KL(p || uniform) = E_u[w log w - w + 1] when s = E exp(L / lam); >= 0 term by term.
  terms = jnp.where(valid, weights * log_w - weights + 1.0, 0.0)
  kl = global_sum(jnp.sum(terms), axis_name) / jnp.maximum(n_valid, 1.0)
  step = jnp.where(has_lam, jnp.clip(lam_lr * (kl - rho) / rho, -_MAX_LOG_STEP, _MAX_LOG_STEP), 0.0)
  return kl, jnp.clip(log_abs_lam + step, -_LOG_LAM_BOUND, _LOG_LAM_BOUND)


def _carry_log_s(log_s: jax.Array, kl: jax.Array, d: jax.Array) -> jax.Array:
  """Step 4: log s carried from lam to lam' = lam e^d by the envelope theorem.

  T(lam) = lam log s(lam) has dT/dlam = -KL, so to first order
  log s(lam') = (lam / lam') log s - KL (1 - lam / lam'), with lam / lam' = exp(-d).
  """
  return jnp.exp(-d) * log_s + kl * jnp.expm1(-d)


def kl_absgd_weights(
  rho: float,
  gamma: float = 0.9,
  *,
  sign: int = 1,
  lam0: float | None = None,
  lam_lr: float = 0.05,
  batch_cap: float | None = 4.0,
  batch_guard: BatchGuard | None = None,
  axis_name: AxisName | None = None,
) -> Weigher:
  r"""ABSGD's weights ``exp(L / lam) / s`` with lam set online by a KL budget ``rho``.

  Solves the constrained DRO ``max {E_p[L] : KL(p || uniform) <= rho}`` (``sign=1``, for
  imbalance) through its dual ``min_{lam>0} lam log E exp(L/lam) + lam rho``, whose optimal
  weights are ABSGD's. Each update

  1. lifts ``|lam|`` on a batch whose own weights would exceed a KL of ``batch_cap * rho``
     (the batch guard, ``_guarded_lam``; see ``batch_guard``);
  2. computes ABSGD's weights at that lam with the moving average ``s`` of Algorithm 1 (the
     weights kernel that :func:`absgd_jax.absgd_weights` runs too);
  3. estimates ``KL_t = mean(w log w - w + 1)`` and takes the mirror step
     ``log|lam| = log|lam_t| + lam_lr * (KL_t - rho) / rho`` (clipped to +-0.5)
     (``_mirror_step``);
  4. carries ``log s`` to the new lam: ``log s <- e^{-d} log s - KL_t (1 - e^{-d})`` with
     ``d`` the change of ``log|lam|`` (the envelope theorem) (``_carry_log_s``).

  On a fixed loss vector lam converges to the root of ``KL(softmax(L / lam) || uniform) =
  rho``; on mini-batches, to where the budget is met on average. Scaling every loss by c > 0
  (and shifting it) scales lam by c and leaves the weights unchanged, so one rho serves CE's
  and LDAM's loss scales alike.

  Picking rho (docs/kl_budget.md). rho says how uneven the weights may be, in the units of
  the weights rather than of the loss:

  - always ``ESS / B <= exp(-rho)``; for roughly Gaussian losses ``ESS / B = exp(-2 rho)``:
    rho = 0.01 keeps 98% of the batch's effective size, rho = 0.1 82%, rho = 0.3 55%;
  - if a fraction ``pi`` of the samples (a minority) has a higher loss than the rest, its
    share ``q`` of the total weight solves ``q log(q / pi) + (1 - q) log((1 - q) / (1 - pi))
    = rho``. With pi = 0.1, rho = 0.1 gives the minority q = 0.26 of the weight (3.1x an
    easy sample's weight, ESS / B = 0.79), and rho = 0.01 gives q = 0.145 (1.5x);
  - rho must stay well below log(B), the KL of a batch that puts all its weight on one sample.

  Label noise (``sign=-1``): the min-min problem ``min {E_p[L] : KL(p || uniform) <= rho}``
  (Eq. 4's constrained form) has the dual ``max_{mu>0} -mu log E exp(-L/mu) - mu rho``, weights
  ``exp(L / lam) / s`` with ``lam = -mu``, and the same fixed point KL = rho, which the same
  step on ``log|lam|`` tracks. There, however, the dual is a *max* over mu. Training is then a
  saddle problem ``min_w max_mu``, which the algorithm runs as gradient descent-ascent, not a
  joint minimisation, so neither ABSGD's convergence result nor Qi et al.'s covers it (see
  docs/kl_budget.md). Giving a noisy fraction ``eta`` no weight at all costs ``rho = -log(1 -
  eta)``: 0.22 for 20% noise, 0.51 for 40%.

  Args:
    rho: the KL budget, a finite number > 0 (the results pages report which rho validation
      chose on each data set).
    gamma: moving-average rate of s in (0, 1], as in :func:`absgd_jax.absgd_weights`.
    sign: ``+1`` (lam > 0: up-weight hard samples, imbalance) or ``-1`` (lam < 0: up-weight
      easy samples, label noise).
    lam0: the starting |lam|, > 0. ``None`` (default) sets it from the first batch whose
      losses are not all equal, as ``std(L) / sqrt(2 rho)`` (the root of KL = rho for Gaussian
      losses), so that nothing in the call depends on the loss scale.
    lam_lr: the mirror step's rate relative to rho, > 0 (dimensionless). Near the root the
      error in log lam shrinks by about ``1 - 2 lam_lr`` per step.
    batch_cap: the cap of the batch guard, as a multiple of rho (>= 1), or None for no guard.
    batch_guard: how the guard bounds a batch's KL. ``"range"`` lifts |lam| to
      ``R / sqrt(8 batch_cap rho)`` with R the batch's loss range (Hoeffding's bound: it acts
      however far one loss jumps ahead of the rest, the danger when lam > 0). ``"kl"`` lifts
      |lam| to the smallest value whose batch KL is ``batch_cap * rho`` (bisection: exact, and
      blind to losses that get no weight, which is what lam < 0 needs, since there the range
      is set by the largest losses, which are down-weighted anyway). ``None`` (default):
      ``"range"`` for ``sign=1``, ``"kl"`` for ``sign=-1``.
    axis_name: under ``pmap`` or ``shard_map``, the mapped axis (or axes) the batch is split
      over; every batch statistic (max, range, sums, counts, the KL) is then global.

  Returns:
    A :class:`~absgd_jax.Weigher`. ``update(losses, state, *, mask=None)`` takes
    ``losses [B]`` (floating) and an optional boolean ``mask [B]``; it returns float32
    ``weights [B]`` without gradient and the new :class:`KlAbsgdWeightsState`, which keeps
    the sign of lam: read lam with :func:`kl_lam`.

  Raises:
    ValueError: at construction for rho, gamma, sign, lam0, lam_lr, batch_cap or batch_guard
      out of range; at trace time for losses that are not a non-empty 1-D floating array, or
      a mask of another shape.
    TypeError: in ``update``, for a state that is the weigher itself or a dict (a state
      restored without a target: see :meth:`KlAbsgdWeightsState.from_dict`).

  References:
    Qi, Q., Xu, Y., Jin, R., Yin, W., Yang, T. (2020). Attentional-Biased Stochastic
    Gradient Descent. arXiv:2012.06951. Algorithm 1; Eqs. (3), (4), (6).

    Qi, Q., Lyu, J., et al. (2022). Stochastic Constrained DRO with a Complexity
    Independent of Sample Size. arXiv:2210.05740. (The constrained form and its
    dual; the lam step here differs, see docs/kl_budget.md.)

    Hoeffding, W. (1963). Probability Inequalities for Sums of Bounded Random Variables.
    Journal of the American Statistical Association 58(301). (The lemma behind the guard.)

  Examples:
    >>> import jax, jax.numpy as jnp, absgd_jax
    >>> wt = absgd_jax.kl_absgd_weights(rho=0.1, gamma=1.0, lam_lr=0.2)
    >>> update = jax.jit(wt.update)
    >>> losses = jnp.array([0.1, 0.2, 0.3, 2.0])
    >>> state = wt.init()
    >>> for _ in range(200):
    ...   w, state = update(losses, state)
    >>> round(float(state.kl), 3)  # the budget is met ...
    0.1
    >>> [round(float(x), 2) for x in w]  # ... by ABSGD's weights exp(L / lam) / s
    [0.69, 0.72, 0.76, 1.82]
    >>> round(float(absgd_jax.kl_lam(state)), 3)
    1.949
    >>> bool(update(30.0 * losses, state)[1].log_abs_lam > state.log_abs_lam)  # lam follows
    True
  """
  rho = float(rho)
  if not (rho > 0.0 and math.isfinite(rho)):
    raise ValueError(
      f"rho (the KL budget) must be a finite number > 0; got {rho}. Try 0.1 "
      "(ESS / B about 0.8), see docs/kl_budget.md."
    )
  gamma = _checks.gamma(gamma)
  if sign not in (1, -1):
    raise ValueError(
      f"sign must be +1 (lam > 0, imbalance) or -1 (lam < 0, label noise); got {sign!r}."
    )
  sign = int(sign)
  if lam0 is not None:
    lam0 = float(lam0)
    if not (lam0 > 0.0 and math.isfinite(lam0)) or abs(math.log(lam0)) > _LOG_LAM_BOUND:
      raise ValueError(
        f"lam0 is the starting |lam| and must be a finite number > 0 within "
        f"exp(+-{_LOG_LAM_BOUND:g}) (its sign comes from `sign`); got {lam0}."
      )
  if batch_cap is not None:
    batch_cap = float(batch_cap)
    if not (batch_cap >= 1.0 and math.isfinite(batch_cap)):
      raise ValueError(
        f"batch_cap must be None or a finite number >= 1 (a multiple of rho); got {batch_cap}."
      )
  guard = batch_guard or ("range" if sign > 0 else "kl")
  if guard not in ("range", "kl"):
    raise ValueError(f"batch_guard must be 'range', 'kl' or None; got {batch_guard!r}.")
  lam_lr = float(lam_lr)
  if not (lam_lr > 0.0 and math.isfinite(lam_lr)):
    raise ValueError(f"lam_lr must be a finite number > 0; got {lam_lr}.")

  def init_fn(*args, **kwargs) -> KlAbsgdWeightsState:
    _checks.no_init_args("kl_absgd_weights", args, kwargs)
    return KlAbsgdWeightsState(
      count=jnp.zeros([], jnp.int32),
      log_s=jnp.zeros([], jnp.float32),
      log_abs_lam=jnp.asarray(0.0 if lam0 is None else math.log(lam0), jnp.float32),
      kl=jnp.zeros([], jnp.float32),
      has_s=jnp.asarray(False),
      has_lam=jnp.asarray(lam0 is not None),
      sign=jnp.asarray(sign, jnp.float32),
    )

  def update_fn(
    losses: jax.Array, state: KlAbsgdWeightsState, *, mask: jax.Array | None = None
  ) -> tuple[jax.Array, KlAbsgdWeightsState]:
    _checks.weigher_state("kl_absgd_weights", state, KlAbsgdWeightsState)
    losses, valid = _checks.losses_and_mask("kl_absgd_weights", losses, mask)
    n_valid = global_count(valid, axis_name)
    log_abs_lam, has_lam, guarded = _guarded_lam(
      losses, valid, n_valid, state, rho=rho, sign=sign, guard=guard, batch_cap=batch_cap,
      axis_name=axis_name,
    )  # fmt: skip
    # s is estimated afresh from the batch until lam is set, and when the guard moved lam.
    restart = jnp.logical_not(state.has_s) | jnp.logical_not(state.has_lam) | guarded
    lam_t = sign * jnp.exp(log_abs_lam)
    batch = abs_weights(losses, valid, lam_t, state.log_s, restart, gamma, axis_name)
    kl, new_log_abs_lam = _mirror_step(
      batch.weights, batch.log_w, valid, n_valid, log_abs_lam, has_lam, rho=rho,
      lam_lr=lam_lr, axis_name=axis_name,
    )  # fmt: skip
    new_log_s = _carry_log_s(batch.log_s, kl, new_log_abs_lam - log_abs_lam)
    # A batch without a usable sample leaves everything but the count as it was.
    keep = n_valid > 0
    new_state = KlAbsgdWeightsState(
      count=optax.safe_increment(state.count),
      log_s=jnp.where(keep, new_log_s, state.log_s),
      log_abs_lam=jnp.where(keep, new_log_abs_lam, state.log_abs_lam),
      kl=jnp.where(keep, kl, state.kl),
      has_s=state.has_s | keep,
      has_lam=jnp.where(keep, has_lam, state.has_lam),
      sign=state.sign,
    )
    return batch.weights, new_state

  return Weigher(init_fn, update_fn, axis_name)
