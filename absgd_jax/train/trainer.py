"""The training loop: one jitted step, data-parallel over every device of every host.

Parallelism is ``jax.jit`` over a 1-D ``("data",)`` mesh of all devices: the batch is sharded
along it (:mod:`absgd_jax.train.inputs`), the state is replicated, and XLA makes the step's
reductions global (the ABSGD normaliser, BatchNorm statistics, the gradient mean). The objects
come from :mod:`absgd_jax.train.setup`; this module only runs them, checks the run's health
(:mod:`absgd_jax.train.health`) and writes what happened (:mod:`absgd_jax.train.run_folder`).

The loop runs M >= 1 members (:mod:`absgd_jax.train.members`): a plain run is one, a sweep
(:class:`absgd_jax.train.sweep.Sweep`) several, trained side by side in one compiled program.
Each member has its own run folder, checkpoints, history, health checks and summary, written
by the same code, so a member's folder holds what a single run's holds.
"""

from __future__ import annotations

import math
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
from absgd_jax.train import afresh, errors, experiment_data, health, inputs, run_folder, setup
from absgd_jax.train.config import Config
from absgd_jax.train.members import (
  Member,
  make_sweep_step,
  member_hyper,
  over_members,
  resolve_mode,
  stack,
  swept_absgd,
  take,
)
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
  ``new_run=True`` starts afresh instead, deleting that run's checkpoints and records. An
  empty ``out_dir`` is named by the settings (:func:`~absgd_jax.train.run_folder.resolve_out_dir`).

  Args:
    config: the run's settings (for a sweep, its base settings; ``out_dir`` its folder).
    exp: the data (built from ``config`` when None).
    progress: show progress bars (process 0).
    log: write the folder's files (process 0); checkpoints follow ``config.run.checkpoint``.
    devices: the devices of the mesh (all when None).
    new_run: start afresh in a folder that holds a run with other settings.
    members: the members to train side by side (:class:`absgd_jax.train.sweep.Sweep` makes
      them); None is one member, the run itself.
    mode: how several members share the program (:func:`~absgd_jax.train.members.resolve_mode`).
    console: print the epoch lines (process 0); default: as ``progress``.

  Examples:
    >>> from absgd_jax.train import make_config, Trainer
    >>> cfg = make_config("digits-lt", epochs=1, checkpoint=False, out_dir="/tmp/absgd-doc")
    >>> summary = Trainer(cfg, progress=False, new_run=True).fit()
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
    self.progress, self.log, self.mode = progress, log, resolve_mode(mode)
    self.console = progress if console is None else console
    self.position = (0, 0)  # The epoch running and the steps of it done (for an interrupt).
    self.members = list(members) if members is not None else [Member({}, "", config)]
    M, C = len(self.members), config.num_classes
    self.stacked = M > 1  # a plain run keeps a plain state, as its checkpoints hold it
    by_seed: dict[int, experiment_data.ExperimentData] = {}  # lam and gamma share the data
    devices = jax.devices() if devices is None else list(devices)
    with errors.user_input():  # Reading and sizing the data: their errors are the user's.
      for m in self.members:
        if m.config.seed not in by_seed:
          by_seed[m.config.seed] = (
            exp
            if exp is not None and m.config.seed == config.seed
            else experiment_data.build(m.config)
          )
      self.exps = [by_seed[m.config.seed] for m in self.members]
      self.exp = self.exps[0]
      self.shared_batches = len(by_seed) == 1  # else each member has its own batches
      self._check_member_data()
      experiment_data.validate_for_data(
        config, len(self.exp.train), len(devices), jax.process_count()
      )
    self.mesh = Mesh(np.array(devices), ("data",))
    self.batch_sharding = NamedSharding(self.mesh, P("data"))
    self.replicated = NamedSharding(self.mesh, P())
    self.steps_per_epoch = spe = num_batches(len(self.exp.train), config.optim.batch_size)
    dtype = jnp.bfloat16 if config.model.dtype == "bfloat16" else jnp.float32
    self.model = create_model(config.model.name, C, head=config.model.head, dtype=dtype)
    sample = (
      np.zeros((1, config.input.crop_size, config.input.crop_size, 3), np.float32)
      if config.streamed
      else np.asarray(self.exp.train.images[:1], np.float32)
    )
    init: dict[int, dict] = {}  # each seed's own start, as its single run's
    for m in self.members:
      if m.config.seed not in init:
        init[m.config.seed] = setup.init_variables(m.config, self.model, sample)
    self.tx, _ = setup.make_optimizer(config, spe, init[self.members[0].config.seed]["params"])
    self.loss_fn = setup.make_loss_fn(config, self.exp.train_class_counts, spe)
    # The first member's weighting (a plain run's own): the base config's lam may be one
    # that a sweep replaces in every member.
    self.weigher = setup.make_weighting(self.members[0].config, spe, self.model.apply, self.loss_fn)
    self.preprocess = setup.make_preprocess(config)
    states = [
      setup.init_state(
        m.config,
        init[m.config.seed],
        self.tx,
        setup.make_weighting(m.config, spe, self.model.apply, self.loss_fn),
      )
      for m in self.members
    ]
    self.state = jax.device_put(stack(states) if self.stacked else states[0], self.replicated)
    self.train_step = jax.jit(
      self._step_fn(), donate_argnums=0, out_shardings=(self.replicated, self.replicated)
    )
    eval_step = make_eval_step(self.model, num_classes=C, preprocess=self.preprocess)
    if self.stacked:
      eval_step = over_members(eval_step, self.mode, (False, self.shared_batches))
    self.eval_step = jax.jit(eval_step, out_shardings=self.replicated)
    self._stack_batches = jax.jit(stack, out_shardings=NamedSharding(self.mesh, P(None, "data")))
    self.weights_from = setup.weights_start_step(config, spe)
    self.guards = [
      health.ClassCollapseGuard(
        m.config.weighting.collapse_weight, m.config.weighting.collapse_steps, e.train.class_names
      )
      for m, e in zip(self.members, self.exps)
    ]
    self.histories: list[list[dict[str, Any]]] = [[] for _ in self.members]
    self.status = ["ok"] * M  # or "diverged in epoch E: why"
    self.summaries: list[dict[str, Any] | None] = [None] * M
    self.out = epath.Path(config.run.out_dir)  # A local folder or a gs:// (etc.) location.
    self.folders = [run_folder.RunFolder(m.config, log=log) for m in self.members]
    self._claim(new_run)

  # --- the program --------------------------------------------------------------------------

  def _step_fn(self):
    """The train step: the single run's, or the members' over their axis with the
    hyper-parameters that differ between them (lam, gamma) traced per member."""
    c, spe = self.config, self.steps_per_epoch
    step_args = (self.model, self.tx, self.loss_fn)
    if not self.stacked:
      return make_train_step(*step_args, self.weigher, self.preprocess, num_classes=c.num_classes)
    hyper, gammas = member_hyper([m.config for m in self.members])

    def weighting_for(h):
      if not h:  # lam and gamma shared: the single run's weighting, whatever the method
        return self.weigher
      # The schedule of the members' lam: the first member's, or each one's where they differ.
      lam = setup.lam_schedule(self.members[0].config, spe, h.get("lam"))
      return swept_absgd(lam, gammas, h.get("gamma_index"))

    step = make_sweep_step(
      *step_args,
      weighting_for,
      self.preprocess,
      num_classes=c.num_classes,
      shared_batch=self.shared_batches,
      mode=self.mode,
    )
    return lambda states, batch: step(states, batch, hyper)

  def _check_member_data(self) -> None:
    """Members with other seeds must still fit one program: same sizes (and class counts
    where the loss uses them)."""
    e0, m0 = self.exps[0], self.members[0]
    uses_counts = self.config.loss.class_weighting != "none" or self.config.loss.name == "ldam"
    for m, e in zip(self.members, self.exps):
      sizes = [len(e.train), len(e.test), 0 if e.val is None else len(e.val)]
      sizes0 = [len(e0.train), len(e0.test), 0 if e0.val is None else len(e0.val)]
      if sizes != sizes0:
        raise ValueError(
          f"--sweep seed: member {m.label} has (train, test, val) sizes {sizes} "
          f"where {m0.label} has {sizes0}; one program needs equal shapes. Run "
          f"these seeds as separate runs."
        )
      if uses_counts and not np.array_equal(e.train_class_counts, e0.train_class_counts):
        raise ValueError(
          f"--sweep seed: member {m.label}'s class counts differ from "
          f"{m0.label}'s, and loss={self.config.loss.name!r} with class_weighting="
          f"{self.config.loss.class_weighting!r} depends on them. Run these seeds as "
          f"separate runs."
        )

  def _claim(self, new_run: bool) -> None:
    """Refuses folders holding runs with other settings (every one checked before any is
    written); records this run's settings in each. ``new_run`` first clears them."""
    with errors.user_input():  # A damaged config.json is the user's to restore or replace.
      self._start_afresh(self.folders, new_run)
      for folder in self.folders:
        folder.check(new_run)
    for folder in self.folders:
      folder.claim()

  def _start_afresh(self, folders: Sequence[run_folder.RunFolder], new_run: bool) -> None:
    """``new_run``: removes what a run wrote in each folder, before anything reads it."""
    if not new_run:
      return
    removed = afresh.start_afresh_on_every_host([str(f.path) for f in folders])
    for folder, names in zip(folders, removed):
      if names:
        self._say(f"new run in {folder.path}: removed {', '.join(names)}")

  # --- members ------------------------------------------------------------------------------

  @property
  def history(self) -> list[dict[str, Any]]:
    """The first (a plain run's only) member's records, one per epoch."""
    return self.histories[0]

  @history.setter
  def history(self, value: list[dict[str, Any]]) -> None:
    self.histories[0] = value

  @property
  def checkpointer(self):
    """The first (a plain run's only) member's Checkpointer, or None without checkpoints."""
    return self.folders[0].checkpointer

  def member_state(self, i: int) -> Any:
    """Member ``i``'s TrainState (a plain run's state is its only member's)."""
    return take(self.state, i) if self.stacked else self.state

  @property
  def selected_on(self) -> str:
    """The metric members are compared on: validation balanced accuracy, else the test's."""
    return "val_balanced_acc" if self.exp.val is not None else "test_balanced_acc"

  def _say(self, line: str) -> None:
    """One line on the console (process 0, when ``console`` is on)."""
    if self.console and jax.process_index() == 0:
      print(line, flush=True)

  def _name(self, i: int) -> str:
    return f"member {self.members[i].label}: " if self.stacked else ""

  # --- the loop -----------------------------------------------------------------------------

  def _batches(self, streams):
    if self.shared_batches:
      yield from streams[0]
    else:
      for batches in zip(*streams):
        yield self._stack_batches(list(batches))

  def train_epoch(self, epoch: int) -> dict[str, Any] | list[dict[str, Any] | None]:
    """One epoch of steps; each member's metrics, with the class-collapse warnings it raised
    (a plain run's record; a sweep's list, None for a member that has diverged)."""
    from tqdm.auto import tqdm

    pairs = (
      zip(self.members, self.exps) if not self.shared_batches else [(self.members[0], self.exp)]
    )
    streams = [inputs.train_batches(m.config, e, epoch, self.batch_sharding) for m, e in pairs]
    steps = []
    for batch in tqdm(
      self._batches(streams),
      total=self.steps_per_epoch,
      desc=f"epoch {epoch}",
      leave=False,
      disable=not (self.progress and jax.process_index() == 0),
    ):
      self.state, m = self.train_step(self.state, batch)
      steps.append(m)
      self.position = (epoch, len(steps))
    steps = jax.device_get(steps)
    first, records = epoch * self.steps_per_epoch, []
    for i in range(len(self.members)):
      if self.status[i] != "ok":
        records.append(None)
        continue
      per_step = [{k: v[i] for k, v in s.items()} for s in steps] if self.stacked else steps
      hits = [hit for j, m in enumerate(per_step) for hit in self.guards[i].update(m, first + j)]
      for hit in hits:
        warnings.warn(self._name(i) + self.guards[i].message(hit), RuntimeWarning, stacklevel=2)
        self._say("warning: " + self._name(i) + self.guards[i].message(hit))
      records.append({**train_epoch_metrics(per_step), "collapsed_classes": hits})
    return records if self.stacked else records[0]

  def evaluate(self, split: str = "test") -> list[dict[str, Any]]:
    """Each member's metrics on ``split`` ("test" or "val")."""
    exps = self.exps[:1] if self.shared_batches else self.exps
    streams = [
      inputs.eval_batches(self.config, getattr(e, split), self.batch_sharding) for e in exps
    ]
    correct = count = 0.0
    for batch in self._batches(streams):
      out = jax.device_get(self.eval_step(self.state, batch))
      correct, count = correct + out["class_correct"], count + out["class_count"]
    if not self.stacked:
      return [eval_metrics(correct, count, self.exp.train_class_counts, split)]
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
    states = [s for s, _ in got]
    self.state = jax.device_put(stack(states), self.replicated) if self.stacked else states[0]
    self.histories = [list(meta["history"]) for _, meta in got]
    return epoch + 1

  def fit(self) -> dict[str, Any] | list[dict[str, Any] | None]:
    """Trains to the config's epochs (resuming from the latest checkpoints); returns the run's
    summary (a sweep's: one per member, None for a member that diverged).

    Raises:
      DivergenceError: when the run (every member of a sweep) has diverged; a sweep's other
        members carry on while one has not.
    """
    c, t0 = self.config, time.perf_counter()
    start = self.restore()
    self.position = (start, 0)
    where = self.out / ("*/checkpoints" if self.stacked else "checkpoints")
    if start >= c.schedule.epochs:
      self._say(
        f"resumed from epoch {start - 1} (its checkpoint in {where}): the run is "
        f"finished, trained to epochs={c.schedule.epochs}; nothing left to train (--new-run "
        "starts it again)"
      )
    elif start:
      self._say(
        f"resumed from epoch {start - 1} (its checkpoint in {where}); training on from "
        f"epoch {start}"
      )
    for epoch in range(start, c.schedule.epochs):
      if self.weights_from is not None and epoch == self.weights_from // self.steps_per_epoch:
        lams = {m.config.weighting.lam for m in self.members}
        lam = "lam per member" if len(lams) > 1 else f"lam={lams.pop()}"
        self._say(
          f"epoch {epoch}: {c.method} weights on from step {self.weights_from}"
          + (
            ""
            if c.method == "l2rw"
            else f" (lam set by KL budget {c.weighting.kl_budget})"
            if c.weighting.kl_budget > 0
            else f" ({lam})"
          )
        )
      te = time.perf_counter()
      records = self.train_epoch(epoch)
      records = records if self.stacked else [records]
      train_s = time.perf_counter() - te
      self._check_divergence(epoch, records)
      evals: list[dict[str, Any]] = [{} for _ in self.members]
      if (epoch + 1) % c.run.eval_every == 0 or epoch + 1 == c.schedule.epochs:
        for split in ("test", "val") if self.exp.val is not None else ("test",):
          for i, r in enumerate(self.evaluate(split)):
            evals[i].update(r)
      for i, record in enumerate(records):
        if record is not None:
          self._record(
            i,
            {
              "epoch": epoch,
              **record,
              "epoch_time_s": train_s,
              "images_per_s": len(self.exps[i].train) / train_s,
              **evals[i],
            },
          )
      self._say(self._epoch_line(epoch, train_s))
    wall_time_s = time.perf_counter() - t0
    for i, folder in enumerate(self.folders):
      if self.status[i] == "ok":
        self.summaries[i] = self._summary(i, wall_time_s)
        folder.write("summary.json", run_folder.to_json(self.summaries[i], indent=1))
    return self.summaries if self.stacked else self.summaries[0]

  def _check_divergence(self, epoch: int, records: list[dict[str, Any] | None]) -> None:
    """Marks each member that diverged this epoch (its record is dropped, its folder keeps
    the last healthy checkpoint); raises once every member has."""
    messages = []
    for i, record in enumerate(records):
      why = None if record is None else health.divergence(record, self.histories[i])
      if why is not None:
        self.status[i] = f"diverged in epoch {epoch}: {why}"
        records[i] = None
        messages.append(self._name(i) + self._diverged_message(i, epoch, why))
        if self.stacked and "ok" in self.status:
          self._say(f"member {self.members[i].label} {self.status[i]}; the others carry on")
    if "ok" not in self.status:
      raise DivergenceError(" ".join(messages) if messages else "every member has diverged.")

  def _record(self, i: int, record: dict[str, Any]) -> None:
    """Member ``i``'s epoch: its health note, history, metrics.jsonl and checkpoint."""
    history, folder = self.histories[i], self.folders[i]
    record["health_note"] = health.suspect(record, history)
    record["healthy"] = record["health_note"] is None
    history.append(record)
    folder.write_history(history)
    c, epoch = self.members[i].config, record["epoch"]
    due = (epoch + 1) % c.run.checkpoint_every == 0 or epoch + 1 == c.schedule.epochs
    if folder.checkpointer is not None and due:
      folder.checkpointer.save(
        record["epoch"],
        self.member_state(i),
        {"epoch": record["epoch"], "history": history},
        healthy=record["healthy"],
        metric=record.get("val_acc"),
      )

  def _epoch_line(self, epoch: int, train_s: float) -> str:
    if not self.stacked:
      return _epoch_line(self.history[-1])
    return f"epoch {epoch} ({train_s:.1f}s, {len(self.members)} members): " + "  ".join(
      f"{m.label} {_fmt(h[-1].get(self.selected_on)) if h else '-'}"
      for m, h in zip(self.members, self.histories)
    )

  def _diverged_message(self, i: int, epoch: int, why: str) -> str:
    c, ckpt = self.members[i].config, self.folders[i].checkpointer
    msg = f"training diverged in epoch {epoch}: {why}. Lower lr (now {c.optim.lr}) or " + (
      f"lower kl_budget (now {c.weighting.kl_budget})."
      if c.weighting.kl_budget > 0
      else f"raise |lam| (now {c.weighting.lam})."
    )
    if ckpt is not None and ckpt.best_epoch() is not None:
      msg += (
        f" The last healthy checkpoint is epoch {ckpt.latest_healthy_epoch()}"
        f" (the best, kept apart from the rolling ones: epoch "
        f"{ckpt.best_epoch()}) in {ckpt.directory}; this epoch "
        f"was not saved, and a resume starts from the last healthy one."
      )
    return msg

  def _summary(self, i: int, wall_time_s: float) -> dict[str, Any]:
    """What ``summary.json`` records: the settings, the last epoch, and whether the weights
    were on, so that a run whose lam stage never began (a shortened schedule) is not taken for
    ABSGD."""
    c, exp, history = self.members[i].config, self.exps[i], self.histories[i]
    steps_run = c.schedule.epochs * self.steps_per_epoch
    # lam = inf without a KL budget weights every sample 1: momentum SGD (a sweep's baseline).
    uniform = c.method != "l2rw" and c.weighting.kl_budget <= 0 and math.isinf(c.weighting.lam)
    return {
      "config": run_folder.config_to_dict(c),
      "final": history[-1] if history else {},
      "weights": {
        "method": c.method,
        "first_step": self.weights_from,
        "on": self.weights_from is not None and self.weights_from < steps_run and not uniform,
      },
      "train_class_counts": exp.train_class_counts.tolist(),
      "train_size": len(exp.train),
      "wall_time_s": wall_time_s,
      "devices": self.mesh.size,
      "platform": jax.default_backend(),
    }


def _epoch_line(r: dict[str, Any]) -> str:
  acc = r.get("test_acc")
  return (
    f"epoch {r['epoch']}: loss {r['train_loss']:.4f}  weighted {r['weighted_loss']:.4f}  "
    f"train acc {r['train_acc']:.3f}  test acc "
    f"{'-' if acc is None else f'{acc:.3f}'}  ESS {r['ess_mean']:.1f}  "
    f"{r['epoch_time_s']:.1f}s"
  )


def _fmt(x: Any) -> str:
  return "-" if x is None else f"{x:.4f}"
