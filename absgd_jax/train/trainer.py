"""The training loop: one jitted step, data-parallel over every device of every host.

Parallelism is ``jax.jit`` over a 1-D ``("data",)`` mesh of all devices: the batch is sharded
along it, the state is replicated, and XLA makes the step's reductions global (the ABSGD
normaliser, BatchNorm statistics, the gradient mean). With several processes
(``jax.distributed.initialize()`` before the Trainer is made), each process gathers only its
own rows of the global batch, and ``jax.make_array_from_process_local_data`` assembles them.
The order of the global batch depends only on (seed, epoch), so it is the same on one device
or many, and on resume.
"""

from __future__ import annotations

import json
import math
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from etils import epath
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

import absgd_jax
from absgd_jax import losses as L
from absgd_jax.data import epoch_batches, num_batches
from absgd_jax.data.augment import normalize
from absgd_jax.data.cifar import CIFAR10_MEAN, CIFAR10_STD
from absgd_jax.data.imagenet_transforms import IMAGENET_MEAN, IMAGENET_STD
from absgd_jax.models import create_model
from absgd_jax.models.freezing import trainable_mask
from absgd_jax.train import experiment_data
from absgd_jax.train.checkpoint import Checkpointer
from absgd_jax.train.config import Config
from absgd_jax.train.metrics import eval_metrics, is_finite_number, train_epoch_metrics
from absgd_jax.train.step import TrainState, make_eval_step, make_train_step

WEIGHTED_METHODS = ("absgd", "abadam", "eg")


class DivergenceError(RuntimeError):
  """The training loss became NaN or infinite."""


def learning_rate_schedule(config: Config, steps_per_epoch: int) -> optax.Schedule:
  """Linear warm-up over ``warmup_epochs``, then step decay at ``lr_decay_epochs`` or a cosine
  decay to 0 at the last epoch (``lr_schedule``)."""
  if config.lr_schedule == "cosine":
    decay = optax.cosine_decay_schedule(config.lr, config.epochs * steps_per_epoch)
  else:
    boundaries = {int(e * steps_per_epoch): config.lr_decay_factor
                  for e in config.lr_decay_epochs}
    decay = optax.piecewise_constant_schedule(config.lr, boundaries)
  warmup_steps = config.warmup_epochs * steps_per_epoch
  if warmup_steps == 0:
    return decay
  warm = optax.linear_schedule(config.lr / warmup_steps, config.lr, warmup_steps - 1)
  # join_schedules hands later schedules (step - boundary); undo that for the decay steps.
  return optax.join_schedules([warm, lambda s: decay(s + warmup_steps)], [warmup_steps])


def lam_schedule(config: Config, steps_per_epoch: int):
  """Section 3.6: lam = inf (momentum SGD) before ``stage2_epoch``, then ``config.lam``."""
  if config.stage2_epoch <= 0:
    return config.lam
  switch = config.stage2_epoch * steps_per_epoch
  return lambda count: jnp.where(count < switch, jnp.inf, config.lam)


def make_weigher(config: Config, steps_per_epoch: int, axis_name=None):
  if config.method not in WEIGHTED_METHODS:
    return None
  gamma = 1.0 if config.method == "eg" else config.gamma  # EG: the current batch alone.
  return absgd_jax.absgd_weights(lam_schedule(config, steps_per_epoch), gamma,
                                 axis_name=axis_name)


def make_loss_fn(config: Config, class_counts: np.ndarray, steps_per_epoch: int):
  """The per-sample loss ``(logits, labels, step) -> [B]`` with the configured class weights."""
  counts = jnp.asarray(np.maximum(class_counts, 1), jnp.float32)  # An empty class: weight 1.

  def class_weights(step):
    if config.class_weighting == "cb":
      return L.class_balanced_weights(counts, config.cb_beta)
    if config.class_weighting == "drw":
      return L.drw_class_weights(counts, step, config.drw_epoch * steps_per_epoch,
                                 config.cb_beta)
    return None

  margins = L.ldam_margins(counts, config.ldam_max_m) if config.loss == "ldam" else None

  def loss_fn(logits, labels, step):
    cw = class_weights(step)
    if config.loss == "ce":
      return L.cross_entropy(logits, labels, class_weights=cw)
    if config.loss == "focal":
      return L.focal_loss(logits, labels, gamma=config.focal_gamma, class_weights=cw)
    if config.loss == "ldam":
      return L.ldam_loss(logits, labels, margins, scale=config.ldam_scale, class_weights=cw)
    if cw is not None:
      raise ValueError(f"class_weighting={config.class_weighting!r} is for the imbalance "
                       f"losses (ce, focal, ldam), not {config.loss!r}.")
    if config.loss == "sce":
      return L.symmetric_cross_entropy(logits, labels, alpha=config.sce_alpha,
                                       beta=config.sce_beta)
    if config.loss == "gce":
      return L.generalized_cross_entropy(logits, labels, q=config.gce_q)
    return L.truncated_generalized_cross_entropy(logits, labels, q=config.gce_q, k=config.tce_k)

  return loss_fn


def _zero_updates_from(step: int) -> optax.GradientTransformation:
  """Zeroes the updates it sees from ``step`` on (the frozen part of stage 2)."""

  def init_fn(params):
    del params
    return optax.ScaleByScheduleState(count=jnp.zeros([], jnp.int32))

  def update_fn(updates, state, params=None):
    del params
    keep = (state.count < step).astype(jnp.float32)
    updates = jax.tree.map(lambda u: u * keep.astype(u.dtype), updates)
    return updates, optax.ScaleByScheduleState(count=optax.safe_int32_increment(state.count))

  return optax.GradientTransformation(init_fn, update_fn)


def make_optimizer(config: Config, steps_per_epoch: int, params: Any):
  """The optimizer; stage 2 may freeze all but the classifier (and last block) by masking."""
  lr = learning_rate_schedule(config, steps_per_epoch)
  if config.method in ("sgd", "absgd", "eg", "l2rw"):
    tx = absgd_jax.absgd(lr, momentum=config.momentum, weight_decay=config.weight_decay,
                         momentum_form=config.momentum_form)
  else:
    tx = absgd_jax.abadam(lr, weight_decay=config.weight_decay)
  if config.stage2_trainable == "all":  # (stage2_epoch = 0 freezes from the first step.)
    return tx, None
  trainable = trainable_mask(params, config.stage2_trainable)
  frozen = jax.tree.map(lambda t: not t, trainable)
  freeze = optax.masked(_zero_updates_from(config.stage2_epoch * steps_per_epoch), frozen)
  return optax.chain(tx, freeze), trainable


def initial_weights(config: Config, variables: dict) -> dict:
  """``config.init_from``'s params and BatchNorm statistics, in the shape of ``variables``.

  A directory is an absgd_jax run (stage 1 of a two-stage run): its latest checkpoint. A file
  is a torchvision / timm ResNet state dict (see :mod:`absgd_jax.models.pretrained`).
  """
  path = epath.Path(config.init_from)
  if not path.exists():
    raise FileNotFoundError(
        f"init_from={config.init_from!r} is neither a run directory nor a weights file. For "
        f"stage 2, run stage 1 first (its out_dir); for ImageNet weights, see "
        f"docs/large_scale.md.")
  if path.is_dir():
    ckpt = Checkpointer(str(path / "checkpoints"))
    if ckpt.latest_epoch() is None:
      raise FileNotFoundError(f"init_from={config.init_from!r} has no checkpoint under "
                              f"checkpoints/: did its run finish an epoch?")
    return ckpt.restore_variables(variables, head=config.init_head)
  from absgd_jax.models.pretrained import load_pretrained
  return load_pretrained(config.init_from, variables, head=config.init_head)


def _write_atomically(path: epath.Path, text: str) -> None:
  """Writes ``text`` to ``path`` through a temporary file (local disk, GCS, ...)."""
  tmp = path.parent / (path.name + ".tmp")
  tmp.write_text(text)
  tmp.replace(path)


class Trainer:
  """Runs a :class:`Config`: epochs of jitted steps, evaluation, metrics, checkpoints.

  Examples:
    >>> from absgd_jax.train import make_config, Trainer
    >>> cfg = make_config("digits-lt", epochs=1, checkpoint=False, out_dir="/tmp/absgd-doc")
    >>> summary = Trainer(cfg, progress=False).fit()
    >>> 0.0 <= summary["final"]["test_acc"] <= 1.0
    True
  """

  def __init__(self, config: Config, *, exp: experiment_data.ExperimentData | None = None,
               progress: bool = True, log: bool = True, devices: list | None = None):
    self.config = config
    self.progress = progress
    self.log = log
    self.exp = exp if exp is not None else experiment_data.build(config)
    devices = jax.devices() if devices is None else list(devices)
    self.mesh = Mesh(np.array(devices), ("data",))
    self.num_processes = jax.process_count()
    n_dev = len(devices)
    if config.batch_size % n_dev:
      raise ValueError(f"batch_size={config.batch_size} must be a multiple of the "
                       f"{n_dev} devices, so that the batch splits evenly.")
    self.batch_sharding = NamedSharding(self.mesh, P("data"))
    self.replicated = NamedSharding(self.mesh, P())
    train = self.exp.train
    self.steps_per_epoch = num_batches(len(train), config.batch_size)
    C = config.num_classes
    dtype = jnp.bfloat16 if config.dtype == "bfloat16" else jnp.float32
    self.model = create_model(config.model, C, head=config.head, dtype=dtype)
    self.is_cifar = config.dataset in ("cifar10", "cifar100")
    # Images reach the step as uint8 (CIFAR, file lists) and are normalised there.
    self.norm_stats = ((IMAGENET_MEAN, IMAGENET_STD) if config.streamed
                       else (CIFAR10_MEAN, CIFAR10_STD) if self.is_cifar else None)

    key = jax.random.key(config.seed)
    if config.streamed:
      sample = jnp.zeros((1, config.crop_size, config.crop_size, 3), jnp.float32)
    else:
      sample = jnp.asarray(train.images[:1]).astype(jnp.float32)
    variables = jax.jit(lambda k: self.model.init(k, sample, train=False))(key)
    if config.init_from:
      variables = initial_weights(config, variables)
    params = variables["params"]
    self.tx, trainable = make_optimizer(config, self.steps_per_epoch, params)
    self.weigher = make_weigher(config, self.steps_per_epoch)
    # Frozen layers keep their weights but, in train mode, go on normalising with batch
    # statistics and tracking them, as torch's requires_grad=False under model.train() does
    # (the authors' code). Freezing the running statistics instead would train the head on
    # batch-normalised features and test it on differently normalised ones.
    batch_stats = variables.get("batch_stats", {})
    w_state = (self.weigher or absgd_jax.absgd_weights(1.0)).init()
    state = TrainState(step=jnp.zeros([], jnp.int32), params=params, batch_stats=batch_stats,
                       opt_state=self.tx.init(params), w_state=w_state,
                       rng=jax.random.key_data(jax.random.fold_in(key, 1)))
    self.state = jax.device_put(state, self.replicated)

    step_fn = make_train_step(
        self.model, self.tx, self.weigher,
        make_loss_fn(config, self.exp.train_class_counts, self.steps_per_epoch),
        num_classes=C, augment=self.is_cifar and config.augment,
        crop_padding=config.crop_padding,
        l2rw_lr=(learning_rate_schedule(config, self.steps_per_epoch)
                 if config.method == "l2rw" else None))
    if self.norm_stats is not None and not (self.is_cifar and config.augment):
      inner, stats = step_fn, self.norm_stats

      def step_fn(state, batch):  # Normalise without augmenting (on the device).
        batch = {**batch, "images": normalize(batch["images"], *stats)}
        if "val_images" in batch:
          batch["val_images"] = normalize(batch["val_images"], *stats)
        return inner(state, batch)
    self.train_step = jax.jit(step_fn, donate_argnums=0,
                              out_shardings=(self.replicated, self.replicated))
    self.eval_step = jax.jit(make_eval_step(self.model, num_classes=C,
                                            normalize_stats=self.norm_stats),
                             out_shardings=self.replicated)
    self.history: list[dict[str, Any]] = []
    self.checkpointer = (Checkpointer(str(epath.Path(config.out_dir) / "checkpoints"))
                         if config.checkpoint else None)

  # --- data -------------------------------------------------------------------------------

  def _stream_options(self):
    from absgd_jax.data.streaming import StreamOptions
    c = self.config
    return StreamOptions(image_size=c.crop_size, resize=c.resize_size, workers=c.data_workers)

  def _train_batches(self, epoch: int):
    c, train = self.config, self.exp.train
    balanced = train.labels if c.sampler == "balanced" else None
    batches = epoch_batches(len(train), c.batch_size, c.seed, epoch, balanced_labels=balanced)
    if c.streamed:
      yield from self._streamed_train_batches(list(batches), epoch)
      return
    for i, b in enumerate(batches):
      # Each process reads only its own rows of the global batch (the split _to_global undoes).
      idx = b.indices.reshape(self.num_processes, -1)[jax.process_index()]
      mask = b.mask.reshape(self.num_processes, -1)[jax.process_index()]
      local = {"images": train.images[idx], "labels": train.labels[idx], "mask": mask}
      if c.noise != "none":
        local["flipped"] = self.exp.flipped[idx]
      if self.exp.meta is not None:  # A batch of the meta set, drawn with replacement.
        rng = np.random.default_rng([c.seed, epoch, i, 13])
        meta_idx = rng.integers(0, len(self.exp.meta), size=c.batch_size)
        meta_idx = meta_idx.reshape(self.num_processes, -1)[jax.process_index()]
        local["val_images"] = self.exp.meta.images[meta_idx]
        local["val_labels"] = self.exp.meta.labels[meta_idx]
      yield self._to_global(local)

  def _streamed_train_batches(self, batches, epoch: int):
    """This process's rows of each global batch, decoded and cropped by grain workers.

    A row's crop is drawn from its position in the global epoch order, so the global batch
    is the same, pixel for pixel, for any number of processes and workers.
    """
    from absgd_jax.data.streaming import stream_images
    c, train, p = self.config, self.exp.train, jax.process_index()
    local = c.batch_size // self.num_processes
    rows = [b.indices.reshape(self.num_processes, -1)[p] for b in batches]
    positions = [i * c.batch_size + p * local + np.arange(local) for i in range(len(batches))]
    images = stream_images(train, rows, train=True, seed=(c.seed, epoch), positions=positions,
                           options=self._stream_options())
    for b, idx, imgs in zip(batches, rows, images):
      local_batch = {"images": imgs, "labels": train.labels[idx],
                     "mask": b.mask.reshape(self.num_processes, -1)[p]}
      if c.noise != "none":
        local_batch["flipped"] = self.exp.flipped[idx]
      yield self._to_global(local_batch)

  def _to_global(self, local: dict[str, np.ndarray]) -> dict[str, jax.Array]:
    out = {}
    for k, v in local.items():
      shape = (v.shape[0] * self.num_processes, *v.shape[1:])
      out[k] = jax.make_array_from_process_local_data(self.batch_sharding, v, shape)
    return out

  # --- epochs -----------------------------------------------------------------------------

  def train_epoch(self, epoch: int) -> dict[str, Any]:
    bar = None
    if self.progress and jax.process_index() == 0:
      from tqdm.auto import tqdm
      bar = tqdm(total=self.steps_per_epoch, desc=f"epoch {epoch}", leave=False)
    step_metrics = []
    for batch in self._train_batches(epoch):
      self.state, m = self.train_step(self.state, batch)
      step_metrics.append(m)
      if bar is not None:
        bar.update(1)
    if bar is not None:
      bar.close()
    return train_epoch_metrics(jax.device_get(step_metrics))

  def evaluate(self, dataset, prefix: str = "test") -> dict[str, Any]:
    B = self.config.batch_size
    correct = np.zeros(self.config.num_classes)
    count = np.zeros(self.config.num_classes)
    n, p = len(dataset), jax.process_index()
    rows, masks = [], []
    for start in range(0, n, B):
      idx = np.arange(start, start + B)
      mask = idx < n
      rows.append(np.where(mask, idx, 0).reshape(self.num_processes, -1)[p])
      masks.append(mask.reshape(self.num_processes, -1)[p])
    if self.config.streamed:
      from absgd_jax.data.streaming import stream_images
      images = stream_images(dataset, rows, train=False, options=self._stream_options())
    else:
      images = (dataset.images[r] for r in rows)
    for r, mask, imgs in zip(rows, masks, images):
      local = {"images": imgs, "labels": dataset.labels[r], "mask": mask}
      out = jax.device_get(self.eval_step(self.state, self._to_global(local)))
      correct += out["class_correct"]
      count += out["class_count"]
    return eval_metrics(correct, count, self.exp.train_class_counts, prefix)

  def restore(self) -> int:
    """Restores the latest checkpoint, if any; returns the epoch to start from."""
    if self.checkpointer is None or self.checkpointer.latest_epoch() is None:
      return 0
    self.state, meta = self.checkpointer.restore(self.state)
    self.history = list(meta["history"])
    return int(meta["epoch"]) + 1

  def fit(self) -> dict[str, Any]:
    """Trains to ``config.epochs`` (resuming from the latest checkpoint) and returns a summary."""
    c = self.config
    out = epath.Path(c.out_dir)  # A local folder or a gs:// (etc.) location.
    if jax.process_index() == 0 and self.log:
      out.mkdir(parents=True, exist_ok=True)
    start = self.restore()
    t0 = time.perf_counter()
    epochs = range(start, c.epochs)
    bar = None
    if self.progress and jax.process_index() == 0:
      from tqdm.auto import tqdm
      bar = tqdm(epochs, desc=os.path.basename(c.out_dir), initial=start, total=c.epochs)
    for epoch in epochs:
      te = time.perf_counter()
      record = {"epoch": epoch, **self.train_epoch(epoch)}
      if not is_finite_number(record["train_loss"]):
        raise DivergenceError(
            f"training diverged in epoch {epoch}: the mean training loss is "
            f"{record['train_loss']}. Lower lr (now {c.lr}) or raise |lam| (now {c.lam}). "
            + ("The last good checkpoint is kept in "
               f"{out / 'checkpoints'}." if self.checkpointer else ""))
      record["epoch_time_s"] = time.perf_counter() - te
      record["images_per_s"] = len(self.exp.train) / record["epoch_time_s"]
      if (epoch + 1) % c.eval_every == 0 or epoch + 1 == c.epochs:
        record.update(self.evaluate(self.exp.test, "test"))
        if self.exp.val is not None:
          record.update(self.evaluate(self.exp.val, "val"))
      self.history.append(record)
      if jax.process_index() == 0 and self.log:
        # The whole history, rewritten: it matches the checkpoint after a resume, and object
        # stores such as GCS cannot append.
        _write_atomically(out / "metrics.jsonl",
                          "".join(json.dumps(r) + "\n" for r in self.history))
      if self.checkpointer is not None:
        self.checkpointer.save(epoch, self.state, {"epoch": epoch, "history": self.history})
      if bar is not None:
        bar.update(1)
        bar.set_postfix(loss=f"{record['train_loss']:.3f}",
                        acc=f"{record.get('test_acc') or float('nan'):.3f}")
    if bar is not None:
      bar.close()
    summary = {
        "config": {k: (list(v) if isinstance(v, tuple) else v)
                   for k, v in vars(c).items()},
        "final": self.history[-1] if self.history else {},
        "train_class_counts": self.exp.train_class_counts.tolist(),
        "train_size": len(self.exp.train),
        "wall_time_s": time.perf_counter() - t0,
        "devices": self.mesh.size,
        "platform": jax.default_backend(),
    }
    if jax.process_index() == 0 and self.log:
      _write_atomically(out / "summary.json",
                        json.dumps(summary, indent=1, default=_json_default))
    return summary


def _json_default(x):
  if isinstance(x, (np.floating, np.integer)):
    return x.item()
  if isinstance(x, float) and math.isinf(x):
    return str(x)
  raise TypeError(type(x))
