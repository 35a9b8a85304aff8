"""The log-space numerics that every ABSGD weigher and the DRO objective share.

ABSGD's ``s`` is a mean of exp(L / lam), which overflows float32 once L / lam > 88, so the
core works with logs relative to the batch maximum. The pieces below are the whole of that
arithmetic: the global reductions (a mapped axis or none), the log-mean-exp of a batch, the
moving average of Algorithm 1, step 4, in log space, and :func:`abs_weights`, the weights
kernel (Algorithm 1, steps 3 to 5) that :func:`absgd_jax.absgd_weights` and
:func:`absgd_jax.kl_absgd_weights` both call. :func:`absgd_jax.dro_objective` uses the
log-mean-exp.

The kernel's guarantee, for any finite loss and any lam: ``log w_i = L_i / lam - log s_{t+1}
<= log(B / gamma)``, since ``s_{t+1} >= gamma * exp(L_i / lam) / B``, so every weight is
finite. Their relative accuracy is that of float32 logs: about ulp(|L / lam|) / gamma, i.e.
1e-5 at |L / lam| ~ 100, 1e-3 at 1e4 and a few percent at 1e6, because log s is one float32
carried across steps.

References:
  Qi, Q., Xu, Y., Jin, R., Yin, W., Yang, T. (2020). Attentional-Biased Stochastic Gradient
  Descent. arXiv:2012.06951. Algorithm 1, step 4; Eq. (6).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from absgd_jax.weigher import AxisName

FMAX = float(jnp.finfo(jnp.float32).max)


def global_sum(x: jax.Array, axis_name: AxisName | None) -> jax.Array:
  """``x`` summed over the devices of ``axis_name`` (``x`` itself without one)."""
  return x if axis_name is None else jax.lax.psum(x, axis_name)


def global_max(x: jax.Array, axis_name: AxisName | None) -> jax.Array:
  """The largest ``x`` over the devices of ``axis_name`` (``x`` itself without one)."""
  return x if axis_name is None else jax.lax.pmax(x, axis_name)


def global_count(valid: jax.Array, axis_name: AxisName | None) -> jax.Array:
  """The number of True entries of ``valid`` over the global batch, as a float32 scalar."""
  return global_sum(jnp.sum(valid, dtype=jnp.float32), axis_name)


def log_mean_exp(
  z: jax.Array,
  valid: jax.Array | None = None,
  axis_name: AxisName | None = None,
  *,
  near_zero: bool = False,
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """log(mean_i exp(z_i)) over the valid entries of the global batch, as ``shift + rel``.

  Returns ``(shift, rel, n)``: the batch's max z, the log-mean relative to it, and the number
  of valid samples. Keeping ``rel`` apart from ``shift`` matters: at |z| ~ 1e7 a float32 log
  has an ulp of 1, so the weights are formed from relative quantities only. Under
  ``axis_name`` the max, the shifted sum and the count are reduced across devices, so every
  device gets the global batch's value.

  Args:
    z: ``[B]`` float32 exponents.
    valid: optional boolean ``[B]``; False entries are left out (their z may be anything).
    axis_name: the mapped axis (or axes) the batch is split over, or None.
    near_zero: also keep ``rel``'s relative accuracy when every ``z - shift`` is tiny (all z
      nearly equal). ``log(sum) - log(n)`` then subtracts two numbers near log(n), which is
      fine for a weight exp(z - shift - rel) (its relative error is rel's absolute error) but
      not for a value multiplied by a large lam, as the DRO objective is; there
      ``log1p(mean(expm1(z - shift)))`` keeps every digit.

  Returns:
    ``(shift, rel, n)``, float32 scalars. A batch without a valid entry gives ``shift = 0``,
    ``rel = -inf`` and ``n = 0``, and no NaN anywhere.
  """
  neg_inf = jnp.asarray(-jnp.inf, z.dtype)
  z_max = global_max(jnp.max(z if valid is None else jnp.where(valid, z, neg_inf)), axis_name)
  # An all-invalid batch has z_max = -inf; shift by 0 instead to keep z - shift NaN-free.
  shift = jnp.where(jnp.isfinite(z_max), z_max, 0.0)
  e = jnp.exp(z - shift)
  total = global_sum(jnp.sum(e if valid is None else jnp.where(valid, e, 0.0)), axis_name)
  if valid is None:
    n = jnp.asarray(z.shape[0], jnp.float32)
  else:
    n = global_count(valid, axis_name)
  n_safe = jnp.maximum(n, 1.0)
  rel = jnp.log(total) - jnp.log(n_safe)
  if near_zero:
    d = jnp.expm1(z - shift)
    d = global_sum(jnp.sum(d if valid is None else jnp.where(valid, d, 0.0)), axis_name)
    rel = jnp.where(total / n_safe > 0.5, jnp.log1p(d / n_safe), rel)
  return shift, rel, n


def moving_average_log_s(
  log_s: jax.Array, shift: jax.Array, log_batch_rel: jax.Array, gamma: float, restart: jax.Array
) -> jax.Array:
  r"""Algorithm 1, step 4, in log space: ``log s_{t+1} - shift``.

  .. math:: s_{t+1} = (1 - \gamma) s_t + \gamma g_t, \qquad g_t = \frac{1}{B}\sum_i e^{z_i}

  with ``log g_t = shift + log_batch_rel`` from :func:`log_mean_exp`. The result stays
  relative to ``shift`` so that the caller forms its weights from relative quantities.

  Args:
    log_s: log s_t (float32 scalar).
    shift: the batch's shift, from :func:`log_mean_exp`.
    log_batch_rel: log g_t - shift, from :func:`log_mean_exp`.
    gamma: the moving-average rate in (0, 1], a Python float.
    restart: bool scalar; where True, s_{t+1} = g_t (s is estimated afresh from the batch).

  Returns:
    ``log s_{t+1} - shift``, a float32 scalar.
  """
  log_keep = math.log1p(-gamma) if gamma < 1.0 else -math.inf
  blended = jnp.logaddexp(log_keep + (log_s - shift), math.log(gamma) + log_batch_rel)
  return jnp.where(restart, log_batch_rel, blended)


class BatchWeights(NamedTuple):
  """What :func:`abs_weights` gives for one batch."""

  weights: jax.Array  # float32 [B], 0 where not valid, no gradient
  log_w: jax.Array  # float32 [B], log weights, 0 where not valid
  log_s: jax.Array  # float32 scalar, log s_{t+1}; the old log s if no sample was valid
  n_valid: jax.Array  # float32 scalar, valid samples in the global batch


def abs_weights(
  losses: jax.Array,
  valid: jax.Array,
  lam: jax.Array,
  log_s: jax.Array,
  restart: jax.Array,
  gamma: float,
  axis_name: AxisName | None,
) -> BatchWeights:
  r"""ABSGD's weights for one batch and the new log s (Algorithm 1, steps 3 to 5).

  .. math::
     s_{t+1} = (1 - \gamma) s_t + \gamma \frac{1}{n}\sum_{i \text{ valid}} e^{L_i/\lambda},
     \qquad w_i = e^{L_i/\lambda} / s_{t+1},

  formed in log space relative to the batch maximum. ``lam = +-inf`` gives every valid
  sample weight 1 and ``log s = 0`` (plain ERM); a lam of 0 or NaN (a traced one, which
  nothing inside jit can refuse) makes no sample valid. A finite loss whose ``L / lam``
  overflows float32 is clipped, so it still gets the largest weight.

  Args:
    losses: float32 ``[B]`` losses, without gradient.
    valid: boolean ``[B]``, the samples that count (finite loss, not padding).
    lam: float32 scalar, nonzero (may be traced, or +-inf).
    log_s: float32 scalar, log s_t.
    restart: bool scalar; True sets s_{t+1} from this batch alone.
    gamma: the moving-average rate in (0, 1].
    axis_name: the mapped axis the batch is split over, or None.
  """
  erm = jnp.isinf(lam)
  valid = valid & (lam != 0) & jnp.logical_not(jnp.isnan(lam))
  z = jnp.clip(jnp.where(erm, 0.0, losses / jnp.where(erm, 1.0, lam)), -FMAX, FMAX)
  shift, log_g_rel, n_valid = log_mean_exp(z, valid, axis_name)
  log_s_rel = moving_average_log_s(log_s, shift, log_g_rel, gamma, restart)
  log_s_rel = jnp.where(erm, 0.0, log_s_rel)
  log_w = jnp.where(valid, (z - shift) - log_s_rel, 0.0)
  weights = jax.lax.stop_gradient(jnp.where(valid, jnp.exp(log_w), 0.0))
  new_log_s = jnp.where(n_valid > 0, shift + log_s_rel, log_s)
  return BatchWeights(weights, log_w, new_log_s, n_valid)
