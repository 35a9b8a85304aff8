"""The train and eval steps: pure functions (state, batch) -> (state, metrics), jitted once.

One step serves every setting. Under ``jax.jit`` with a batch sharded over devices (one host
or many) it is written for the global batch and XLA inserts the collectives. Under ``pmap`` or
``shard_map``, pass ``axis_name``: the weights, the normaliser of the loss, the gradients,
BatchNorm statistics (through the model's ``axis_name``) and the metrics are then reduced over
that axis, so that every mode computes the same global-batch step.

Two things differ between the modes by design. With ``augment=True`` a mapped step folds the
device index into the augmentation key, so it draws other crops than ``jax.jit`` does. And
train-mode BatchNorm sees the padding rows of an epoch's last, padded batch (they are real
images repeated, with weight 0 in the loss), as flax's BatchNorm takes no mask here.

The metrics are sums (of losses, of weights per class, of correct predictions...) so that
they add up exactly across steps, devices and hosts; the loop divides at the end of an epoch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax

import absgd_jax
from absgd_jax.data.augment import augment_cifar, normalize
from absgd_jax.data.cifar import CIFAR10_MEAN, CIFAR10_STD
from absgd_jax.train.l2rw import l2rw_weights

Batch = dict[str, jax.Array]  # images [B, ...], labels [B], mask [B]; optional flipped [B].
LossFn = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]  # (logits, labels, step) -> [B]


class TrainState(flax.struct.PyTreeNode):
  """Everything that changes during training, and all of it is checkpointed."""

  step: jax.Array  # int32 scalar, optimizer steps so far.
  params: Any
  batch_stats: Any
  opt_state: optax.OptState
  w_state: absgd_jax.AbsgdWeightsState
  rng: jax.Array  # uint32 [2]: raw key data (checkpoint-friendly), for augmentation.


def _psum(x, axis_name):
  return x if axis_name is None else jax.lax.psum(x, axis_name)


def _device_varying(tree, axis_name):
  """Marks replicated params as per-device values before differentiating them.

  Under ``shard_map`` with its default ``check_vma=True``, the gradient of a replicated
  (device-invariant) input is already summed over the axis, so the explicit psum below would
  count it once per device. Marking the params varying makes each device's gradient its own
  term in every mode (``pmap``, and ``shard_map`` with or without the check).
  """
  pcast = getattr(jax.lax, "pcast", None)
  if pcast is not None:
    return pcast(tree, axis_name, to="varying")
  return jax.lax.pvary(tree, axis_name)  # jax releases before pcast


def make_train_step(
    model: Any,
    tx: optax.GradientTransformation,
    weigher: absgd_jax.WeightTransform | None,
    loss_fn: LossFn,
    *,
    num_classes: int,
    augment: bool = False,
    crop_padding: int = 4,
    frozen_stats_mask: Any = None,
    freeze_from_step: int | None = None,
    axis_name: str | None = None,
    l2rw_lr: Callable[[jax.Array], jax.Array] | None = None,
) -> Callable[[TrainState, Batch], tuple[TrainState, dict[str, jax.Array]]]:
  """Builds ``train_step(state, batch) -> (state, metrics)``.

  Args:
    model: a Flax Linen module called as ``model.apply(vars, x, train=...)``.
    tx: the optax optimizer (freezing, if any, is already inside it).
    weigher: ``absgd_weights(...)`` for ABSGD/ABAdam/EG, or None for unweighted SGD/Adam.
    loss_fn: per-sample loss ``(logits, labels, step) -> [B]`` (the step drives DRW).
    num_classes: C, for the per-class weight metrics.
    augment: CIFAR crop + flip + normalise on the device, keyed by (state.rng, step).
    crop_padding: the crop's zero padding in pixels (4 for 32 px images).
    frozen_stats_mask: pytree like ``batch_stats``; True where the module is frozen in stage 2,
      so its BatchNorm statistics stop moving too.
    freeze_from_step: the step at which that freezing starts.
    axis_name: the mapped axis under ``pmap``/``shard_map``; None under ``jax.jit``.
    l2rw_lr: for the learning-to-reweight baseline (:mod:`absgd_jax.train.l2rw`), the learning
      rate schedule of its look-ahead step; the batch then carries ``val_images`` and
      ``val_labels``. ``weigher`` must be None.
  """
  if l2rw_lr is not None and (weigher is not None or axis_name is not None):
    raise ValueError("learning to reweight replaces the ABSGD weights (weigher=None) and runs "
                     "under jax.jit only (axis_name=None).")

  def train_step(state: TrainState, batch: Batch):
    images, labels, mask = batch["images"], batch["labels"], batch["mask"]
    if augment:
      key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
      if axis_name is not None:  # Each shard augments its own samples differently.
        key = jax.random.fold_in(key, jax.lax.axis_index(axis_name))
      images = augment_cifar(key, images, padding=crop_padding)
    else:
      images = images.astype(jnp.float32)
    n_global = _psum(jnp.sum(mask, dtype=jnp.float32), axis_name)
    meta_weights = None
    if l2rw_lr is not None:
      val_images = batch["val_images"]
      if augment:
        val_images = augment_cifar(jax.random.fold_in(key, 1), val_images, padding=crop_padding)
      else:
        val_images = val_images.astype(jnp.float32)
      meta_weights = l2rw_weights(model.apply, state.params, state.batch_stats,
                                  lambda lg, lb: loss_fn(lg, lb, state.step), images, labels,
                                  mask, val_images, batch["val_labels"], l2rw_lr(state.step))

    def objective(params):
      logits, new_vars = model.apply({"params": params, "batch_stats": state.batch_stats},
                                     images, train=True, mutable=["batch_stats"])
      logits = logits.astype(jnp.float32)
      losses = loss_fn(logits, labels, state.step)
      if meta_weights is not None:
        weights, w_state = meta_weights, state.w_state
      elif weigher is None:
        weights, w_state = mask.astype(jnp.float32), state.w_state
      else:
        weights, w_state = weigher.update(losses, state.w_state, mask=mask)
      # Padding rows get no weight; where() keeps a NaN in a real row visible (divergence).
      weighted = jnp.sum(jnp.where(mask, weights * losses, 0.0)) / jnp.maximum(n_global, 1.0)
      new_stats = new_vars.get("batch_stats", state.batch_stats)  # an MLP has none
      return weighted, (new_stats, w_state, weights, losses, logits)

    grad_fn = jax.value_and_grad(objective, has_aux=True)
    params_in = state.params if axis_name is None else _device_varying(state.params, axis_name)
    (wloss, (batch_stats, w_state, weights, losses, logits)), grads = grad_fn(params_in)
    if axis_name is not None:
      grads = jax.lax.psum(grads, axis_name)  # Each shard's term is already / n_global.
      wloss = jax.lax.psum(wloss, axis_name)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    if frozen_stats_mask is not None and freeze_from_step is not None:
      frozen_now = state.step >= freeze_from_step
      batch_stats = jax.tree.map(lambda f, old, new: jnp.where(f & frozen_now, old, new),
                                 frozen_stats_mask, state.batch_stats, batch_stats)

    m = mask.astype(jnp.float32)
    # One pair of segment sums: per-class weight and per-class count of the real samples.
    w_sum = jax.ops.segment_sum(weights * m, labels, num_segments=num_classes)
    counts = jax.ops.segment_sum(m, labels, num_segments=num_classes)
    metrics = {
        "loss_sum": jnp.sum(jnp.where(mask, losses, 0.0)),
        "wloss_sum": wloss * n_global,
        "count": jnp.sum(m),
        "correct": jnp.sum((jnp.argmax(logits, -1) == labels) * m),
        "class_weight_sum": w_sum,
        "class_count": counts,
        "weight_sq_sum": jnp.sum((weights * m) ** 2),
        "weight_sum": jnp.sum(weights * m),
        "max_weight": jnp.max(weights * m),
    }
    if "flipped" in batch:
      flipped = batch["flipped"].astype(jnp.float32) * m
      metrics["flipped_weight_sum"] = jnp.sum(weights * flipped)
      metrics["flipped_count"] = jnp.sum(flipped)
      metrics["clean_weight_sum"] = jnp.sum(weights * (m - flipped))
      metrics["clean_count"] = jnp.sum(m - flipped)
    if axis_name is not None:
      maxw = jax.lax.pmax(metrics.pop("max_weight"), axis_name)
      metrics = jax.lax.psum(metrics, axis_name)
      metrics["max_weight"] = maxw
      metrics["wloss_sum"] = wloss * n_global
    # ESS and log s are per step: the loop averages ESS over the epoch's steps.
    metrics["ess"] = metrics["weight_sum"] ** 2 / jnp.maximum(metrics["weight_sq_sum"], 1e-30)
    metrics["log_s"] = w_state.log_s
    new_state = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats,
                              opt_state=opt_state, w_state=w_state)
    return new_state, metrics

  return train_step


def make_eval_step(model: Any, *, num_classes: int, normalize_cifar: bool = False,
                   normalize_stats: tuple[Any, Any] | None = None,
                   axis_name: str | None = None):
  """Builds ``eval_step(state, batch) -> {per-class correct [C], per-class count [C]}``.

  The images are normalised with CIFAR's statistics (``normalize_cifar``), or with
  ``normalize_stats = (mean, std)``, or only cast to float32.
  """
  if normalize_cifar and normalize_stats is None:
    normalize_stats = (CIFAR10_MEAN, CIFAR10_STD)

  def eval_step(state: TrainState, batch: Batch):
    images = batch["images"]
    images = (normalize(images, *normalize_stats) if normalize_stats is not None
              else images.astype(jnp.float32))
    logits = model.apply({"params": state.params, "batch_stats": state.batch_stats}, images,
                         train=False)
    m = batch["mask"].astype(jnp.float32)
    correct = (jnp.argmax(logits, -1) == batch["labels"]).astype(jnp.float32) * m
    out = {
        "class_correct": jax.ops.segment_sum(correct, batch["labels"], num_classes),
        "class_count": jax.ops.segment_sum(m, batch["labels"], num_classes),
    }
    return jax.tree.map(lambda x: _psum(x, axis_name), out)

  return eval_step
