"""Per-sample losses for imbalanced and noisy-label training, ready for :func:`absgd_weights`.

ABSGD is loss-independent: it re-weights whatever per-sample losses it is given. This module
holds the losses the paper pairs it with (Sections 4 and 5, Tables 1, 2 and 6):

- imbalance: :func:`cross_entropy` (optionally label-smoothed), :func:`focal_loss`,
  :func:`ldam_loss` with :func:`ldam_margins`, the prior-corrected
  :func:`logit_adjusted_cross_entropy` and :func:`balanced_softmax_cross_entropy` (the
  strongest cheap baselines for long-tailed data, beside the paper's), and class weights for
  any loss from
  :func:`class_balanced_weights` (CB-CE, CB-Focal, CB-LDAM) or :func:`drw_class_weights`
  (deferred re-weighting);
- label noise: :func:`symmetric_cross_entropy` (SCE), :func:`generalized_cross_entropy`
  (GCE) and :func:`truncated_generalized_cross_entropy` (TCE, the truncated Lq loss).

Every loss has one signature, ``loss(logits [B, C], labels [B], *, class_weights=None,
...) -> [B]``: its own settings, like the class weights, come by keyword, and nothing is
reduced. Conventions shared by all of them:

- Numerics. Everything is computed from log-probabilities (``jax.nn.log_softmax``, or optax's
  cross-entropy on max-shifted logits), never the log of a softmax, and in float32:
  bfloat16 and float16 logits are upcast first, float64 logits (under ``jax_enable_x64``)
  stay float64. Logits of +-1e4 give finite, accurate losses and gradients.
- Validation. Bad hyper-parameters, shapes and dtypes raise ``ValueError`` when the function
  is called or traced, never from inside a compiled computation. Labels that are concrete
  arrays are also range-checked; under ``jit`` that is impossible, so a label outside
  [0, C) yields a NaN loss instead (which :func:`absgd_weights` gives weight 0) rather than
  a gather silently wrapping -1 to class C - 1.
- Class weights. ``class_weights [C]`` multiply each sample's loss by the weight of its
  label, after the loss itself is formed, so they never change the probabilities inside it.

Examples:
  >>> import jax.numpy as jnp
  >>> from absgd_jax import losses
  >>> logits = jnp.array([[2.0, 0.0, -1.0], [0.0, 1.0, 0.5]])
  >>> labels = jnp.array([0, 2])
  >>> losses.cross_entropy(logits, labels).tolist()
  [0.1698, 1.1803]
  >>> # CB-Focal per-sample losses, then ABSGD's weights on top of them.
  >>> import absgd_jax
  >>> w = losses.class_balanced_weights(jnp.array([5000, 500, 50]), beta=0.999)
  >>> per_sample = losses.focal_loss(logits, labels, class_weights=w)
  >>> transform = absgd_jax.absgd_weights(lam=1.0)
  >>> weights, state = transform.update(per_sample, transform.init())
  >>> objective = jnp.mean(weights * per_sample)
  >>> per_sample.shape, weights.shape
  ((2,), (2,))
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import optax

__all__ = [
  "balanced_softmax_cross_entropy",
  "class_balanced_weights",
  "cross_entropy",
  "drw_class_weights",
  "focal_loss",
  "generalized_cross_entropy",
  "ldam_loss",
  "ldam_margins",
  "logit_adjusted_cross_entropy",
  "symmetric_cross_entropy",
  "truncated_generalized_cross_entropy",
]


# --------------------------------------------------------------------------------------------
# Validation helpers. They run in Python at call or trace time; value checks are skipped for
# traced arrays, whose values do not exist yet.
# --------------------------------------------------------------------------------------------


def _concrete(x: jax.typing.ArrayLike) -> jax.Array | None:
  """``x`` as a concrete array, or None when it is traced and has no value yet.

  Inside ``jit``, ``jnp.asarray`` stages even a NumPy constant into a tracer, so inputs whose
  values are known (closed-over class counts, say) are converted eagerly to keep them checkable.
  """
  if isinstance(x, jax.core.Tracer):
    return None
  with jax.ensure_compile_time_eval():
    return jnp.asarray(x)


def _check_number(
  name: str, value: float, lo: float, hi: float, *, lo_open: bool = False, hi_open: bool = False
) -> float:
  """Returns ``float(value)`` if it lies in the interval, else raises a ValueError."""
  try:
    v = float(value)
  except (TypeError, jax.errors.ConcretizationTypeError) as e:
    raise ValueError(
      f"{name} must be a Python number (it is a static hyper-parameter); got {value!r}."
    ) from e
  too_low = v <= lo if lo_open else v < lo
  too_high = v >= hi if hi_open else v > hi
  if math.isnan(v) or too_low or too_high:
    interval = f"{'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
    raise ValueError(f"{name} must lie in {interval}; got {value!r}.")
  return v


def _check_inputs(
  logits: jax.typing.ArrayLike, labels: jax.typing.ArrayLike, fn: str
) -> tuple[jax.Array, jax.Array]:
  """Checks shapes and dtypes, upcasts logits to at least float32."""
  labels_value = _concrete(labels)
  logits = jnp.asarray(logits)
  labels = jnp.asarray(labels)
  if logits.ndim != 2:
    raise ValueError(f"{fn}: logits must be 2-D [batch, num_classes]; got shape {logits.shape}.")
  if logits.shape[1] < 1:
    raise ValueError(f"{fn}: logits need at least one class; got shape {logits.shape}.")
  if not jnp.issubdtype(logits.dtype, jnp.floating):
    raise ValueError(f"{fn}: logits must be floating point; got dtype {logits.dtype}.")
  if labels.ndim != 1 or labels.shape[0] != logits.shape[0]:
    raise ValueError(
      f"{fn}: labels must be 1-D of length batch = {logits.shape[0]} "
      f"(logits shape {logits.shape}); got shape {labels.shape}."
    )
  if not jnp.issubdtype(labels.dtype, jnp.integer):
    raise ValueError(f"{fn}: labels must be integer class indices; got dtype {labels.dtype}.")
  num_classes = logits.shape[1]
  if labels_value is not None and labels_value.size:
    with jax.ensure_compile_time_eval():
      lo, hi = int(jnp.min(labels_value)), int(jnp.max(labels_value))
    if lo < 0 or hi >= num_classes:
      bad = lo if lo < 0 else hi
      raise ValueError(f"{fn}: labels must lie in [0, {num_classes}); got label {bad}.")
  # Half-precision softmax loses too much for small probabilities; float64 stays float64.
  dtype = jnp.promote_types(logits.dtype, jnp.float32)
  return logits.astype(dtype), labels


def _prepare(
  logits: jax.typing.ArrayLike,
  labels: jax.typing.ArrayLike,
  class_weights: jax.typing.ArrayLike | None,
  fn: str,
) -> tuple[jax.Array, jax.Array, jax.Array | None]:
  """The checks every loss opens with: logits and labels (:func:`_check_inputs`) and the
  optional ``[C]`` class weights, cast to the logits' dtype."""
  logits, labels = _check_inputs(logits, labels, fn)
  if class_weights is not None:
    class_weights = _check_class_vector(
      class_weights, logits.shape[1], "class_weights", fn, logits.dtype
    )
  return logits, labels, class_weights


def _check_class_vector(
  x: jax.typing.ArrayLike, num_classes: int, name: str, fn: str, dtype: jnp.dtype
) -> jax.Array:
  value = _concrete(x)
  x = jnp.asarray(x)
  if x.shape != (num_classes,):
    raise ValueError(
      f"{fn}: {name} must have shape ({num_classes},), one entry per class; got shape {x.shape}."
    )
  if value is not None:
    with jax.ensure_compile_time_eval():
      finite = bool(jnp.all(jnp.isfinite(value)))
    if not finite:
      raise ValueError(f"{fn}: {name} must be finite; got {value}.")
  return x.astype(dtype)


def _check_counts(class_counts: jax.typing.ArrayLike, fn: str) -> jax.Array:
  value = _concrete(class_counts)
  counts = jnp.asarray(class_counts)
  if counts.ndim != 1 or counts.shape[0] == 0:
    raise ValueError(
      f"{fn}: class_counts must be a non-empty 1-D array [num_classes]; got shape {counts.shape}."
    )
  if not (jnp.issubdtype(counts.dtype, jnp.integer) or jnp.issubdtype(counts.dtype, jnp.floating)):
    raise ValueError(f"{fn}: class_counts must be numeric; got dtype {counts.dtype}.")
  if value is not None:
    with jax.ensure_compile_time_eval():
      bad = ~(jnp.isfinite(value) & (value > 0))
      j = int(jnp.argmax(bad)) if bool(jnp.any(bad)) else -1
      bad_count = value[j].item()
    if j >= 0:
      raise ValueError(
        f"{fn}: every class count must be a finite number > 0; class {j} has count {bad_count}."
      )
  return counts.astype(jnp.float32)


# --------------------------------------------------------------------------------------------
# Shared pieces of the losses.
# --------------------------------------------------------------------------------------------


def _true_class(values: jax.Array, labels: jax.Array) -> jax.Array:
  """values[i, labels[i]]. Out-of-range labels are turned into NaN losses by `_finish`."""
  return jnp.take_along_axis(values, labels[:, None], axis=-1)[:, 0]


def _log_p_true(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """log p_y, the log-softmax of each sample's true class."""
  return _true_class(jax.nn.log_softmax(logits, axis=-1), labels)


def _finish(
  loss: jax.Array, labels: jax.Array, num_classes: int, class_weights: jax.Array | None
) -> jax.Array:
  if class_weights is not None:
    loss = loss * class_weights[labels]
  # A traced out-of-range label cannot raise; without this a negative label would wrap to a
  # real class in the gathers above (jnp indexing semantics) and give a plausible but wrong
  # loss.
  ok = (labels >= 0) & (labels < num_classes)
  return jnp.where(ok, loss, jnp.nan)


def _integer_label_ce(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """optax's integer-label cross-entropy, on logits shifted so that the row maximum is 0.

  optax forms logsumexp(z) - z_y, which cancels catastrophically for large logits (at 1e4
  the float32 spacing is 1e-3, so a loss of log 2 came out as 0.6934). CE is invariant to
  a per-row shift; after it both terms are O(log C) and exact to float32 precision. The
  shift carries no gradient, which is exact for a shift-invariant function.
  """
  shift = jax.lax.stop_gradient(jnp.max(logits, axis=-1, keepdims=True))
  return optax.losses.softmax_cross_entropy_with_integer_labels(logits - shift, labels)


def _one_minus_exp(log_p: jax.Array) -> jax.Array:
  """1 - p from log p, accurate when p is close to 1 (where 1 - exp() cancels)."""
  return -jnp.expm1(log_p)


# --------------------------------------------------------------------------------------------
# Losses for class imbalance.
# --------------------------------------------------------------------------------------------


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
  logits, labels, class_weights = _prepare(logits, labels, class_weights, "cross_entropy")
  num_classes = logits.shape[1]
  eps = _check_number("label_smoothing", label_smoothing, 0.0, 1.0, hi_open=True)
  if eps == 0.0:
    loss = _integer_label_ce(logits, labels)
  else:
    targets = optax.smooth_labels(jax.nn.one_hot(labels, num_classes, dtype=logits.dtype), eps)
    loss = optax.losses.softmax_cross_entropy(logits, targets)
  return _finish(loss, labels, num_classes, class_weights)


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
  logits, labels, class_weights = _prepare(logits, labels, class_weights, "focal_loss")
  gamma = _check_number("gamma", gamma, 0.0, math.inf, hi_open=True)
  log_pt = _log_p_true(logits, labels)
  ce = -log_pt
  if gamma == 0.0:
    loss = ce  # Avoids 0 ** 0, whose gradient is NaN, at p_t = 1.
  else:
    # At p_t == 1 exactly (huge logits) d(1 - p)^gamma / dp is infinite for gamma < 1 and
    # the product rule would give inf * 0 = NaN; flooring at `tiny` keeps the gradient finite
    # while changing the loss by at most tiny^gamma * ce, with ce = 0 there anyway.
    tiny = jnp.finfo(logits.dtype).tiny
    modulator = jnp.power(jnp.maximum(_one_minus_exp(log_pt), tiny), gamma)
    loss = modulator * ce
  return _finish(loss, labels, logits.shape[1], class_weights)


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
  counts = _check_counts(class_counts, "ldam_margins")
  max_m = _check_number("max_m", max_m, 0.0, math.inf, hi_open=True)
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
  logits, labels, class_weights = _prepare(logits, labels, class_weights, fn)
  num_classes = logits.shape[1]
  margins = _check_class_vector(margins, num_classes, "margins", fn, logits.dtype)
  scale = _check_number("scale", scale, 0.0, math.inf, lo_open=True, hi_open=True)
  true_mask = jax.nn.one_hot(labels, num_classes, dtype=logits.dtype)
  shifted = logits - true_mask * margins[None, :]
  loss = _integer_label_ce(scale * shifted, labels)
  return _finish(loss, labels, num_classes, class_weights)


def _prior_adjusted_ce(
  logits: jax.Array, labels: jax.Array, counts: jax.Array, tau: float
) -> jax.Array:
  """CE(z + tau * log n, y). A per-row constant does not change a softmax, so log counts and
  log priors (log n - log N) give the same loss; counts avoid one more rounding.

  The logits are max-shifted before the adjustment is added: at 1e4 float32's spacing is 1e-3,
  which would swallow most of a log count added to the raw logit.
  """
  shifted = logits - jax.lax.stop_gradient(jnp.max(logits, axis=-1, keepdims=True))
  return _integer_label_ce(shifted + tau * jnp.log(counts).astype(logits.dtype)[None, :], labels)


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
  logits, labels, class_weights = _prepare(logits, labels, class_weights, fn)
  counts = _check_class_vector(
    _check_counts(class_counts, fn), logits.shape[1], "class_counts", fn, jnp.float32
  )
  tau = _check_number("tau", tau, 0.0, math.inf, hi_open=True)
  loss = _prior_adjusted_ce(logits, labels, counts, tau)
  return _finish(loss, labels, logits.shape[1], class_weights)


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
  logits, labels, class_weights = _prepare(logits, labels, class_weights, fn)
  counts = _check_class_vector(
    _check_counts(class_counts, fn), logits.shape[1], "class_counts", fn, jnp.float32
  )
  loss = _prior_adjusted_ce(logits, labels, counts, 1.0)
  return _finish(loss, labels, logits.shape[1], class_weights)


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
  counts = _check_counts(class_counts, "class_balanced_weights")
  beta = _check_number("beta", beta, 0.0, 1.0, hi_open=True)
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
  switch_value = _concrete(switch_at)
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


# --------------------------------------------------------------------------------------------
# Losses for label noise.
# --------------------------------------------------------------------------------------------


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
  logits, labels, class_weights = _prepare(logits, labels, class_weights, "symmetric_cross_entropy")
  alpha = _check_number("alpha", alpha, 0.0, math.inf, hi_open=True)
  beta = _check_number("beta", beta, 0.0, math.inf, hi_open=True)
  log_zero = _check_number("log_zero", log_zero, -math.inf, 0.0, lo_open=True, hi_open=True)
  log_py = _log_p_true(logits, labels)
  rce = -log_zero * _one_minus_exp(log_py)
  return _finish(alpha * -log_py + beta * rce, labels, logits.shape[1], class_weights)


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
  logits, labels, class_weights = _prepare(
    logits, labels, class_weights, "generalized_cross_entropy"
  )
  q = _check_number("q", q, 0.0, 1.0, lo_open=True)
  loss = _one_minus_exp(q * _log_p_true(logits, labels)) / q
  return _finish(loss, labels, logits.shape[1], class_weights)


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
  logits, labels, class_weights = _prepare(
    logits, labels, class_weights, "truncated_generalized_cross_entropy"
  )
  q = _check_number("q", q, 0.0, 1.0, lo_open=True)
  k = _check_number("k", k, 0.0, 1.0, hi_open=True)
  log_k = math.log(k) if k > 0.0 else -math.inf
  floor = -math.expm1(q * log_k) / q
  log_py = _log_p_true(logits, labels)
  gce = _one_minus_exp(q * log_py) / q
  loss = jnp.where(log_py > log_k, gce, jnp.asarray(floor, gce.dtype))
  return _finish(loss, labels, logits.shape[1], class_weights)
