"""A hyper-parameter sweep as one program: M members trained side by side under one ``jax.jit``.

``absgd-train --config digits-lt --sweep lam=1,2,5,10`` trains four models at once. The train
step of :mod:`absgd_jax.train.step` is ``jax.vmap``-ed over a leading member axis of (state,
batch, hyper-parameters) and compiled once, so a small model that leaves an accelerator idle
(ResNet-32 at batch 128 is launch-bound on a GPU) trains M members for little more than the
price of one. Each member computes exactly what its own single run computes (``Trainer`` with
that member's config); ``tests/test_sweep.py`` checks it to the tolerance of the one-vs-eight
device tests.

What may vary inside one program (``SWEEPABLE``):

- ``lam``: a traced scalar per member (``absgd_weights`` accepts one), also inside the stage-2
  schedule (lam = inf before ``stage2_epoch``).
- ``gamma``: ``absgd_weights`` takes gamma as a Python float, so each distinct gamma gets its
  own weigher and a member picks its own with ``lax.switch`` on a per-member index (under vmap
  every branch runs and a select keeps the member's: a few vector operations per step).
- ``seed``: the init, the augmentation key, the batch order and the seeded data (imbalanced
  subset, validation split, label noise) are each member's own; the members' batches are then
  stacked as ``[M, B, ...]``. Without a seed sweep the members share each batch.

Anything else (the model, the batch size, the data set, ...) changes the program's shapes or
structure, and is refused, naming the key: run such values as separate runs.

On the CPU the members run one after another inside the program instead (``mode="map"``,
the default there): vmapped convolutions with per-member kernels become grouped convolutions,
which XLA:CPU runs far slower than separate ones (:func:`resolve_mode`).

The sweep writes one folder per member under ``out_dir`` (its ``config.json``,
``metrics.jsonl`` and ``summary.json``, as a single run writes them) and ``out_dir/sweep.jsonl``
with a row per member: its swept values, resolved config, final metrics, status and whether
it won. The winner is the healthy member with the best final balanced accuracy on the
validation split (``val_fraction > 0``); without a validation split it is chosen on the test
split, and every record and the printed table say so. A member that diverges is marked
``diverged`` (with the reason) and left out of the choice; the others carry on. A sweep keeps
no checkpoints: it is for choosing a value; train the winner as a single run to keep one.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import math
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

import absgd_jax
from absgd_jax.data import num_batches
from absgd_jax.models import create_model
from absgd_jax.train import config as config_lib
from absgd_jax.train import experiment_data, health, inputs, setup, weighting
from absgd_jax.train.config import Config
from absgd_jax.train.metrics import eval_metrics, train_epoch_metrics
from absgd_jax.train.step import cast_images, make_eval_step, make_train_step

# The settings a member may change inside one compiled program, with their value types.
SWEEPABLE = {"lam": float, "gamma": float, "seed": int}
_WEIGHTED = ("absgd", "abadam", "eg")


class Member(NamedTuple):
  """One model of a sweep: its swept values, its name and its whole (resolved) config."""

  values: dict[str, Any]  # e.g. {"lam": 5.0, "seed": 1}
  label: str  # e.g. "lam=5,seed=1": also its folder under the sweep's out_dir
  config: Config


def parse_sweep(items: Sequence[str]) -> dict[str, tuple[str, ...]]:
  """``["lam=1,2,5", "seed=0,1"]`` -> ``{"lam": ("1", "2", "5"), "seed": ("0", "1")}``.

  Raises:
    ValueError: naming the key, for a malformed item, an unknown or non-sweepable setting, a
      key given twice, an empty list or a repeated value.

  Examples:
    >>> parse_sweep(["lam=1, 2,5"])
    {'lam': ('1', '2', '5')}
  """
  fields = {f.name for f in dataclasses.fields(Config)}
  grid: dict[str, tuple[str, ...]] = {}
  sweepable = ", ".join(SWEEPABLE)
  for item in items:
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key:
      raise ValueError(f"--sweep expects KEY=V1,V2,...; got {item!r} (e.g. lam=1,2,5).")
    if key not in fields:
      raise ValueError(f"--sweep {key}: unknown setting {key!r}; the settings a sweep can vary "
                       f"in one program are {sweepable}.")
    if key not in SWEEPABLE:
      raise ValueError(
          f"--sweep {key}: {key!r} cannot vary inside one compiled program (it changes the "
          f"program's shapes, structure or data); the sweepable settings are {sweepable}. "
          f"Run one absgd-train --set {key}=... per value instead.")
    if key in grid:
      raise ValueError(f"--sweep {key} is given twice; list all its values in one --sweep "
                       f"{key}=V1,V2,...")
    values = tuple(v.strip() for v in text.split(",") if v.strip())
    if not values:
      raise ValueError(f"--sweep {key}= has no values; give a comma-separated list, e.g. "
                       f"{key}={'1,2,5' if SWEEPABLE[key] is float else '0,1,2'}.")
    grid[key] = values
  if not grid:
    raise ValueError("a sweep needs at least one --sweep KEY=V1,V2,...")
  return grid


def _typed(key: str, text: str) -> Any:
  try:
    return SWEEPABLE[key](text)
  except ValueError:
    raise ValueError(f"--sweep {key}: {text!r} is not "
                     f"{'a number' if SWEEPABLE[key] is float else 'an integer'}.") from None


def member_configs(config: Config, grid: dict[str, Sequence[Any]]) -> list[Member]:
  """The sweep's members: the product of the grid's values over ``config``, in grid order.

  Each member's ``out_dir`` is its label's folder under the sweep's: ``config.out_dir``, or,
  where that is the single run's default (:func:`~absgd_jax.train.config.default_out_dir`, which
  names one lam), ``runs/<preset>/<method>-sweep-<keys>-<fingerprint>``.

  Raises:
    ValueError: naming the key, for a value its setting refuses (through :class:`Config`), or
      a setting the method does not use (lam and gamma without ABSGD's weights, gamma with EG).

  Examples:
    >>> from absgd_jax.train import make_config
    >>> cfg = make_config("digits-lt", out_dir="runs/s")
    >>> members = member_configs(cfg, {"lam": ["1", "5"]})
    >>> [(m.label, m.config.lam, m.config.out_dir) for m in members]
    [('lam=1', 1.0, 'runs/s/lam=1'), ('lam=5', 5.0, 'runs/s/lam=5')]
  """
  if not grid:
    raise ValueError("a sweep needs at least one swept setting.")
  typed: dict[str, list[Any]] = {}
  for key, values in grid.items():
    if key not in SWEEPABLE:  # parse_sweep names it; a grid built in Python lands here.
      parse_sweep([f"{key}=" + ",".join(map(str, values))])
    if not values:
      parse_sweep([f"{key}="])
    typed[key] = [_typed(key, v) if isinstance(v, str) else SWEEPABLE[key](v) for v in values]
    if len(set(typed[key])) != len(typed[key]):
      raise ValueError(f"--sweep {key}: the values {list(values)} repeat one; each member must "
                       f"differ.")
  if config.kl_budget > 0:
    # The budget's weigher has its own state layout and no traced-lam form: one run each.
    raise ValueError(f"--sweep with kl_budget={config.kl_budget}: a sweep varies a fixed "
                     "lam; run a budget as a single run (or sweep with kl_budget=0).")
  if ("lam" in typed or "gamma" in typed) and config.method not in _WEIGHTED:
    key = "lam" if "lam" in typed else "gamma"
    raise ValueError(f"--sweep {key}: method={config.method!r} has no ABSGD weights, so "
                     f"{key} changes nothing; sweep it with method absgd, abadam or eg.")
  if "gamma" in typed and config.method == "eg":
    raise ValueError("--sweep gamma: method='eg' fixes gamma = 1 (the current batch alone); "
                     "sweep gamma with method absgd or abadam.")
  root = sweep_dir(config, list(typed))
  members = []
  for combo in itertools.product(*typed.values()):
    values = dict(zip(typed, combo))
    label = ",".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                     for k, v in values.items())
    try:
      cfg = dataclasses.replace(config, **values, out_dir=str(epath.Path(root) / label))
    except ValueError as e:
      raise ValueError(f"--sweep member {label}: {e}") from None
    members.append(Member(values, label, cfg))
  return members


def sweep_dir(config: Config, keys: Sequence[str]) -> str:
  """The sweep's folder: ``config.out_dir``, unless that is a single run's default name."""
  if config.out_dir != config_lib.default_out_dir(config):
    return config.out_dir
  return (f"runs/{config.preset or config.dataset}/{config.method}-sweep-{'-'.join(keys)}-"
          f"{config_lib.fingerprint(config)[:8]}")


def swept_absgd(lam: Any, gammas: Sequence[float], gamma_index: jax.Array | None = None
                ) -> weighting.Weighting:
  """ABSGD's weighting with a (possibly traced) lam and one of ``gammas`` chosen per member.

  gamma is a Python float inside :func:`absgd_jax.absgd_weights`, so it cannot be traced:
  each gamma gets its own weigher, and ``gamma_index`` (an int32 scalar, traced under vmap)
  picks one with ``lax.switch``. Their states share one layout (gamma is not in it).
  """
  if len(gammas) == 1:
    return weighting.absgd(lam, gammas[0])
  transforms = [absgd_jax.absgd_weights(lam, g) for g in gammas]

  def branch(transform, losses, state, mask):
    return transform.update(losses, state, mask=mask)

  def update(losses, state, *, mask=None):
    return jax.lax.switch(gamma_index, [functools.partial(branch, t) for t in transforms],
                          losses, state, mask)

  return weighting.as_weighting(absgd_jax.WeightTransform(transforms[0].init, update))


MEMBER_MODES = ("auto", "vmap", "map")


def resolve_mode(mode: str) -> str:
  """``auto`` is ``vmap`` on accelerators and ``map`` on the CPU.

  Under vmap the members' convolutions become one grouped convolution (each member has its
  own kernels), which XLA:CPU runs far slower than M separate ones (benchmarks/RESULTS.md,
  issue 12); a GPU or TPU, launch-bound on a small model, gains from it. ``map`` runs the
  members one after another inside the same compiled program (about M times one step).
  """
  if mode not in MEMBER_MODES:
    raise ValueError(f"mode={mode!r} is not one of {', '.join(MEMBER_MODES)}.")
  if mode == "auto":
    return "map" if jax.default_backend() == "cpu" else "vmap"
  return mode


def over_members(fn: Callable, mode: str, shared: tuple[bool, ...]) -> Callable:
  """``fn`` over a leading member axis of its arguments, except those marked ``shared``:
  vectorised (``vmap``) or one member after another (``map``), in one program either way."""
  if resolve_mode(mode) == "vmap":
    return jax.vmap(fn, in_axes=tuple(None if s else 0 for s in shared))

  def mapped(*args):
    # Unrolled rather than lax.map: XLA:CPU ran a ResNet step inside lax.map's loop many
    # times slower than the same step alone (benchmarks/RESULTS.md, issue 12).
    size = jax.tree.leaves(args[0])[0].shape[0]
    outs = [fn(*(a if s else jax.tree.map(lambda x, i=i: x[i], a) for a, s in zip(args, shared)))
            for i in range(size)]
    return _stack(outs)

  return mapped


def make_sweep_step(model: Any, tx: Any, loss_fn: Any,
                    weighting_for: Callable[[dict[str, jax.Array]], weighting.Weighting],
                    preprocess: Any = cast_images, *, num_classes: int,
                    shared_batch: bool = True, mode: str = "vmap") -> Callable:
  """``sweep_step(states, batch, hyper) -> (states, metrics)`` over a leading member axis.

  Each member runs :func:`absgd_jax.train.step.make_train_step`'s step, with the weighting
  ``weighting_for(hyper)`` builds from its own hyper-parameters (scalars, traced).
  ``states`` and ``hyper``'s arrays lead with the member axis ``M``; ``batch`` is ``[B, ...]``
  and shared (``shared_batch``) or ``[M, B, ...]``. ``mode``: see :func:`resolve_mode`.
  Not jitted: wrap it in ``jax.jit``.
  """

  def member_step(state, batch, hyper):
    step = make_train_step(model, tx, loss_fn, weighting_for(hyper), preprocess,
                           num_classes=num_classes)
    return step(state, batch)

  return over_members(member_step, mode, (False, shared_batch, False))


def _stack(trees: Sequence[Any]) -> Any:
  return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


class Sweep:
  """Trains a sweep's members in one jitted program (vmapped, or one after another).

  Args:
    config: the base config (a preset plus overrides); its ``out_dir`` holds the sweep.
    grid: ``{key: values}`` (strings or numbers), as :func:`parse_sweep` returns it.
    exp: the data, for a sweep without a seed axis (tests share one); built when None.
    progress, log, devices: as :class:`absgd_jax.train.Trainer`'s.
    mode: how the members share the program: ``vmap``, ``map`` or ``auto`` (see
      :func:`resolve_mode`).

  Examples:
    >>> from absgd_jax.train import make_config
    >>> cfg = make_config("digits-lt", epochs=1, out_dir="/tmp/absgd-sweep-doc")
    >>> out = Sweep(cfg, {"lam": [1, 5]}, progress=False, log=False).fit()
    >>> [m["label"] for m in out["members"]], out["selected_on"]
    (['lam=1', 'lam=5'], 'test_balanced_acc')
  """

  def __init__(self, config: Config, grid: dict[str, Sequence[Any]], *,
               exp: experiment_data.ExperimentData | None = None, progress: bool = True,
               log: bool = True, devices: list | None = None, mode: str = "auto"):
    self.config, self.progress, self.log = config, progress, log
    self.mode = resolve_mode(mode)
    self.members = member_configs(config, grid)
    M, C = len(self.members), config.num_classes
    # One data set per seed (lam and gamma do not change the data).
    by_seed: dict[int, experiment_data.ExperimentData] = {}
    for m in self.members:
      if m.config.seed not in by_seed:
        by_seed[m.config.seed] = (exp if exp is not None and m.config.seed == config.seed
                                  else experiment_data.build(m.config))
    self.exps = [by_seed[m.config.seed] for m in self.members]
    # Members share each batch unless their seeds (and so their batch orders) differ.
    self.shared_batches = len(by_seed) == 1
    self._check_data()
    devices = jax.devices() if devices is None else list(devices)
    config_lib.validate_for_data(config, len(self.exps[0].train), len(devices),
                                 jax.process_count())
    self.mesh = Mesh(np.array(devices), ("data",))
    replicated = NamedSharding(self.mesh, P())
    self.batch_sharding = NamedSharding(self.mesh, P("data"))
    self.stacked_sharding = NamedSharding(self.mesh, P(None, "data"))
    exp0 = self.exps[0]
    self.steps_per_epoch = spe = num_batches(len(exp0.train), config.batch_size)
    dtype = jnp.bfloat16 if config.dtype == "bfloat16" else jnp.float32
    self.model = create_model(config.model, C, head=config.head, dtype=dtype)
    sample = (np.zeros((1, config.crop_size, config.crop_size, 3), np.float32)
              if config.streamed else np.asarray(exp0.train.images[:1], np.float32))
    # Each member starts where its single run starts; without a seed axis they all start alike.
    variables = [setup.init_variables(config, self.model, sample)] * M
    if not self.shared_batches:
      variables = [setup.init_variables(m.config, self.model, sample) for m in self.members]
    self.tx, _ = setup.make_optimizer(config, spe, variables[0]["params"])
    self.loss_fn = setup.make_loss_fn(config, exp0.train_class_counts, spe)
    self.preprocess = setup.make_preprocess(config)
    states = [setup.init_state(m.config, v, self.tx,
                               setup.make_weighting(m.config, spe, self.model.apply, self.loss_fn))
              for m, v in zip(self.members, variables)]
    self.state = jax.device_put(_stack(states), replicated)
    self.hyper, self.gammas = self._hyper(grid)
    sweep_step = make_sweep_step(self.model, self.tx, self.loss_fn, self._weighting,
                                 self.preprocess, num_classes=C,
                                 shared_batch=self.shared_batches, mode=self.mode)
    self.train_step = jax.jit(sweep_step, donate_argnums=0,
                              out_shardings=(replicated, replicated))
    eval_step = make_eval_step(self.model, num_classes=C, preprocess=self.preprocess)
    self.eval_step = jax.jit(over_members(eval_step, self.mode, (False, self.shared_batches)),
                             out_shardings=replicated)
    self._stack_batches = jax.jit(_stack, out_shardings=self.stacked_sharding)
    self.guards = [health.ClassCollapseGuard(m.config.collapse_weight, m.config.collapse_steps,
                                             e.train.class_names)
                   for m, e in zip(self.members, self.exps)]
    self.histories: list[list[dict[str, Any]]] = [[] for _ in self.members]
    self.status = ["ok"] * M
    self.out = epath.Path(sweep_dir(config, list(grid)))

  def _check_data(self) -> None:
    """Members with other seeds must still fit one program: same sizes (and class counts
    where the loss uses them)."""
    e0 = self.exps[0]
    uses_counts = self.config.class_weighting != "none" or self.config.loss == "ldam"
    for m, e in zip(self.members, self.exps):
      sizes = [len(e.train), len(e.test), 0 if e.val is None else len(e.val)]
      sizes0 = [len(e0.train), len(e0.test), 0 if e0.val is None else len(e0.val)]
      if sizes != sizes0:
        raise ValueError(f"--sweep seed: member {m.label} has (train, test, val) sizes {sizes} "
                         f"where {self.members[0].label} has {sizes0}; one program needs "
                         f"equal shapes. Run these seeds as separate runs.")
      if uses_counts and not np.array_equal(e.train_class_counts, e0.train_class_counts):
        raise ValueError(f"--sweep seed: member {m.label}'s class counts differ from "
                         f"{self.members[0].label}'s, and loss={self.config.loss!r} with "
                         f"class_weighting={self.config.class_weighting!r} depends on them. "
                         f"Run these seeds as separate runs.")

  def _hyper(self, grid) -> tuple[dict[str, jax.Array], tuple[float, ...]]:
    """The per-member arrays of the traced hyper-parameters, and the distinct gammas."""
    hyper = {}
    if "lam" in grid:
      hyper["lam"] = jnp.asarray([m.config.lam for m in self.members], jnp.float32)
    gammas = (1.0,) if self.config.method == "eg" else (self.config.gamma,)
    if "gamma" in grid:
      gammas = tuple(dict.fromkeys(m.config.gamma for m in self.members))
      hyper["gamma_index"] = jnp.asarray([gammas.index(m.config.gamma) for m in self.members],
                                         jnp.int32)
    return hyper, gammas

  def _weighting(self, hyper: dict[str, jax.Array]) -> weighting.Weighting:
    c, spe = self.config, self.steps_per_epoch
    if not hyper:  # a seed sweep: the single run's weighting, whatever the method
      return setup.make_weighting(c, spe, self.model.apply, self.loss_fn)
    return swept_absgd(setup.lam_schedule(c, spe, hyper.get("lam")), self.gammas,
                       hyper.get("gamma_index"))

  def _batches(self, streams):
    if self.shared_batches:
      yield from streams[0]
    else:
      for batches in zip(*streams):
        yield self._stack_batches(list(batches))

  def _train_batches(self, epoch: int):
    streams = [inputs.train_batches(m.config, e, epoch, self.batch_sharding)
               for m, e in (zip(self.members, self.exps) if not self.shared_batches
                            else [(self.members[0], self.exps[0])])]
    return self._batches(streams)

  def _evaluate(self, split: str) -> list[dict[str, Any]]:
    """Each member's metrics on ``split`` ("test" or "val")."""
    exps = self.exps[:1] if self.shared_batches else self.exps
    streams = [inputs.eval_batches(self.config, getattr(e, split), self.batch_sharding)
               for e in exps]
    correct = count = 0.0
    for batch in self._batches(streams):
      out = jax.device_get(self.eval_step(self.state, batch))
      correct, count = correct + out["class_correct"], count + out["class_count"]
    return [eval_metrics(correct[i], count[i], e.train_class_counts, split)
            for i, e in enumerate(self.exps)]

  @property
  def selected_on(self) -> str:
    """The metric the winner is chosen on: validation balanced accuracy, else the test's."""
    return "val_balanced_acc" if self.exps[0].val is not None else "test_balanced_acc"

  def _say(self, line: str) -> None:
    if self.progress and jax.process_index() == 0:
      print(line, flush=True)

  def _write(self, path: epath.Path, text: str) -> None:
    if jax.process_index() == 0 and self.log:  # Through a temporary file (disk, GCS...).
      path.parent.mkdir(parents=True, exist_ok=True)
      tmp = path.parent / (path.name + ".tmp")
      tmp.write_text(text)
      tmp.replace(path)

  def fit(self) -> dict[str, Any]:
    """Trains every member to ``config.epochs``; returns the sweep's summary (see
    :func:`table`), having written the member folders and ``sweep.jsonl``."""
    c, t0, M = self.config, time.perf_counter(), len(self.members)
    if jax.process_index() == 0 and self.log:  # Each member's folder is a run's folder.
      for m in self.members:
        config_lib.write_run_config(m.config)
    for epoch in range(c.epochs):
      te = time.perf_counter()
      steps = []
      for batch in self._train_batches(epoch):
        self.state, metrics = self.train_step(self.state, batch, self.hyper)
        steps.append(metrics)
      steps = jax.device_get(steps)
      evals = [{} for _ in range(M)]
      if (epoch + 1) % c.eval_every == 0 or epoch + 1 == c.epochs:
        for split in ("test", "val") if self.exps[0].val is not None else ("test",):
          for i, r in enumerate(self._evaluate(split)):
            evals[i].update(r)
      epoch_s = time.perf_counter() - te
      for i, m in enumerate(self.members):
        if self.status[i] != "ok":
          continue
        per_step = [{k: v[i] for k, v in s.items()} for s in steps]
        record = {"epoch": epoch, **train_epoch_metrics(per_step)}
        first = epoch * self.steps_per_epoch
        record["collapsed_classes"] = [
            hit for j, s in enumerate(per_step) for hit in self.guards[i].update(s, first + j)]
        for hit in record["collapsed_classes"]:
          self._say(f"warning: member {m.label}: " + self.guards[i].message(hit))
        why = health.divergence(record, self.histories[i])
        if why is not None:
          self.status[i] = f"diverged in epoch {epoch}: {why}"
          self._say(f"member {m.label} {self.status[i]}; the others carry on")
          continue
        record.update(evals[i], sweep_epoch_time_s=epoch_s, members=M)
        record["health_note"] = health.suspect(record, self.histories[i])
        record["healthy"] = record["health_note"] is None
        self.histories[i].append(record)
        self._write(epath.Path(m.config.out_dir) / "metrics.jsonl",
                    "".join(json.dumps(r, default=_json_default) + "\n"
                            for r in self.histories[i]))
      self._say(f"epoch {epoch} ({epoch_s:.1f}s, {M} members): " + "  ".join(
          f"{m.label} {_fmt(h[-1].get(self.selected_on)) if h else '-'}"
          for m, h in zip(self.members, self.histories)))
    return self._finish(time.perf_counter() - t0)

  def _finish(self, wall_time_s: float) -> dict[str, Any]:
    key = self.selected_on
    scores = [h[-1].get(key) if s == "ok" and h else None
              for s, h in zip(self.status, self.histories)]
    ok = [i for i, x in enumerate(scores) if x is not None and math.isfinite(x)]
    winner = max(ok, key=lambda i: scores[i]) if ok else None  # ties: the first listed
    rows = []
    for i, (m, e) in enumerate(zip(self.members, self.exps)):
      final = self.histories[i][-1] if self.histories[i] else {}
      summary = {"config": config_lib.config_to_dict(m.config), "final": final, "sweep": m.values,
                 "status": self.status[i], "train_class_counts": e.train_class_counts.tolist(),
                 "train_size": len(e.train), "wall_time_s": wall_time_s,
                 "devices": self.mesh.size, "platform": jax.default_backend()}
      self._write(epath.Path(m.config.out_dir) / "summary.json",
                  json.dumps(summary, indent=1, default=_json_default))
      rows.append({"member": i, "label": m.label, "sweep": m.values, "status": self.status[i],
                   "selected_on": key, "score": scores[i], "winner": i == winner,
                   "config": config_lib.config_to_dict(m.config), "final": final})
    self._write(self.out / "sweep.jsonl",
                "".join(json.dumps(r, default=_json_default) + "\n" for r in rows))
    out = {"members": rows, "selected_on": key,
           "winner": None if winner is None else self.members[winner].label,
           "wall_time_s": wall_time_s}
    self._say(table(out))
    return out


def table(summary: dict[str, Any]) -> str:
  """The sweep's members as a text table, the winner starred, with what it was chosen on."""
  key = summary["selected_on"]
  head = f"{'member':<24} {key:>18} {'test_acc':>9} {'test_bal':>9} {'loss':>8}  status"
  lines = [head]
  for r in summary["members"]:
    f = r["final"]
    lines.append(f"{('* ' if r['winner'] else '  ') + r['label']:<24} {_fmt(r['score']):>18} "
                 f"{_fmt(f.get('test_acc')):>9} {_fmt(f.get('test_balanced_acc')):>9} "
                 f"{_fmt(f.get('train_loss')):>8}  {r['status']}")
  if summary["winner"] is None:
    lines.append("no healthy member: no winner.")
  else:
    note = ("" if key.startswith("val") else
            " (no validation split: chosen on the test split; set val_fraction > 0 to keep "
            "the test split for reporting)")
    lines.append(f"winner: {summary['winner']}, by final {key}{note}")
  return "\n".join(lines)


def _fmt(x: Any) -> str:
  return "-" if x is None else f"{x:.4f}"


def _json_default(x):
  if isinstance(x, (np.floating, np.integer)):
    return x.item()
  raise TypeError(type(x))


def main(config: Config, grid: dict[str, Sequence[Any]], *, progress: bool = True) -> int:
  """``absgd-train --sweep``: runs the sweep; 0 if some member is healthy, 2 otherwise."""
  out = Sweep(config, grid, progress=progress).fit()
  if not progress and jax.process_index() == 0:  # fit() printed it otherwise
    print(table(out))
  return 0 if out["winner"] is not None else 2
