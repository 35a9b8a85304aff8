"""From a :class:`Config` to the objects a run is made of: pure functions, no loop.

Schedules (learning rate, lam), the per-sample loss, the weighting, the optimizer (with the
stage-2 freezing), the preprocessing and the initial train state. Each is a function of the
config (and the number of steps per epoch), so each can be built and tested alone.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from etils import epath

import absgd_jax
from absgd_jax import losses
from absgd_jax.data.augment import augment_cifar, normalize
from absgd_jax.data.facts import facts
from absgd_jax.models.freezing import trainable_mask
from absgd_jax.train import batch_weigher
from absgd_jax.train.checkpoint import Checkpointer, find_run_checkpoints
from absgd_jax.train.config import WEIGHTED_METHODS, Config
from absgd_jax.train.step import Batch, LossFn, Preprocess, TrainState, cast_images


def learning_rate_schedule(config: Config, steps_per_epoch: int) -> optax.Schedule:
  """Linear warm-up over ``warmup_epochs``, then step decay at ``lr_decay_epochs`` or a cosine
  decay to 0 at the last epoch (``lr_schedule``).

  Examples:
    >>> from absgd_jax.train import make_config
    >>> sched = learning_rate_schedule(make_config("digits-lt", lr_decay_epochs=(2,)), 10)
    >>> float(sched(19)), round(float(sched(20)), 6)
    (0.1, 0.01)
  """
  if config.schedule.lr_schedule == "cosine":
    decay = optax.cosine_decay_schedule(config.optim.lr, config.schedule.epochs * steps_per_epoch)
  else:
    boundaries = {
      int(e * steps_per_epoch): config.schedule.lr_decay_factor
      for e in config.schedule.lr_decay_epochs
    }
    decay = optax.piecewise_constant_schedule(config.optim.lr, boundaries)
  warmup_steps = config.schedule.warmup_epochs * steps_per_epoch
  if warmup_steps == 0:
    return decay
  warm = optax.linear_schedule(config.optim.lr / warmup_steps, config.optim.lr, warmup_steps - 1)
  # join_schedules hands later schedules (step - boundary); undo that for the decay steps.
  return optax.join_schedules([warm, lambda s: decay(s + warmup_steps)], [warmup_steps])


def weights_start_step(config: Config, steps_per_epoch: int) -> int | None:
  """The first step at which the method's per-sample weights act, or None if they never do."""
  if config.method not in WEIGHTED_METHODS + ("l2rw",):
    return None
  if config.method == "l2rw" or config.weighting.stage2_epoch <= 0:
    return 0
  return config.weighting.stage2_epoch * steps_per_epoch


def lam_schedule(config: Config, steps_per_epoch: int, lam: Any = None):
  """Section 3.6: lam = inf (momentum SGD) before ``stage2_epoch``, then the config's lam.

  ``lam`` replaces the config's lam, and may be a traced scalar (a sweep's member, under vmap).
  """
  lam = config.weighting.lam if lam is None else lam
  if config.weighting.stage2_epoch <= 0:
    return lam
  switch = config.weighting.stage2_epoch * steps_per_epoch
  return lambda count: jnp.where(count < switch, jnp.inf, lam)


def make_batch_weigher(
  config: Config, steps_per_epoch: int, apply_fn: Any, loss_fn: LossFn
) -> batch_weigher.BatchWeigher:
  """The method's weighting: uniform (sgd, adam), ABSGD (absgd, abadam), EG, or L2RW."""
  if config.method == "l2rw":
    return batch_weigher.l2rw(apply_fn, loss_fn, learning_rate_schedule(config, steps_per_epoch))
  if config.method not in WEIGHTED_METHODS:
    return batch_weigher.uniform()
  # EG: the current batch alone (how little that differs from ABSGD: absgd_weights' gamma).
  gamma = 1.0 if config.method == "eg" else config.weighting.gamma
  if config.weighting.kl_budget > 0:  # lam set online by the budget, from stage 2 on
    return batch_weigher.kl_budget(
      config.weighting.kl_budget,
      gamma,
      sign=1 if config.weighting.lam > 0 else -1,
      start_step=max(config.weighting.stage2_epoch, 0) * steps_per_epoch,
      guard=config.weighting.kl_guard,
    )
  return batch_weigher.absgd(lam_schedule(config, steps_per_epoch), gamma)


def make_loss_fn(config: Config, class_counts: np.ndarray, steps_per_epoch: int) -> LossFn:
  """The per-sample loss ``(logits, labels, step) -> [B]`` with the configured class weights."""
  counts = jnp.asarray(np.maximum(class_counts, 1), jnp.float32)  # An empty class: weight 1.

  def class_weights(step):
    if config.loss.class_weighting == "cb":
      return losses.class_balanced_weights(counts, config.loss.cb_beta)
    if config.loss.class_weighting == "drw":
      return losses.drw_class_weights(
        counts, step, config.loss.drw_epoch * steps_per_epoch, config.loss.cb_beta
      )
    return None

  # Each loss with its own settings (a thunk: only the configured loss's are computed); every
  # loss takes (logits, labels, *, class_weights, ...).
  loss, settings = {
    "ce": (losses.cross_entropy, dict),
    "focal": (losses.focal_loss, lambda: dict(gamma=config.loss.focal.gamma)),
    "ldam": (
      losses.ldam_loss,
      lambda: dict(
        margins=losses.ldam_margins(counts, config.loss.ldam.max_m), scale=config.loss.ldam.scale
      ),
    ),
    "la": (
      losses.logit_adjusted_cross_entropy,
      lambda: dict(class_counts=counts, tau=config.loss.la.tau),
    ),
    "bs": (losses.balanced_softmax_cross_entropy, lambda: dict(class_counts=counts)),
    "sce": (
      losses.symmetric_cross_entropy,
      lambda: dict(alpha=config.loss.sce.alpha, beta=config.loss.sce.beta),
    ),
    "gce": (losses.generalized_cross_entropy, lambda: dict(q=config.loss.gce.q)),
    "tce": (
      losses.truncated_generalized_cross_entropy,
      lambda: dict(q=config.loss.gce.q, k=config.loss.tce.k),
    ),
  }[config.loss.name]
  settings = settings()

  def loss_fn(logits, labels, step):
    return loss(logits, labels, class_weights=class_weights(step), **settings)

  return loss_fn


def make_optimizer(config: Config, steps_per_epoch: int, params: Any):
  """The optimizer and the trainable mask (None when all trains).

  Stage 2 may freeze all but the classifier (and last block): the frozen leaves' updates are
  scaled by a schedule that is 1 before ``stage2_epoch`` and 0 from it on.
  """
  lr = learning_rate_schedule(config, steps_per_epoch)
  if config.method in ("sgd", "absgd", "eg", "l2rw"):
    tx = absgd_jax.absgd(
      lr,
      momentum=config.optim.momentum,
      weight_decay=config.optim.weight_decay,
      momentum_form=config.optim.momentum_form,
    )
  else:
    tx = absgd_jax.abadam(lr, weight_decay=config.optim.weight_decay)
  if config.model.stage2_trainable == "all":  # (stage2_epoch = 0 freezes from the first step.)
    return tx, None
  trainable = trainable_mask(params, config.model.stage2_trainable)
  frozen = jax.tree.map(lambda t: not t, trainable)
  stop = optax.piecewise_constant_schedule(
    1.0, {config.weighting.stage2_epoch * steps_per_epoch: 0.0}
  )
  return optax.chain(tx, optax.masked(optax.scale_by_schedule(stop), frozen)), trainable


def make_preprocess(config: Config) -> Preprocess:
  """Augmentation (CIFAR crop + flip, training only) and normalisation, on the device.

  Images reach the step as uint8 (CIFAR, file lists; normalised here) or float (digits).
  """
  stats = facts(config.data.dataset).normalisation
  if stats is None:
    return cast_images
  # The crop and flip are CIFAR's (32 px, zero padding); file lists are cropped on the host.
  augment = config.input.augment and config.data.dataset in ("cifar10", "cifar100")

  def preprocess(batch: Batch, key: jax.Array | None, train: bool) -> Batch:
    out = dict(batch)
    for i, name in enumerate(k for k in ("images", "val_images") if k in batch):
      if train and augment:
        out[name] = augment_cifar(
          jax.random.fold_in(key, i) if i else key,
          batch[name],
          padding=config.input.crop_padding,
          mean=stats[0],
          std=stats[1],
        )
      else:
        out[name] = normalize(batch[name], *stats)
    return out

  return preprocess


def initial_weights(config: Config, variables: dict) -> dict:
  """``config.model.init_from``'s params and BatchNorm statistics, in the shape of ``variables``.

  A directory is an absgd_jax run (stage 1 of a two-stage run): its latest healthy checkpoint
  (:func:`~absgd_jax.train.checkpoint.find_run_checkpoints` says which folders count). A file
  is a torchvision / timm ResNet state dict (see :mod:`absgd_jax.models.pretrained`).
  """
  path = epath.Path(config.model.init_from)
  if not path.exists():
    raise FileNotFoundError(
      f"init_from={config.model.init_from!r} is neither a run directory nor a weights file. For "
      f"stage 2, run stage 1 first (its out_dir); for ImageNet weights, see "
      f"docs/large_scale.md."
    )
  if path.is_dir():  # The run's folder, or a preset's folder holding one run.
    ckpt = Checkpointer(find_run_checkpoints(config.model.init_from))
    if ckpt.latest_epoch() is None:
      raise FileNotFoundError(
        f"init_from={config.model.init_from!r} has no checkpoint under "
        f"checkpoints/: did its run finish an epoch?"
      )
    return ckpt.restore_variables(variables, head=config.model.init_head)
  from absgd_jax.models.pretrained import load_pretrained

  return load_pretrained(config.model.init_from, variables, head=config.model.init_head)


def init_variables(config: Config, model: Any, sample: jax.Array) -> dict:
  """The model's variables: a random init from ``config.seed``, or ``init_from``'s weights."""
  variables = jax.jit(lambda k: model.init(k, sample, train=False))(jax.random.key(config.seed))
  return initial_weights(config, variables) if config.model.init_from else variables


def init_state(
  config: Config,
  variables: dict,
  tx: optax.GradientTransformation,
  weigher: batch_weigher.BatchWeigher,
) -> TrainState:
  """Step 0 of a run: the variables, a fresh optimizer and weight state, the augmentation key.

  Frozen layers keep their weights but, in train mode, go on normalising with batch
  statistics and tracking them, as torch's requires_grad=False under model.train() does (the
  authors' code). Freezing the running statistics instead would train the head on
  batch-normalised features and test it on differently normalised ones.
  """
  params = variables["params"]
  key = jax.random.fold_in(jax.random.key(config.seed), 1)
  return TrainState(
    step=jnp.zeros([], jnp.int32),
    params=params,
    batch_stats=variables.get("batch_stats", {}),
    opt_state=tx.init(params),
    w_state=weigher.init(),
    rng=jax.random.key_data(key),
  )


def member_states(
  configs: list[Config], model: Any, exp: Any, loss_fn: LossFn, steps_per_epoch: int
) -> tuple[optax.GradientTransformation, list[TrainState]]:
  """The optimizer and each member's step-0 state: a member's init is its seed's, as its single
  run's would be, and its weight state its own weighting's."""
  first = configs[0]
  sample = (
    np.zeros((1, first.input.crop_size, first.input.crop_size, 3), np.float32)
    if first.streamed
    else np.asarray(exp.train.images[:1], np.float32)
  )
  variables: dict[int, dict] = {}
  for c in configs:
    if c.seed not in variables:
      variables[c.seed] = init_variables(c, model, sample)
  tx, _ = make_optimizer(first, steps_per_epoch, variables[first.seed]["params"])
  states = [
    init_state(
      c, variables[c.seed], tx, make_batch_weigher(c, steps_per_epoch, model.apply, loss_fn)
    )
    for c in configs
  ]
  return tx, states


def describe_weights(config: Config, members: list[Any], first_step: int) -> str:
  """The line that says the method's weights switch on, and with which lam."""
  line = f"{config.method} weights on from step {first_step}"
  if config.method == "l2rw":
    return line
  if config.weighting.kl_budget > 0:
    return line + f" (lam set by KL budget {config.weighting.kl_budget})"
  lams = {m.config.weighting.lam for m in members}
  return line + (" (lam per member)" if len(lams) > 1 else f" (lam={lams.pop()})")
