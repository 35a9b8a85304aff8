"""The training loop: one jitted step, data-parallel over every device of every host.

Parallelism is ``jax.jit`` over a 1-D ``("data",)`` mesh of all devices: the batch is sharded
along it (:mod:`absgd_jax.train.inputs`), the state is replicated, and XLA makes the step's
reductions global (the ABSGD normaliser, BatchNorm statistics, the gradient mean). The objects
come from :mod:`absgd_jax.train.setup`; this module only runs them, checks the run's health
(:mod:`absgd_jax.train.health`) and writes what happened.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from absgd_jax.data import num_batches
from absgd_jax.models import create_model
from absgd_jax.train import config as config_lib
from absgd_jax.train import afresh, errors, experiment_data, health, inputs, setup
from absgd_jax.train.checkpoint import Checkpointer
from absgd_jax.train.config import Config
from absgd_jax.train.metrics import eval_metrics, train_epoch_metrics
from absgd_jax.train.step import make_eval_step, make_train_step


class DivergenceError(RuntimeError):
  """The run diverged: a non-finite or exploding loss, collapsed weights or a log s jump.

  :meth:`Trainer.fit` raises it with a message that says what diverged, in which epoch, and
  which checkpoint is the last healthy one (kept apart from the rolling ones).

  Examples:
    >>> from absgd_jax.train import DivergenceError
    >>> issubclass(DivergenceError, RuntimeError)  # `except RuntimeError` catches it too
    True
  """


class Trainer:
  """Runs a :class:`Config`: epochs of jitted steps, evaluation, metrics, checkpoints.

  ``fit()`` resumes from ``out_dir``'s latest checkpoint. A Trainer whose settings differ from
  those of the run in ``out_dir`` refuses to be made, naming the settings that differ;
  ``new_run=True`` starts afresh instead, deleting that run's checkpoints and records.
  ``console`` (default: as ``progress``) prints the epoch lines; ``progress`` the bars.

  Examples:
    >>> from absgd_jax.train import make_config, Trainer
    >>> cfg = make_config("digits-lt", epochs=1, checkpoint=False, out_dir="/tmp/absgd-doc")
    >>> summary = Trainer(cfg, progress=False, new_run=True).fit()
    >>> 0.0 <= summary["final"]["test_acc"] <= 1.0
    True
  """

  def __init__(self, config: Config, *, exp: experiment_data.ExperimentData | None = None,
               progress: bool = True, log: bool = True, devices: list | None = None,
               new_run: bool = False, console: bool | None = None):
    self.config, self.progress, self.log = config, progress, log
    self.console = progress if console is None else console
    self.position = (0, 0)  # The epoch running and the steps of it done (for an interrupt).
    devices = jax.devices() if devices is None else list(devices)
    with errors.user_input():  # Reading and sizing the data: their errors are the user's.
      self.exp = exp if exp is not None else experiment_data.build(config)
      config_lib.validate_for_data(config, len(self.exp.train), len(devices),
                                   jax.process_count())
    self.mesh = Mesh(np.array(devices), ("data",))
    self.batch_sharding = NamedSharding(self.mesh, P("data"))
    replicated = NamedSharding(self.mesh, P())
    self.steps_per_epoch = num_batches(len(self.exp.train), config.batch_size)
    spe, C = self.steps_per_epoch, config.num_classes
    dtype = jnp.bfloat16 if config.dtype == "bfloat16" else jnp.float32
    self.model = create_model(config.model, C, head=config.head, dtype=dtype)
    sample = (np.zeros((1, config.crop_size, config.crop_size, 3), np.float32)
              if config.streamed else np.asarray(self.exp.train.images[:1], np.float32))
    variables = setup.init_variables(config, self.model, sample)
    self.tx, _ = setup.make_optimizer(config, spe, variables["params"])
    loss_fn = setup.make_loss_fn(config, self.exp.train_class_counts, spe)
    self.weigher = setup.make_weighting(config, spe, self.model.apply, loss_fn)
    self.state = jax.device_put(setup.init_state(config, variables, self.tx, self.weigher),
                                replicated)
    preprocess = setup.make_preprocess(config)
    self.train_step = jax.jit(
        make_train_step(self.model, self.tx, loss_fn, self.weigher, preprocess, num_classes=C),
        donate_argnums=0, out_shardings=(replicated, replicated))
    self.eval_step = jax.jit(make_eval_step(self.model, num_classes=C, preprocess=preprocess),
                             out_shardings=replicated)
    self.weights_from = setup.weights_start_step(config, spe)
    self.guard = health.ClassCollapseGuard(config.collapse_weight, config.collapse_steps,
                                           self.exp.train.class_names)
    self.history: list[dict[str, Any]] = []
    self.out = epath.Path(config.out_dir)  # A local folder or a gs:// (etc.) location.
    if new_run and jax.process_index() == 0:  # Before anything reads what is there.
      removed = afresh.start_afresh(config.out_dir)
      if removed:
        self._say(f"new run in {self.out}: removed {', '.join(removed)}")
    self.checkpointer = (Checkpointer(str(self.out / "checkpoints"))
                         if config.checkpoint else None)
    with errors.user_input():  # A damaged config.json is the user's to restore or replace.
      self._claim(new_run)

  def _claim(self, new_run: bool) -> None:
    """Refuses an ``out_dir`` holding a run with other settings; records this run's there."""
    last = None if self.checkpointer is None else self.checkpointer.latest_epoch()
    # Checkpoints are resumed from, so their settings are recorded even when log=False.
    if not (jax.process_index() == 0 and (self.log or self.checkpointer is not None)):
      config_lib.check_resume(config_lib.read_run_config(self.config.out_dir), self.config,
                              last_epoch=last, new_run=new_run)
      return
    config_lib.claim_run_dir(self.config, last_epoch=last, new_run=new_run)
    if new_run:
      if self.checkpointer is not None:
        self.checkpointer.delete_all()
      for name in ("metrics.jsonl", "summary.json"):
        if (self.out / name).exists():
          (self.out / name).unlink()

  def _say(self, line: str) -> None:
    """One line on the console (process 0, when ``console`` is on)."""
    if self.console and jax.process_index() == 0:
      print(line, flush=True)

  def train_epoch(self, epoch: int) -> dict[str, Any]:
    """One epoch of steps; the epoch's metrics, with the class-collapse warnings it raised."""
    from tqdm.auto import tqdm
    step_metrics = []
    for batch in tqdm(inputs.train_batches(self.config, self.exp, epoch, self.batch_sharding),
                      total=self.steps_per_epoch, desc=f"epoch {epoch}", leave=False,
                      disable=not (self.progress and jax.process_index() == 0)):
      self.state, m = self.train_step(self.state, batch)
      step_metrics.append(m)
      self.position = (epoch, len(step_metrics))
    step_metrics = jax.device_get(step_metrics)
    first = epoch * self.steps_per_epoch
    hits = [hit for i, m in enumerate(step_metrics) for hit in self.guard.update(m, first + i)]
    for hit in hits:
      warnings.warn(self.guard.message(hit), RuntimeWarning, stacklevel=2)
      self._say("warning: " + self.guard.message(hit))
    return {**train_epoch_metrics(step_metrics), "collapsed_classes": hits}

  def evaluate(self, dataset, prefix: str = "test") -> dict[str, Any]:
    correct = count = 0.0
    for batch in inputs.eval_batches(self.config, dataset, self.batch_sharding):
      out = jax.device_get(self.eval_step(self.state, batch))
      correct, count = correct + out["class_correct"], count + out["class_count"]
    return eval_metrics(correct, count, self.exp.train_class_counts, prefix)

  def restore(self) -> int:
    """Restores the newest healthy checkpoint that reads, if any (the Checkpointer warns about
    each one it passes over); returns the epoch to start from."""
    if self.checkpointer is None or self.checkpointer.latest_epoch() is None:
      return 0
    self.state, meta = self.checkpointer.restore(self.state)
    self.history = list(meta["history"])
    return int(meta["epoch"]) + 1

  def _write(self, name: str, text: str) -> None:
    if jax.process_index() == 0 and self.log:  # Through a temporary file (disk, GCS...).
      tmp = self.out / (name + ".tmp")
      tmp.write_text(text)
      tmp.replace(self.out / name)

  def fit(self) -> dict[str, Any]:
    """Trains to ``config.epochs`` (resuming from the latest checkpoint) and returns a summary."""
    c, t0 = self.config, time.perf_counter()
    start = self.restore()
    self.position = (start, 0)
    if start >= c.epochs:
      self._say(f"resumed from epoch {start - 1} (its checkpoint in {self.out / 'checkpoints'})"
                f": the run is finished, trained to epochs={c.epochs}; nothing left to train "
                "(--new-run starts it again)")
    elif start:
      self._say(f"resumed from epoch {start - 1} (its checkpoint in {self.out / 'checkpoints'})"
                f"; training on from epoch {start}")
    for epoch in range(start, c.epochs):
      if self.weights_from is not None and epoch == self.weights_from // self.steps_per_epoch:
        self._say(f"epoch {epoch}: {c.method} weights on from step {self.weights_from}"
                  + ("" if c.method == "l2rw" else f" (lam set by KL budget {c.kl_budget})"
                     if c.kl_budget > 0 else f" (lam={c.lam})"))
      te = time.perf_counter()
      record = {"epoch": epoch, **self.train_epoch(epoch)}
      why = health.divergence(record, self.history)
      if why is not None:
        raise DivergenceError(self._diverged_message(epoch, why))
      record["epoch_time_s"] = time.perf_counter() - te
      record["images_per_s"] = len(self.exp.train) / record["epoch_time_s"]
      if (epoch + 1) % c.eval_every == 0 or epoch + 1 == c.epochs:
        record.update(self.evaluate(self.exp.test, "test"))
        if self.exp.val is not None:
          record.update(self.evaluate(self.exp.val, "val"))
      record["health_note"] = health.suspect(record, self.history)
      record["healthy"] = record["health_note"] is None
      self.history.append(record)
      # The whole history, rewritten: it matches the checkpoint after a resume, and object
      # stores such as GCS cannot append.
      self._write("metrics.jsonl", "".join(json.dumps(r, default=_json_default) + "\n"
                                           for r in self.history))
      if self.checkpointer is not None:
        self.checkpointer.save(epoch, self.state, {"epoch": epoch, "history": self.history},
                               healthy=record["healthy"], metric=record.get("val_acc"))
      self._say(_epoch_line(record))
    summary = _summary(self, time.perf_counter() - t0)
    self._write("summary.json", json.dumps(summary, indent=1, default=_json_default))
    return summary

  def _diverged_message(self, epoch: int, why: str) -> str:
    c = self.config
    msg = (f"training diverged in epoch {epoch}: {why}. Lower lr (now {c.lr}) or "
           + (f"lower kl_budget (now {c.kl_budget})." if c.kl_budget > 0
              else f"raise |lam| (now {c.lam})."))
    if self.checkpointer is not None and self.checkpointer.best_epoch() is not None:
      msg += (f" The last healthy checkpoint is epoch {self.checkpointer.latest_healthy_epoch()}"
              f" (the best, kept apart from the rolling ones: epoch "
              f"{self.checkpointer.best_epoch()}) in {self.checkpointer.directory}; this epoch "
              f"was not saved, and a resume starts from the last healthy one.")
    return msg


def _summary(t: Trainer, wall_time_s: float) -> dict[str, Any]:
  """What ``summary.json`` records: the settings, the last epoch, and whether the weights
  were on, so that a run whose lam stage never began (a shortened schedule) is not taken for
  ABSGD."""
  c = t.config
  steps_run = c.epochs * t.steps_per_epoch
  return {
      "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(c).items()},
      "final": t.history[-1] if t.history else {},
      "weights": {"method": c.method, "first_step": t.weights_from,
                  "on": t.weights_from is not None and t.weights_from < steps_run},
      "train_class_counts": t.exp.train_class_counts.tolist(),
      "train_size": len(t.exp.train),
      "wall_time_s": wall_time_s,
      "devices": t.mesh.size,
      "platform": jax.default_backend(),
  }


def _epoch_line(r: dict[str, Any]) -> str:
  acc = r.get("test_acc")
  return (f"epoch {r['epoch']}: loss {r['train_loss']:.4f}  weighted {r['weighted_loss']:.4f}  "
          f"train acc {r['train_acc']:.3f}  test acc "
          f"{'-' if acc is None else f'{acc:.3f}'}  ESS {r['ess_mean']:.1f}  "
          f"{r['epoch_time_s']:.1f}s")


def _json_default(x):
  if isinstance(x, (np.floating, np.integer)):
    return x.item()
  if isinstance(x, float) and math.isinf(x):
    return str(x)
  raise TypeError(type(x))
