"""The train and eval steps: pure functions (state, batch) -> (state, metrics), jitted once.

One step serves every setting. Under ``jax.jit`` with a batch sharded over devices (one host
or many) it is written for the global batch and XLA inserts the collectives. Under ``pmap`` or
``shard_map``, pass ``axis_name`` (and a weigher and model built with it): the weights, the
normaliser of the loss, the gradients, BatchNorm statistics and the metrics are then reduced
over that axis, so that every mode computes the same global-batch step.

Two things differ between the modes by design. A mapped step folds the device index into the
augmentation key, so it draws other crops than ``jax.jit`` does. And train-mode BatchNorm sees
the padding rows of an epoch's last, padded batch (they are real images repeated, with weight
0 in the loss), as flax's BatchNorm takes no mask here.

The metrics are sums (of losses, of weights per class, of correct predictions...) so that
they add up exactly across steps, devices and hosts; the loop divides at the end of an epoch.
The per-step scalars (ESS, the largest weight, log s, lam) come from
:func:`absgd_jax.weight_stats`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax

import absgd_jax
from absgd_jax.train.batch_weigher import BatchWeigher, as_batch_weigher, current_lam, uniform

Batch = dict[str, jax.Array]  # images [B, ...], labels [B], mask [B]; optional flipped [B].
LossFn = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]  # (logits, labels, step) -> [B]
# (batch, key or None, train) -> batch with float32 "images" (and "val_images") ready for the model.
Preprocess = Callable[[Batch, jax.Array | None, bool], Batch]


class TrainState(flax.struct.PyTreeNode):
  """Everything that changes during training, and all of it is checkpointed.

  Attributes:
    step: int32 scalar, the optimizer steps so far.
    params: the model's parameters (a pytree of arrays).
    batch_stats: the model's BatchNorm statistics (a pytree; ``{}`` for a model without).
    opt_state: the optax optimizer's state.
    w_state: the weigher's state (:class:`absgd_jax.AbsgdWeightsState` for ABSGD).
    rng: uint32 ``[2]``, the augmentation key as raw key data (so checkpoints can hold it).

  Examples:
    >>> import jax, jax.numpy as jnp, absgd_jax
    >>> from absgd_jax.train import TrainState
    >>> params = {"w": jnp.zeros(3)}  # any pytree; a model's "params" collection in practice
    >>> state = TrainState(step=jnp.array(0), params=params, batch_stats={}, opt_state=(),
    ...                    w_state=absgd_jax.absgd_weights(lam=1.0).init(),
    ...                    rng=jax.random.key_data(jax.random.key(0)))
    >>> int(state.replace(step=state.step + 1).step)  # a frozen dataclass: replace, not assign
    1
  """

  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: optax.OptState
  w_state: absgd_jax.AbsgdWeightsState
  rng: jax.Array


def cast_images(batch: Batch, key: jax.Array | None = None, train: bool = False) -> Batch:
  """The default preprocessing: images (and validation images) as float32, nothing else."""
  del key, train
  return {
    k: v.astype(jnp.float32) if k in ("images", "val_images") else v for k, v in batch.items()
  }


def _psum(tree, axis_name):
  return tree if axis_name is None else jax.lax.psum(tree, axis_name)


def _augmentation_key(state: TrainState, axis_name: str | None) -> jax.Array:
  """The step's augmentation key; under a mapped axis each shard draws its own."""
  key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
  return key if axis_name is None else jax.random.fold_in(key, jax.lax.axis_index(axis_name))


def _step_weigher(weigher: Any, axis_name: str | None) -> BatchWeigher:
  """The step's batch weigher (uniform for None), refused if it reduces over another axis."""
  weigher = uniform(axis_name) if weigher is None else as_batch_weigher(weigher)
  if weigher.axis_name != axis_name:
    raise ValueError(
      f"make_train_step(axis_name={axis_name!r}) got a weigher that reduces over "
      f"{weigher.axis_name!r}: build it with axis_name={axis_name!r}, or each shard would "
      f"normalise by its own s (learning to reweight runs under jax.jit only)."
    )
  return weigher


def _objective(model, loss_fn, batch, variables, state, weigher) -> Callable:
  """ABSGD's loss as a function of the params: the weighted mean of the per-sample losses
  (Eq. 2), with the new BatchNorm statistics, weight state, weights, losses and logits."""

  def objective(params):
    logits, new_vars = model.apply(
      {**variables, "params": params}, batch["images"], train=True, mutable=["batch_stats"]
    )
    losses = loss_fn(logits.astype(jnp.float32), batch["labels"], state.step)
    loss, (w_state, weights) = absgd_jax.weighted_mean(
      losses, state.w_state, weigher, where=batch["mask"]
    )
    new_stats = new_vars.get("batch_stats", state.batch_stats)  # an MLP has none
    return loss, (new_stats, w_state, weights, losses, logits)

  return objective


def make_train_step(
  model: Any,
  tx: optax.GradientTransformation,
  loss_fn: LossFn,
  weigher: BatchWeigher | absgd_jax.Weigher | None = None,
  preprocess: Preprocess = cast_images,
  *,
  num_classes: int,
  axis_name: str | None = None,
) -> Callable[[TrainState, Batch], tuple[TrainState, dict[str, jax.Array]]]:
  """``train_step(state, batch) -> (state, metrics)``: ABSGD's step, a pure function to jit.

  ``batch``: ``"images"`` ``[B, ...]``, int ``"labels"`` and boolean ``"mask"`` ``[B]`` (False
  on padding). ``weigher``: a kit BatchWeigher, a :class:`absgd_jax.Weigher` or None (uniform);
  ``loss_fn(logits, labels, step) -> [B]``; ``preprocess``: augmentation and normalisation;
  ``axis_name``: the axis under ``pmap``/``shard_map``. Metrics: :func:`step_metrics`'.

  Examples:
    >>> import jax, jax.numpy as jnp, optax, absgd_jax
    >>> from absgd_jax.models import create_model
    >>> from absgd_jax.train import TrainState, make_train_step
    >>> model = create_model("mlp", num_classes=3)
    >>> params = model.init(jax.random.key(0), jnp.zeros((1, 4)), train=False)["params"]
    >>> tx, weigher = absgd_jax.absgd(0.1), absgd_jax.absgd_weights(lam=1.0)
    >>> state = TrainState(step=jnp.array(0), params=params, batch_stats={},
    ...                    opt_state=tx.init(params), w_state=weigher.init(),
    ...                    rng=jax.random.key_data(jax.random.key(0)))
    >>> ce = lambda z, y, step: optax.softmax_cross_entropy_with_integer_labels(z, y)
    >>> train_step = jax.jit(make_train_step(model, tx, ce, weigher, num_classes=3))
    >>> batch = {"images": jnp.ones((4, 4)), "labels": jnp.array([0, 1, 2, 0]),
    ...          "mask": jnp.array([True, True, True, False])}  # the last row is padding
    >>> state, metrics = train_step(state, batch)
    >>> int(state.step), float(metrics["count"])
    (1, 3.0)
  """
  step_weigher = _step_weigher(weigher, axis_name)

  def train_step(state: TrainState, batch: Batch):
    batch = preprocess(batch, _augmentation_key(state, axis_name), True)
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    batch_weigher = step_weigher.for_batch(batch, variables, state.step)

    objective = _objective(model, loss_fn, batch, variables, state, batch_weigher)
    # Under a mapped axis each shard's term is divided by the global count: their sum is the
    # global mean, whether or not shard_map tracks the params as replicated.
    value_and_grad = absgd_jax.global_value_and_grad(objective, axis_name, has_aux=True)
    (loss, aux), grads = value_and_grad(state.params)
    batch_stats, w_state, weights, losses, logits = aux
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    new_state = state.replace(
      step=state.step + 1,
      batch_stats=batch_stats,
      params=optax.apply_updates(state.params, updates),
      opt_state=opt_state,
      w_state=w_state,
    )
    metrics = step_metrics(batch, losses, weights, logits, w_state, num_classes, axis_name)
    return new_state, {**metrics, "wloss_sum": loss * metrics["count"]}

  return train_step


def step_metrics(
  batch: Batch,
  losses: jax.Array,
  weights: jax.Array,
  logits: jax.Array,
  w_state: absgd_jax.AbsgdWeightsState,
  num_classes: int,
  axis_name: str | None = None,
) -> dict[str, jax.Array]:
  """One step's sums over the real rows, and its weight statistics over the global batch."""
  mask, labels = batch["mask"], batch["labels"]
  m = mask.astype(jnp.float32)
  # class_mean_weights drops out-of-range labels: padding rows are sent to class C.
  class_weight_sum, class_count = absgd_jax.class_mean_weights(
    weights, jnp.where(mask, labels, num_classes), num_classes
  )
  sums = {
    "loss_sum": jnp.sum(jnp.where(mask, losses, 0.0)),
    "count": jnp.sum(m),
    "correct": jnp.sum((jnp.argmax(logits, -1) == labels) * m),
    "class_weight_sum": class_weight_sum,
    "class_count": class_count,
  }
  if "flipped" in batch:  # Two groups, clean (0) and flipped (1), as two "classes".
    group_weight, group_count = absgd_jax.class_mean_weights(
      weights, jnp.where(mask, batch["flipped"].astype(jnp.int32), 2), 2
    )
    sums.update(
      clean_weight_sum=group_weight[0],
      clean_count=group_count[0],
      flipped_weight_sum=group_weight[1],
      flipped_count=group_count[1],
    )
  sums = _psum(sums, axis_name)
  if axis_name is not None:  # ESS, KL and the largest weight are of the global batch.
    weights = _gather_replicated(weights, axis_name)
    mask = _gather_replicated(mask.astype(jnp.int32), axis_name) > 0
  stats = absgd_jax.weight_stats(weights, w_state, where=mask)
  return {
    **sums,
    "ess": stats["ess"],
    "max_weight": stats["max_weight"],
    "kl": stats["kl"],
    "log_s": stats["log_s"],
    "lam": current_lam(w_state),
  }


def _gather_replicated(x: jax.Array, axis_name: str) -> jax.Array:
  """The global ``[B]`` from each shard's rows, as a value shard_map knows is replicated.

  Each shard writes its rows into zeros at its offset and a psum joins them (all_gather's
  result is typed as varying, which shard_map's out_specs=P() refuses).
  """
  n, i = jax.lax.axis_size(axis_name), jax.lax.axis_index(axis_name)
  full = jnp.zeros((n * x.shape[0], *x.shape[1:]), x.dtype)
  return jax.lax.psum(jax.lax.dynamic_update_slice_in_dim(full, x, i * x.shape[0], 0), axis_name)


def make_eval_step(
  model: Any,
  *,
  num_classes: int,
  preprocess: Preprocess = cast_images,
  axis_name: str | None = None,
):
  """Builds ``eval_step(state, batch) -> {per-class correct [C], per-class count [C]}``.

  ``preprocess`` is the train step's, called with ``train=False`` (normalisation only).

  Args:
    model: the Flax Linen module of :func:`make_train_step`.
    num_classes: C.
    preprocess: ``(batch, key, train) -> batch``, the train step's.
    axis_name: the mapped axis under ``pmap``/``shard_map``; None under ``jax.jit``.

  Returns:
    ``eval_step(state, batch)``: for a batch as in :func:`make_train_step`, float32
    ``class_correct`` and ``class_count`` ``[C]`` over its real rows; their ratio summed over
    batches is the per-class accuracy.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> from absgd_jax.models import create_model
    >>> from absgd_jax.train import TrainState, make_eval_step
    >>> model = create_model("mlp", num_classes=3)
    >>> params = model.init(jax.random.key(0), jnp.zeros((1, 4)), train=False)["params"]
    >>> # Evaluation reads only the variables: no optimizer or weight state is needed.
    >>> state = TrainState(step=jnp.array(0), params=params, batch_stats={}, opt_state=(),
    ...                    w_state=None, rng=jnp.zeros(2, jnp.uint32))
    >>> eval_step = jax.jit(make_eval_step(model, num_classes=3))
    >>> batch = {"images": jnp.ones((4, 4)), "labels": jnp.array([0, 1, 2, 0]),
    ...          "mask": jnp.array([True, True, True, False])}  # the last row is padding
    >>> eval_step(state, batch)["class_count"]  # the padding row is not counted
    Array([1., 1., 1.], dtype=float32)
  """

  def eval_step(state: TrainState, batch: Batch):
    batch = preprocess(batch, None, False)
    logits = model.apply(
      {"params": state.params, "batch_stats": state.batch_stats}, batch["images"], train=False
    )
    correct = (jnp.argmax(logits, -1) == batch["labels"]).astype(jnp.float32)
    # Per-class sums of "correct" over the real rows (padding is sent to the dropped class C).
    class_correct, class_count = absgd_jax.class_mean_weights(
      correct, jnp.where(batch["mask"], batch["labels"], num_classes), num_classes
    )
    return _psum({"class_correct": class_correct, "class_count": class_count}, axis_name)

  return eval_step
