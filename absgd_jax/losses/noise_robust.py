"""Losses robust to noisy labels: symmetric cross-entropy, generalized cross-entropy (the Lq
loss) and its truncated form.

References:
  Wang, Y. et al. (2019). Symmetric Cross Entropy for Robust Learning with Noisy Labels. ICCV.
  Zhang, Z., Sabuncu, M. R. (2018). Generalized Cross Entropy Loss for Training Deep Neural
  Networks with Noisy Labels. NeurIPS.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from absgd_jax.losses import _common as common


def symmetric_cross_entropy(
  logits: jax.typing.ArrayLike,
  labels: jax.typing.ArrayLike,
  *,
  alpha: float = 0.1,
  beta: float = 1.0,
  log_zero: float = -4.0,
  class_weights: jax.typing.ArrayLike | None = None,
) -> jax.Array:
  r"""Symmetric cross-entropy :math:`\alpha\,\mathrm{CE} + \beta\,\mathrm{RCE}` (Wang et al., 2019).

  The reverse cross-entropy swaps prediction and target,
  :math:`\mathrm{RCE} = -\sum_k p_k \log q_k` with q the one-hot label. Its
  :math:`\log 0` is clamped to a constant A (``log_zero``), which makes it exactly

  .. math::  \mathrm{RCE} = -A\,(1 - p_y),

  computed here from ``-expm1(log p_y)``; no probability is ever clamped.

  The constant. The default A = -4 is the value Wang et al. state in their paper. Their
  released PyTorch code instead clamps the one-hot target at 1e-4 and takes a natural log,
  i.e. A = ln(1e-4) = -9.2103 (-4 is that clamp's log10). Since RCE is linear
  in A, the two differ only by a factor ln(10) = 2.3026 on ``beta``: to reproduce a
  hyper-parameter tuned with that code, pass ``log_zero=math.log(1e-4)``.

  The defaults alpha = 0.1, beta = 1.0 are those of the SCE paper for CIFAR-10 (it uses
  alpha = 6.0, beta = 0.1 for CIFAR-100). The ABSGD paper tunes both in {0.1, 0.5, 1, 5}.

  Args:
    logits: ``[B, C]`` floating logits.
    labels: ``[B]`` integer labels in [0, C).
    alpha: weight of the CE term, >= 0.
    beta: weight of the RCE term, >= 0.
    log_zero: A, the clamped value of log 0, < 0.
    class_weights: optional ``[C]`` weights applied per sample by label.

  Returns:
    ``[B]`` per-sample losses.

  Raises:
    ValueError: for alpha or beta < 0 or not finite, log_zero >= 0 or not finite, or bad
      shapes or dtypes.

  Examples:
    >>> import jax.numpy as jnp
    >>> from absgd_jax.losses import symmetric_cross_entropy
    >>> logits = jnp.array([[2.0, 0.0, -1.0], [0.0, 1.0, 0.5]])
    >>> labels = jnp.array([0, 2])
    >>> symmetric_cross_entropy(logits, labels).tolist()  # 0.1 * CE + 4 * (1 - p_y)
    [0.6418, 2.8892]
  """
  logits, labels, class_weights = common.prepare(
    logits, labels, class_weights, "symmetric_cross_entropy"
  )
  alpha = common.check_number("alpha", alpha, 0.0, math.inf, hi_open=True)
  beta = common.check_number("beta", beta, 0.0, math.inf, hi_open=True)
  log_zero = common.check_number("log_zero", log_zero, -math.inf, 0.0, lo_open=True, hi_open=True)
  log_py = common.log_p_true(logits, labels)
  rce = -log_zero * common.one_minus_exp(log_py)
  return common.finish(alpha * -log_py + beta * rce, labels, logits.shape[1], class_weights)


def generalized_cross_entropy(
  logits: jax.typing.ArrayLike,
  labels: jax.typing.ArrayLike,
  *,
  q: float = 0.7,
  class_weights: jax.typing.ArrayLike | None = None,
) -> jax.Array:
  r"""Generalized cross-entropy (the Lq loss) :math:`(1 - p_y^q) / q` (Zhang & Sabuncu, 2018).

  Interpolates between cross-entropy (q -> 0) and the noise-robust MAE, 1 - p_y (q = 1).
  Computed as ``-expm1(q * log p_y) / q``, which stays accurate when p_y is near 1 and
  finite (at most 1/q) when p_y underflows.

  Args:
    logits: ``[B, C]`` floating logits.
    labels: ``[B]`` integer labels in [0, C).
    q: in (0, 1]; the default 0.7 is Zhang & Sabuncu's choice for CIFAR.
    class_weights: optional ``[C]`` weights applied per sample by label.

  Returns:
    ``[B]`` per-sample losses, in [0, 1/q].

  Raises:
    ValueError: for q outside (0, 1], or bad shapes or dtypes.

  Examples:
    >>> import jax.numpy as jnp
    >>> from absgd_jax.losses import generalized_cross_entropy
    >>> logits = jnp.array([[2.0, 0.0, -1.0], [0.0, 1.0, 0.5]])
    >>> labels = jnp.array([0, 2])
    >>> generalized_cross_entropy(logits, labels).tolist()
    [0.1601, 0.8033]
  """
  logits, labels, class_weights = common.prepare(
    logits, labels, class_weights, "generalized_cross_entropy"
  )
  q = common.check_number("q", q, 0.0, 1.0, lo_open=True)
  loss = common.one_minus_exp(q * common.log_p_true(logits, labels)) / q
  return common.finish(loss, labels, logits.shape[1], class_weights)


def truncated_generalized_cross_entropy(
  logits: jax.typing.ArrayLike,
  labels: jax.typing.ArrayLike,
  *,
  q: float = 0.7,
  k: float = 0.5,
  class_weights: jax.typing.ArrayLike | None = None,
) -> jax.Array:
  r"""Truncated Lq loss (TCE in the ABSGD paper; Zhang & Sabuncu, 2018).

  Equal to :func:`generalized_cross_entropy` where :math:`p_y > k`, and to the constant
  :math:`(1 - k^q) / q` where :math:`p_y \le k`. The constant has zero gradient, so samples
  the model finds implausible (likely mislabelled) stop pulling on it.

  Args:
    logits: ``[B, C]`` floating logits.
    labels: ``[B]`` integer labels in [0, C).
    q: in (0, 1]; default 0.7 as in Zhang & Sabuncu.
    k: truncation threshold on p_y, in [0, 1); default 0.5 as in Zhang & Sabuncu. k = 0
      gives plain GCE.
    class_weights: optional ``[C]`` weights applied per sample by label.

  Returns:
    ``[B]`` per-sample losses, in [0, (1 - k^q) / q].

  Raises:
    ValueError: for q outside (0, 1], k outside [0, 1), or bad shapes or dtypes.

  Examples:
    >>> import jax.numpy as jnp
    >>> from absgd_jax.losses import truncated_generalized_cross_entropy
    >>> logits = jnp.array([[2.0, 0.0, -1.0], [0.0, 1.0, 0.5]])
    >>> labels = jnp.array([0, 2])  # p_y = 0.84 and 0.30
    >>> truncated_generalized_cross_entropy(logits, labels).tolist()  # (1 - 0.5**0.7) / 0.7
    [0.1601, 0.5492]
  """
  logits, labels, class_weights = common.prepare(
    logits, labels, class_weights, "truncated_generalized_cross_entropy"
  )
  q = common.check_number("q", q, 0.0, 1.0, lo_open=True)
  k = common.check_number("k", k, 0.0, 1.0, hi_open=True)
  log_k = math.log(k) if k > 0.0 else -math.inf
  floor = -math.expm1(q * log_k) / q
  log_py = common.log_p_true(logits, labels)
  gce = common.one_minus_exp(q * log_py) / q
  loss = jnp.where(log_py > log_k, gce, jnp.asarray(floor, gce.dtype))
  return common.finish(loss, labels, logits.shape[1], class_weights)
