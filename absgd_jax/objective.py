"""The objective that ABSGD minimises: the information-regularised DRO risk of Eq. (6).

References:
  Qi, Q., Xu, Y., Jin, R., Yin, W., Yang, T. (2020). Attentional-Biased Stochastic Gradient
  Descent. arXiv:2012.06951. Eqs. (3), (4), (6).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from absgd_jax._numerics import log_mean_exp


def dro_objective(losses: jax.Array, lam: float | jax.Array) -> jax.Array:
  r"""The KL-regularised DRO risk :math:`\lambda \log \frac{1}{n}\sum_i e^{L_i/\lambda}` (Eq. 6).

  ``lam > 0`` is the min-max risk :math:`F^{(1)}` (Eq. 3), ``lam < 0`` the min-min risk
  :math:`F^{(2)}` (Eq. 4); at ``lam = +-inf`` both equal the mean loss. Computed with a
  log-sum-exp, so it is finite for any finite losses. It is differentiable: its gradient is
  :math:`\sum_i \mathrm{softmax}(L/\lambda)_i \nabla L_i`, which ABSGD's weighted gradient
  estimates from mini-batches. Use it to monitor training.

  Args:
    losses: per-sample losses, shape ``[n]``.
    lam: nonzero float (or scalar array), may be ``+-inf``.

  Returns:
    A float32 scalar.

  Examples:
    >>> import jax.numpy as jnp, absgd_jax
    >>> L = jnp.array([0.0, 2.0])
    >>> absgd_jax.dro_objective(L, float("inf"))  # the mean
    Array(1., dtype=float32)
    >>> absgd_jax.dro_objective(L, 1e-3)  # tends to max(L) as lam -> 0+
    Array(1.9993069, dtype=float32)
  """
  losses = jnp.asarray(losses)
  if losses.ndim != 1 or losses.shape[0] == 0:
    raise ValueError(
      f"dro_objective expects a non-empty 1-D array of losses; got shape {losses.shape}."
    )
  losses = losses.astype(jnp.float32)
  if not isinstance(lam, jax.Array):
    lam = float(lam)
    if lam == 0.0 or math.isnan(lam):
      raise ValueError(f"lam must be nonzero and not NaN; got {lam}.")
    if math.isinf(lam):
      return jnp.mean(losses)
    return _lam_log_mean_exp(losses, lam)
  # A traced lam: keep both branches NaN-free so the unused one cannot leak NaN gradients.
  lam = jnp.asarray(lam, jnp.float32)
  erm = jnp.isinf(lam)
  safe_lam = jnp.where(erm, 1.0, lam)
  return jnp.where(erm, jnp.mean(losses), _lam_log_mean_exp(losses, safe_lam))


def _lam_log_mean_exp(losses: jax.Array, lam: jax.Array | float) -> jax.Array:
  """``lam * log(mean(exp(losses / lam)))``, to float32's relative accuracy at any |lam|.

  At |lam| = 1e8 every ``L / lam`` is tiny and the log-mean is about mean(L) / lam, which
  ``log(sum) - log(n)`` would lose to rounding before lam multiplies it back; ``near_zero``
  keeps those digits.
  """
  shift, rel, _ = log_mean_exp(losses / lam, near_zero=True)
  return lam * (shift + rel)
