"""The training loop: one jitted step, data-parallel over every device of every host.

Parallelism is ``jax.jit`` over a 1-D ``("data",)`` mesh of all devices: the batch is sharded
along it (:mod:`absgd_jax.train.inputs`), the state is replicated, and XLA makes the step's
reductions global (the ABSGD normaliser, BatchNorm statistics, the gradient mean). The objects
come from :mod:`absgd_jax.train.setup`; this module only runs them, has the run's health
watched (:mod:`absgd_jax.train.watch`) and writes what happened
(:mod:`absgd_jax.train.run_folder`).

A run is M >= 1 members (:mod:`absgd_jax.train.members`) whose states are stacked along a
leading axis: a plain run is one, a sweep (:class:`absgd_jax.train.sweep.Sweep`) several,
trained side by side in one compiled program. Every member goes the same way through the
loop and has its own run folder, checkpoints, history, health checks and summary, so a
member's folder holds what a single run's holds.
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from absgd_jax.data import num_batches
from absgd_jax.models import create_model
from absgd_jax.train import (
  console,
  errors,
  experiment_data,
  health,
  inputs,
  run_folder,
  setup,
  watch,
)
from absgd_jax.train.config import Config
from absgd_jax.train.members import (
  Member,
  make_member_eval_step,
  make_member_step,
  resolve_mode,
  stack,
  take,
)
from absgd_jax.train.metrics import eval_metrics, train_epoch_metrics


class Trainer:
  """Runs a :class:`Config`: epochs of jitted steps, evaluation, metrics, checkpoints.

  ``fit()`` resumes from ``out_dir``'s latest checkpoint. A Trainer whose settings differ from
  those of the run in ``out_dir`` refuses to be made, naming the settings that differ;
  ``new_run=True`` starts afresh instead, deleting that run's checkpoints and records. An
  empty ``out_dir`` is named by the settings (:func:`~absgd_jax.train.run_folder.resolve_out_dir`).

  Args:
    config: the run's settings (for a sweep, its base settings; ``out_dir`` its folder).
    exp: the data (built from ``config`` when None).
    progress: show progress bars (process 0).
    log: write the folder's files (process 0); checkpoints follow the ``checkpoint`` setting.
    devices: the devices of the mesh (all when None).
    new_run: start afresh in a folder that holds a run with other settings.
    members: the members to train side by side (:class:`absgd_jax.train.sweep.Sweep` makes
      them); None is one member, the run itself.
    mode: how several members share the program (:func:`~absgd_jax.train.members.resolve_mode`).
    console: print the epoch lines (process 0); default: as ``progress``.

  Examples:
    >>> from absgd_jax.train import make_config, Trainer
    >>> cfg = make_config("digits-lt", epochs=1, checkpoint=False, out_dir="/tmp/absgd-doc")
    >>> [summary] = Trainer(cfg, progress=False, new_run=True).fit()
    >>> 0.0 <= summary["final"]["test_acc"] <= 1.0
    True
  """

  def __init__(
    self,
    config: Config,
    *,
    exp: experiment_data.ExperimentData | None = None,
    progress: bool = True,
    log: bool = True,
    devices: list | None = None,
    new_run: bool = False,
    members: Sequence[Member] | None = None,
    mode: str = "auto",
    console: bool | None = None,
  ):
    self.config = config = run_folder.resolve_out_dir(config)
    self.progress, self.log = progress, log
    self.console = progress if console is None else console
    self.position = (0, 0)  # The epoch running and the steps of it done (for an interrupt).
    self.members = list(members) if members is not None else [Member({}, "", config)]
    configs = [m.config for m in self.members]
    devices = jax.devices() if devices is None else list(devices)
    with errors.user_input():  # Reading and sizing the data: their errors are the user's.
      self.exps = experiment_data.build_for_members(configs, exp)
      experiment_data.validate_for_data(
        config, len(self.exps[0].train), len(devices), jax.process_count()
      )
    self.exp, self.shared_batches = self.exps[0], len({c.seed for c in configs}) == 1
    self.mesh = Mesh(np.array(devices), ("data",))
    self.batch_sharding = NamedSharding(self.mesh, P("data"))
    self.replicated = NamedSharding(self.mesh, P())
    self.steps_per_epoch = steps = num_batches(len(self.exp.train), config.optim.batch_size)
    self.model = create_model(
      config.model.name,
      config.num_classes,
      head=config.model.head,
      dtype=jnp.bfloat16 if config.model.dtype == "bfloat16" else jnp.float32,
    )
    self.loss_fn = setup.make_loss_fn(config, self.exp.train_class_counts, steps)
    self.preprocess = setup.make_preprocess(config)
    self.tx, states = setup.member_states(configs, self.model, self.exp, self.loss_fn, steps)
    self.state = jax.device_put(stack(states), self.replicated)
    mode = resolve_mode(mode, len(configs))
    step = make_member_step(
      self.model, self.tx, self.loss_fn, configs, steps, self.preprocess,
      num_classes=config.num_classes, shared_batch=self.shared_batches, mode=mode,
    )  # fmt: skip
    eval_step = make_member_eval_step(
      self.model, len(configs), self.preprocess, num_classes=config.num_classes,
      shared_batch=self.shared_batches, mode=mode,
    )  # fmt: skip
    self.train_step = jax.jit(step, donate_argnums=0, out_shardings=self.replicated)
    self.eval_step = jax.jit(eval_step, out_shardings=self.replicated)
    batches = inputs.MemberBatches(
      configs, self.exps, self.batch_sharding, shared=self.shared_batches
    )
    with errors.user_input():
      self.input_pipeline = inputs.resolve_pipeline(config, self.exps)
    self.pipeline = (
      inputs.DevicePipeline(batches, step, eval_step, self.mesh)
      if self.input_pipeline == "device"
      else inputs.HostPipeline(batches, self.train_step, self.eval_step)
    )
    self.weights_from = setup.weights_start_step(config, steps)
    self.histories: list[list[dict[str, Any]]] = [[] for _ in configs]
    self.summaries: list[dict[str, Any] | None] = [None] * len(configs)
    self.out = epath.Path(config.run.out_dir)  # A local folder or a gs:// (etc.) location.
    self.folders = [run_folder.RunFolder(c, log=log) for c in configs]
    self.watch = watch.Watch(self.members, self.exps, self.folders, steps, self._print)
    self.status = self.watch.status  # each member's: "ok" or "diverged in epoch E: why"
    self._claim(new_run)

  def _claim(self, new_run: bool, folders: Sequence[run_folder.RunFolder] = ()) -> None:
    """Checks and claims the members' folders (:func:`~absgd_jax.train.run_folder.claim`);
    ``folders`` come first (a sweep's own)."""
    run_folder.claim([*folders, *self.folders], new_run, self._print)

  # --- members --------------------------------------------------------------------------------

  @property
  def history(self) -> list[dict[str, Any]]:
    """The first member's records, one per epoch (a plain run's only member)."""
    return self.histories[0]

  @property
  def checkpointer(self):
    """The first member's Checkpointer, or None without checkpoints."""
    return self.folders[0].checkpointer

  def member_state(self, i: int) -> Any:
    """Member ``i``'s TrainState, without the member axis."""
    return take(self.state, i)

  @property
  def selected_on(self) -> str:
    """The metric members are compared on: validation balanced accuracy, else the test's."""
    return "val_balanced_acc" if self.exp.val is not None else "test_balanced_acc"

  def _print(self, line: str) -> None:
    """One line on the console (process 0, when ``console`` is on)."""
    if self.console and jax.process_index() == 0:
      print(line, flush=True)

  # --- the loop -------------------------------------------------------------------------------

  def train_epoch(self, epoch: int) -> list[dict[str, Any] | None]:
    """One epoch of steps; each member's metrics with the class-collapse warnings it raised
    (None for a member that has diverged)."""
    self.state, steps = self.pipeline.train(
      self.state,
      epoch,
      total=self.steps_per_epoch,
      show=self.progress and jax.process_index() == 0,
      on_step=lambda n: setattr(self, "position", (epoch, n)),
    )
    records = []
    for i in range(len(self.members)):
      if not self.watch.training(i):
        records.append(None)
        continue
      per_step = [{k: v[i] for k, v in s.items()} for s in steps]
      hits = self.watch.steps(i, epoch, per_step)
      records.append({**train_epoch_metrics(per_step), "collapsed_classes": hits})
    return records

  def evaluate(self, split: str = "test") -> list[dict[str, Any]]:
    """Each member's metrics on ``split`` ("test" or "val")."""
    sums = self.pipeline.evaluate(
      self.state, split, show=self.progress and jax.process_index() == 0
    )
    correct, count = sums["class_correct"], sums["class_count"]
    return [
      eval_metrics(correct[i], count[i], e.train_class_counts, split)
      for i, e in enumerate(self.exps)
    ]

  def restore(self) -> int:
    """Restores each member's newest healthy checkpoint that reads, if every member has one
    (the Checkpointer warns about each one it passes over); returns the epoch to start from.
    Members saved at different epochs (a sweep stopped between two saves) go back to the
    earliest of them."""
    ckpts = [f.checkpointer for f in self.folders]
    if any(c is None or c.latest_epoch() is None for c in ckpts):
      return 0
    got = [c.restore(self.member_state(i)) for i, c in enumerate(ckpts)]
    epoch = min(int(meta["epoch"]) for _, meta in got)
    got = [
      g if int(g[1]["epoch"]) == epoch else c.restore(self.member_state(i), epoch=epoch)
      for i, (c, g) in enumerate(zip(ckpts, got))
    ]
    self.state = jax.device_put(stack([s for s, _ in got]), self.replicated)
    self.histories = [list(meta["history"]) for _, meta in got]
    for folder, history in zip(self.folders, self.histories):
      rebuilt = folder.rebuild_history(history, epoch)
      if rebuilt is not None:
        warnings.warn(rebuilt, UserWarning, stacklevel=2)
    return epoch + 1

  def fit(self) -> list[dict[str, Any] | None]:
    """Trains to the config's epochs (resuming from the latest checkpoints); returns each
    member's summary (what its ``summary.json`` holds), None for a member that diverged.

    Raises:
      DivergenceError: when every member has diverged; the others carry on while one has not.
    """
    c, t0 = self.config, time.perf_counter()
    start = self.restore()
    self.position = (start, 0)
    if start:
      self._print(health.resumed_message(start, c.schedule.epochs, self.folders))
    for epoch in range(start, c.schedule.epochs):
      if self.weights_from is not None and epoch == self.weights_from // self.steps_per_epoch:
        self._print(f"epoch {epoch}: {setup.describe_weights(c, self.members, self.weights_from)}")
      t_epoch = time.perf_counter()
      records = self.train_epoch(epoch)
      train_s = time.perf_counter() - t_epoch
      self.watch.divergence(epoch, records, self.histories)
      evals: list[dict[str, Any]] = [{} for _ in self.members]
      if (epoch + 1) % c.run.eval_every == 0 or epoch + 1 == c.schedule.epochs:
        for split in ("test", "val") if self.exp.val is not None else ("test",):
          for i, r in enumerate(self.evaluate(split)):
            evals[i].update(r)
      for i, record in enumerate(records):
        if record is not None:
          speed = dict(epoch_time_s=train_s, images_per_s=len(self.exps[i].train) / train_s)
          records[i] = {"epoch": epoch, **record, **speed, **evals[i]}
      self.watch.blow_ups(epoch, records, self.histories)
      for i, record in enumerate(records):
        if record is not None:
          self._record(i, record)
      labels = [m.label for m in self.members]
      self._print(console.epoch_lines(epoch, train_s, labels, self.histories, self.selected_on))
    extra = dict(
      wall_time_s=time.perf_counter() - t0,
      devices=self.mesh.size,
      platform=jax.default_backend(),
      input_pipeline=self.input_pipeline,
    )
    self.trained_epochs = max(0, c.schedule.epochs - start)
    for i, (member, folder) in enumerate(zip(self.members, self.folders)):
      if not self.watch.training(i):
        continue
      saved = None if self.trained_epochs else folder.read("summary.json")
      if saved is not None:  # A finished run's summary stands (its folder may be read-only).
        self.summaries[i] = json.loads(saved)
        continue
      self.summaries[i] = run_folder.summary(
        member.config, self.histories[i], self.exps[i].train_class_counts,
        self.weights_from, self.steps_per_epoch, **extra,
      )  # fmt: skip
      folder.write("summary.json", run_folder.to_json(self.summaries[i], indent=1))
    return self.summaries

  def _record(self, i: int, record: dict[str, Any]) -> None:
    """Member ``i``'s epoch: its health note, history, metrics.jsonl and checkpoint."""
    history, folder, run = self.histories[i], self.folders[i], self.members[i].config.run
    record["health_note"] = health.suspect(record, history)
    record["healthy"] = record["health_note"] is None
    history.append(record)
    folder.write_history(history)
    epoch = record["epoch"]
    due = (epoch + 1) % run.checkpoint_every == 0 or epoch + 1 == self.config.schedule.epochs
    if folder.checkpointer is not None and due:
      folder.checkpointer.save(
        epoch,
        self.member_state(i),
        {"epoch": epoch, "history": history},
        healthy=record["healthy"],
        metric=record.get("val_acc"),
      )
