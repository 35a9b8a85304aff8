"""The cross-entropy family and class weights: CE (optionally label-smoothed), the focal loss,
and the class-balanced and deferred (DRW) class weights that any loss takes.

References:
  Lin, T.-Y. et al. (2017). Focal Loss for Dense Object Detection. ICCV.
  Cui, Y. et al. (2019). Class-Balanced Loss Based on Effective Number of Samples. CVPR.
  Cao, K. et al. (2019). Learning Imbalanced Datasets with Label-Distribution-Aware Margin
  Loss. NeurIPS. (DRW.)
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import optax

from absgd_jax import _checks
from absgd_jax.losses import _common as common


def cross_entropy(
  logits: jax.typing.ArrayLike,
  labels: jax.typing.ArrayLike,
  *,
  label_smoothing: float = 0.0,
  class_weights: jax.typing.ArrayLike | None = None,
) -> jax.Array:
  r"""Softmax cross-entropy per sample, optionally label-smoothed and class-weighted.

  Thin wrapper over optax's ``softmax_cross_entropy_with_integer_labels`` (on max-shifted
  logits, which keeps it exact for logits in the thousands) or, with smoothing,
  ``softmax_cross_entropy`` against ``optax.smooth_labels`` targets
  :math:`(1 - \epsilon)\,\mathrm{onehot}(y) + \epsilon / C`.

  Args:
    logits: ``[B, C]`` floating logits.
    labels: ``[B]`` integer labels in [0, C).
    label_smoothing: :math:`\epsilon` in [0, 1); 0 gives plain cross-entropy.
    class_weights: optional ``[C]`` weights; sample i's loss is multiplied by
      ``class_weights[labels[i]]`` (CB-CE with :func:`class_balanced_weights`).

  Returns:
    ``[B]`` per-sample losses (float32 for float32, bfloat16 or float16 logits).

  Raises:
    ValueError: for label_smoothing outside [0, 1), bad shapes or dtypes, or class_weights
      whose shape is not ``(C,)``.

  Examples:
    >>> import jax.numpy as jnp
    >>> from absgd_jax.losses import cross_entropy
    >>> logits = jnp.array([[2.0, 0.0, -1.0], [0.0, 1.0, 0.5]])
    >>> labels = jnp.array([0, 2])
    >>> cross_entropy(logits, labels).tolist()
    [0.1698, 1.1803]
    >>> # Row 2's true logit equals its mean logit, so smoothing leaves that row's loss as is.
    >>> cross_entropy(logits, labels, label_smoothing=0.1).tolist()
    [0.3365, 1.1803]
    >>> cross_entropy(logits, labels, class_weights=jnp.array([2.0, 1.0, 0.5])).tolist()
    [0.3397, 0.5901]
  """
  logits, labels, class_weights = common.prepare(logits, labels, class_weights, "cross_entropy")
  num_classes = logits.shape[1]
  eps = common.check_number("label_smoothing", label_smoothing, 0.0, 1.0, hi_open=True)
  if eps == 0.0:
    loss = common.integer_label_ce(logits, labels)
  else:
    targets = optax.smooth_labels(jax.nn.one_hot(labels, num_classes, dtype=logits.dtype), eps)
    loss = optax.losses.softmax_cross_entropy(logits, targets)
  return common.finish(loss, labels, num_classes, class_weights)


def focal_loss(
  logits: jax.typing.ArrayLike,
  labels: jax.typing.ArrayLike,
  *,
  gamma: float = 1.0,
  class_weights: jax.typing.ArrayLike | None = None,
) -> jax.Array:
  r"""Multi-class softmax focal loss :math:`-(1 - p_t)^\gamma \log p_t` (Lin et al., 2017).

  :math:`\log p_t` is the log-softmax of the true class and :math:`1 - p_t` is formed from
  it as ``-expm1(log p_t)``, never from a softmax.
  Class weights (CB-Focal, Cui et al., 2019) multiply the finished loss; they never enter
  :math:`p_t`.

  Args:
    logits: ``[B, C]`` floating logits.
    labels: ``[B]`` integer labels in [0, C).
    gamma: focusing parameter, >= 0; 0 gives cross-entropy. The default 1.0 is a
      moderate choice for long-tailed classification (Cui et al. tune gamma in
      {0.5, 1, 2} for CB-Focal); Lin et al. recommend 2.0 for dense detection.
    class_weights: optional ``[C]`` weights applied per sample by label.

  Returns:
    ``[B]`` per-sample losses.

  Raises:
    ValueError: for gamma < 0, bad shapes or dtypes, or class_weights of the wrong shape.

  Examples:
    >>> import jax.numpy as jnp
    >>> from absgd_jax.losses import focal_loss
    >>> logits = jnp.array([[2.0, 0.0, -1.0], [0.0, 1.0, 0.5]])
    >>> labels = jnp.array([0, 2])
    >>> focal_loss(logits, labels, gamma=2.0).tolist()
    [0.0041, 0.5665]
    >>> focal_loss(logits, labels, gamma=0.0).tolist()  # cross-entropy
    [0.1698, 1.1803]
  """
  logits, labels, class_weights = common.prepare(logits, labels, class_weights, "focal_loss")
  gamma = common.check_number("gamma", gamma, 0.0, math.inf, hi_open=True)
  log_pt = common.log_p_true(logits, labels)
  ce = -log_pt
  if gamma == 0.0:
    loss = ce  # Avoids 0 ** 0, whose gradient is NaN, at p_t = 1.
  else:
    # At p_t == 1 exactly (huge logits) d(1 - p)^gamma / dp is infinite for gamma < 1 and
    # the product rule would give inf * 0 = NaN; flooring at `tiny` keeps the gradient finite
    # while changing the loss by at most tiny^gamma * ce, with ce = 0 there anyway.
    tiny = jnp.finfo(logits.dtype).tiny
    modulator = jnp.power(jnp.maximum(common.one_minus_exp(log_pt), tiny), gamma)
    loss = modulator * ce
  return common.finish(loss, labels, logits.shape[1], class_weights)


def class_balanced_weights(class_counts: jax.typing.ArrayLike, beta: float = 0.9999) -> jax.Array:
  r"""Class-balanced weights from the "effective number" of samples (Cui et al., 2019).

  Class j's effective number is :math:`E_j = (1 - \beta^{n_j}) / (1 - \beta)`; its weight
  is :math:`1 / E_j`, normalised so that the C weights sum to C. ``beta = 0`` gives all
  ones; ``beta -> 1`` approaches inverse class frequency.
  :math:`1 - \beta^{n}` is computed as ``-expm1(n * log(beta))`` with ``log(beta)`` taken in
  float64: beta itself rounded to float32 (0.9999 -> 0.99989998) would move
  :math:`1 - \beta^{n}` by about 2e-4 relative.

  The weights apply to any loss through its ``class_weights`` argument (CB-CE, CB-Focal,
  CB-LDAM).

  Args:
    class_counts: ``[C]`` training-set sizes per class, all > 0 (NumPy or JAX, int or float).
    beta: in [0, 1); the default 0.9999 is Cui et al.'s choice for long-tailed CIFAR.

  Returns:
    ``[C]`` float32 weights summing to C.

  Raises:
    ValueError: for counts that are not all finite and > 0, or beta outside [0, 1).

  Examples:
    >>> import numpy as np
    >>> from absgd_jax.losses import class_balanced_weights
    >>> w = class_balanced_weights(np.array([5000, 500, 50]), beta=0.999)
    >>> w.tolist()
    [0.1256, 0.3170, 2.5574]
    >>> round(float(w.sum()), 4)
    3.0
  """
  counts = common.check_counts(class_counts, "class_balanced_weights")
  beta = common.check_number("beta", beta, 0.0, 1.0, hi_open=True)
  log_beta = math.log(beta) if beta > 0.0 else -math.inf
  # The (1 - beta) numerator is common to every class and cancels in the normalisation.
  inv_effective = 1.0 / -jnp.expm1(counts * log_beta)
  return (inv_effective * (counts.shape[0] / jnp.sum(inv_effective))).astype(jnp.float32)


def drw_class_weights(
  class_counts: jax.typing.ArrayLike,
  step_or_epoch: jax.typing.ArrayLike,
  switch_at: jax.typing.ArrayLike,
  beta: float = 0.9999,
) -> jax.Array:
  """Deferred re-weighting (DRW, Cao et al., 2019): class weights that switch on late.

  Returns all ones while ``step_or_epoch < switch_at`` and the
  :func:`class_balanced_weights` from then on. The choice is a ``jnp.where``, so a traced
  step (inside ``jit`` or ``lax.scan``) switches without a recompile. Cao et al. switch at
  epoch 160 of 200 on CIFAR.

  Args:
    class_counts: ``[C]`` training-set sizes per class, all > 0.
    step_or_epoch: scalar step or epoch counter, int or float, possibly traced.
    switch_at: scalar step or epoch at which the weights switch on, >= 0, possibly traced.
    beta: effective-number parameter in [0, 1) for :func:`class_balanced_weights`.

  Returns:
    ``[C]`` float32 weights.

  Raises:
    ValueError: for bad counts or beta, a non-scalar step or switch_at, or a concrete
      switch_at < 0.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> from absgd_jax.losses import drw_class_weights
    >>> counts = jnp.array([5000, 500, 50])
    >>> weights_at = jax.jit(lambda step: drw_class_weights(counts, step, 160, beta=0.999))
    >>> weights_at(159).tolist()
    [1.0, 1.0, 1.0]
    >>> weights_at(160).tolist()
    [0.1256, 0.3170, 2.5574]
  """
  fn = "drw_class_weights"
  cb = class_balanced_weights(class_counts, beta)
  switch_value = _checks.concrete(switch_at)
  step = jnp.asarray(step_or_epoch)
  switch = jnp.asarray(switch_at)
  for name, x in (("step_or_epoch", step), ("switch_at", switch)):
    if x.ndim != 0:
      raise ValueError(f"{fn}: {name} must be a scalar; got shape {x.shape}.")
  if switch_value is not None:
    with jax.ensure_compile_time_eval():
      negative = bool(switch_value < 0)
    if negative:
      raise ValueError(f"{fn}: switch_at must be >= 0; got {switch_at!r}.")
  return jnp.where(step >= switch, cb, jnp.ones_like(cb))
