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

The losses live in three modules by concern, all importable from here:
:mod:`~absgd_jax.losses.cross_entropies` (CE, focal, class weights),
:mod:`~absgd_jax.losses.imbalance` (LDAM margins, logit adjustment, balanced softmax) and
:mod:`~absgd_jax.losses.noise_robust` (SCE, GCE, TCE).

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

from absgd_jax.losses.cross_entropies import (
  class_balanced_weights,
  cross_entropy,
  drw_class_weights,
  focal_loss,
)
from absgd_jax.losses.imbalance import (
  balanced_softmax_cross_entropy,
  ldam_loss,
  ldam_margins,
  logit_adjusted_cross_entropy,
)
from absgd_jax.losses.noise_robust import (
  generalized_cross_entropy,
  symmetric_cross_entropy,
  truncated_generalized_cross_entropy,
)

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
