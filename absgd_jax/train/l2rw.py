"""Learning to reweight (Ren et al., 2018): the meta-learning baseline of the paper's tables.

Per step: a look-ahead SGD step on the training batch with per-sample weights ``eps`` (all 0),
the gradient of a clean, balanced validation batch's loss after that step with respect to
``eps``, and weights ``max(-grad, 0)`` normalised over the batch. The real step then uses those
weights. At ``eps = 0`` the gradient is ``-lr * <grad L_val, grad L_i>``: a sample is up-weighted
as much as its gradient agrees with the validation gradient.

It costs a forward-backward on the training batch, a forward-backward on the validation batch
through the look-ahead parameters, and a backward through the first backward: about three times
ABSGD's one forward-backward, the overhead the paper's Section 2 names. Written with
``jax.grad`` of a ``jax.grad``; no framework for meta-learning needed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax


def l2rw_weights(
  apply_fn: Callable[..., Any],
  params: Any,
  batch_stats: Any,
  loss_fn: Callable[[jax.Array, jax.Array], jax.Array],
  images: jax.Array,
  labels: jax.Array,
  mask: jax.Array,
  val_images: jax.Array,
  val_labels: jax.Array,
  inner_lr: jax.Array | float,
) -> jax.Array:
  """Per-sample weights ``[B]`` of the training batch, with mean 1 over the real samples.

  Args:
    apply_fn: the Linen ``model.apply``.
    params, batch_stats: the model's current variables (BatchNorm runs in train mode on both
      batches, and its updated statistics are discarded).
    loss_fn: per-sample training loss ``(logits, labels) -> [B]``.
    images, labels, mask: the training batch; ``mask`` marks real samples.
    val_images, val_labels: a batch of the clean, balanced validation set.
    inner_lr: the look-ahead step's learning rate (the current training rate).

  Returns:
    float32 ``[B]``, no gradient; all 0 when no sample's gradient agrees with the validation
    gradient (Ren et al. then skip the step).
  """
  variables = lambda p: {"params": p, "batch_stats": batch_stats}

  def logits_of(p, x):
    out, _ = apply_fn(variables(p), x, train=True, mutable=["batch_stats"])
    return out.astype(jnp.float32)

  def val_loss_after_lookahead(eps):
    def weighted_train_loss(p):
      return jnp.sum(jnp.where(mask, eps * loss_fn(logits_of(p, images), labels), 0.0))

    g = jax.grad(weighted_train_loss)(params)
    ahead = jax.tree.map(lambda p, d: p - inner_lr * d, params, g)
    val_losses = optax.softmax_cross_entropy_with_integer_labels(
      logits_of(ahead, val_images), val_labels
    )
    return jnp.mean(val_losses)

  grad_eps = jax.grad(val_loss_after_lookahead)(jnp.zeros(labels.shape, jnp.float32))
  w = jnp.where(mask, jnp.maximum(-grad_eps, 0.0), 0.0)
  total = jnp.sum(w)
  n = jnp.sum(mask, dtype=jnp.float32)
  return jax.lax.stop_gradient(
    jnp.where(total > 0, w * (n / jnp.where(total > 0, total, 1.0)), 0.0)
  )
