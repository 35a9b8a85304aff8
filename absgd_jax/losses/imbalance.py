"""Losses that correct for a long-tailed class prior: LDAM's per-class margins and the
prior-adjusted softmax losses (logit adjustment, balanced softmax).

References:
  Cao, K. et al. (2019). Learning Imbalanced Datasets with Label-Distribution-Aware Margin
  Loss. NeurIPS.
  Menon, A. K. et al. (2021). Long-Tail Learning via Logit Adjustment. ICLR.
  Ren, J. et al. (2020). Balanced Meta-Softmax for Long-Tailed Visual Recognition. NeurIPS.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from absgd_jax.losses import _common as common


def ldam_margins(class_counts: jax.typing.ArrayLike, max_m: float = 0.5) -> jax.Array:
  r"""LDAM's per-class margins :math:`m_j \propto n_j^{-1/4}`, the largest equal to ``max_m``.

  Cao et al. (2019) derive the :math:`n_j^{-1/4}` law; the rarest class gets ``max_m`` and
  class j gets ``max_m * (n_min / n_j) ** 0.25``. (The ABSGD paper's related-work section
  mentions a power of 2/5; this follows Cao et al.'s derivation and released setting.)

  Args:
    class_counts: ``[C]`` training-set sizes per class, all > 0 (NumPy or JAX, int or float).
    max_m: the margin of the rarest class, >= 0; Cao et al. use 0.5.

  Returns:
    ``[C]`` float32 margins, for :func:`ldam_loss`.

  Raises:
    ValueError: for counts that are not all finite and > 0, or max_m < 0 or not finite.

  Examples:
    >>> import numpy as np
    >>> from absgd_jax.losses import ldam_margins
    >>> ldam_margins(np.array([5000, 50])).tolist()  # 0.5 * (50 / 5000) ** 0.25
    [0.1581, 0.5]
  """
  counts = common.check_counts(class_counts, "ldam_margins")
  max_m = common.check_number("max_m", max_m, 0.0, math.inf, hi_open=True)
  # In log space so that the ratio to the smallest count cannot overflow for huge counts.
  log_n = jnp.log(counts)
  return (max_m * jnp.exp(0.25 * (jnp.min(log_n) - log_n))).astype(jnp.float32)


def ldam_loss(
  logits: jax.typing.ArrayLike,
  labels: jax.typing.ArrayLike,
  *,
  margins: jax.typing.ArrayLike,
  scale: float = 30.0,
  class_weights: jax.typing.ArrayLike | None = None,
) -> jax.Array:
  r"""Label-distribution-aware margin loss (Cao et al., 2019).

  The true-class logit is lowered by its class's margin, all logits are multiplied by
  ``scale`` and softmax cross-entropy is taken:
  :math:`\mathrm{CE}(s \cdot (z - m_y e_y), y)`.

  LDAM expects a normalised (cosine) last layer: features and class weight vectors are
  L2-normalised, so each logit is a cosine in [-1, 1] and the margins (<= 0.5) are on the
  same scale. With an ordinary linear head the margins are negligible and ``scale``
  merely sharpens the softmax.

  Args:
    logits: ``[B, C]`` cosine logits in [-1, 1].
    labels: ``[B]`` integer labels in [0, C).
    margins: ``[C]`` per-class margins, usually from :func:`ldam_margins`.
    scale: the logit scale s, > 0; Cao et al. use 30.
    class_weights: optional ``[C]`` weights applied per sample by label (CB-LDAM, or
      LDAM-DRW with :func:`drw_class_weights`).

  Returns:
    ``[B]`` per-sample losses.

  Raises:
    ValueError: for scale <= 0 or not finite, bad shapes or dtypes, or margins or
      class_weights whose shape is not ``(C,)``.

  Examples:
    >>> import jax.numpy as jnp
    >>> from absgd_jax.losses import ldam_loss, ldam_margins
    >>> m = ldam_margins(jnp.array([5000, 50]))
    >>> cos = jnp.array([[0.2, 0.1], [0.1, 0.3]])
    >>> # CE(30 * [[0.0419, 0.1], [0.1, -0.2]], y):
    >>> ldam_loss(cos, jnp.array([0, 1]), margins=m).tolist()
    [1.9046, 9.0001]
  """
  fn = "ldam_loss"
  logits, labels, class_weights = common.prepare(logits, labels, class_weights, fn)
  num_classes = logits.shape[1]
  margins = common.check_class_vector(margins, num_classes, "margins", fn, logits.dtype)
  scale = common.check_number("scale", scale, 0.0, math.inf, lo_open=True, hi_open=True)
  true_mask = jax.nn.one_hot(labels, num_classes, dtype=logits.dtype)
  shifted = logits - true_mask * margins[None, :]
  loss = common.integer_label_ce(scale * shifted, labels)
  return common.finish(loss, labels, num_classes, class_weights)


def _prior_adjusted_ce(
  logits: jax.Array, labels: jax.Array, counts: jax.Array, tau: float
) -> jax.Array:
  """CE(z + tau * log n, y). A per-row constant does not change a softmax, so log counts and
  log priors (log n - log N) give the same loss; counts avoid one more rounding.

  The logits are max-shifted before the adjustment is added: at 1e4 float32's spacing is 1e-3,
  which would swallow most of a log count added to the raw logit.
  """
  shifted = logits - jax.lax.stop_gradient(jnp.max(logits, axis=-1, keepdims=True))
  return common.integer_label_ce(
    shifted + tau * jnp.log(counts).astype(logits.dtype)[None, :], labels
  )


def logit_adjusted_cross_entropy(
  logits: jax.typing.ArrayLike,
  labels: jax.typing.ArrayLike,
  *,
  class_counts: jax.typing.ArrayLike,
  tau: float = 1.0,
  class_weights: jax.typing.ArrayLike | None = None,
) -> jax.Array:
  r"""Logit-adjusted cross-entropy (Menon et al., 2021): softmax CE of the logits plus
  :math:`\tau \log \pi`, with :math:`\pi` the training set's class prior.

  :math:`\ell(z, y) = -\log \frac{e^{z_y + \tau \log \pi_y}}{\sum_j e^{z_j + \tau \log \pi_j}}`.
  Adding the log prior during training only makes the model's plain logits estimate the
  balanced (uniform-prior) posterior, so predict with ``argmax(logits)`` as usual: nothing
  changes at test time. Menon et al. use tau = 1 on CIFAR-LT. ABSGD's weights act on these
  per-sample losses like on any other.

  Args:
    logits: ``[B, C]`` floating logits.
    labels: ``[B]`` integer labels in [0, C).
    class_counts: ``[C]`` training-set sizes per class, all > 0 (the prior is their share).
    tau: the adjustment's scale, >= 0; 0 gives cross-entropy.
    class_weights: optional ``[C]`` weights applied per sample by label.

  Returns:
    ``[B]`` per-sample losses.

  Raises:
    ValueError: for tau < 0 or not finite, counts that are not all finite and > 0 or not of
      shape ``(C,)``, bad shapes or dtypes, or class_weights of the wrong shape.

  Examples:
    >>> import jax.numpy as jnp
    >>> from absgd_jax.losses import logit_adjusted_cross_entropy
    >>> logits = jnp.array([[2.0, 0.0], [0.0, 1.0]])
    >>> counts = jnp.array([90, 10])  # prior 0.9, 0.1
    >>> # Row 1: CE([2 + log 0.9, 0 + log 0.1], 0) = log(1 + e^(-2 - log 9)).
    >>> logit_adjusted_cross_entropy(logits, jnp.array([0, 1]), class_counts=counts).tolist()
    [0.0149, 1.4612]
  """
  fn = "logit_adjusted_cross_entropy"
  logits, labels, class_weights = common.prepare(logits, labels, class_weights, fn)
  counts = common.check_class_vector(
    common.check_counts(class_counts, fn), logits.shape[1], "class_counts", fn, jnp.float32
  )
  tau = common.check_number("tau", tau, 0.0, math.inf, hi_open=True)
  loss = _prior_adjusted_ce(logits, labels, counts, tau)
  return common.finish(loss, labels, logits.shape[1], class_weights)


def balanced_softmax_cross_entropy(
  logits: jax.typing.ArrayLike,
  labels: jax.typing.ArrayLike,
  *,
  class_counts: jax.typing.ArrayLike,
  class_weights: jax.typing.ArrayLike | None = None,
) -> jax.Array:
  r"""Balanced softmax cross-entropy (Ren et al., 2020).

  The softmax is reweighted by the class counts,
  :math:`p_y = n_y e^{z_y} / \sum_j n_j e^{z_j}`, and the loss is :math:`-\log p_y`. That is
  :func:`logit_adjusted_cross_entropy` with tau = 1, derived from a different argument (a
  label-shift correction of the likelihood); as there, predict with the plain logits.

  Args:
    logits: ``[B, C]`` floating logits.
    labels: ``[B]`` integer labels in [0, C).
    class_counts: ``[C]`` training-set sizes per class, all > 0.
    class_weights: optional ``[C]`` weights applied per sample by label.

  Returns:
    ``[B]`` per-sample losses.

  Raises:
    ValueError: for counts that are not all finite and > 0 or not of shape ``(C,)``, bad
      shapes or dtypes, or class_weights of the wrong shape.

  Examples:
    >>> import jax.numpy as jnp
    >>> from absgd_jax.losses import balanced_softmax_cross_entropy
    >>> logits = jnp.array([[2.0, 0.0], [0.0, 1.0]])
    >>> # Row 2: -log(10 e^1 / (90 e^0 + 10 e^1)) = log(1 + 9 / e).
    >>> balanced_softmax_cross_entropy(logits, jnp.array([0, 1]),
    ...                                class_counts=jnp.array([90, 10])).tolist()
    [0.0149, 1.4612]
  """
  fn = "balanced_softmax_cross_entropy"
  logits, labels, class_weights = common.prepare(logits, labels, class_weights, fn)
  counts = common.check_class_vector(
    common.check_counts(class_counts, fn), logits.shape[1], "class_counts", fn, jnp.float32
  )
  loss = _prior_adjusted_ce(logits, labels, counts, 1.0)
  return common.finish(loss, labels, logits.shape[1], class_weights)
