"""The runner the paper's tables share: a queue of runs, each trained once and recorded at once.

A table module (:mod:`experiments.table1`, :mod:`~experiments.table2`,
:mod:`~experiments.table6`) describes its runs as a *plan*: a function of the records made so
far that lists, in training order, each run it can name (:class:`Run`: its record file, key,
the fields its report groups by, and its config), and a :class:`Wait` where it cannot name one
yet (a row's table runs wait for its tuning). :func:`execute` trains a plan:

- a run whose key is already in its record file is skipped, so a rerun resumes where the last
  one stopped, and the runs recorded by another machine or an older version count as done;
- each run is claimed with a lock file, so several workers share one queue;
- each finished run appends its record at once (and, with a mirror folder, a copy there), so a
  job stopped early loses only the runs it had in flight;
- runs that differ only in lam and seed (an SGD run is ABSGD at lam = inf) train together as
  the members of one program (:class:`absgd_jax.train.Sweep`) when the strategy says so;
- with a deadline, a run starts only if its estimated time fits what is left (a group of
  members that does not fit is tried with fewer), and the first run that does not fit alone
  ends the job, which says what it estimated and why it stopped. The estimate is the median
  wall time of records made on the same device by the same strategy for the same shape of
  run (data, model, epochs, members); else such records scaled by the work (epochs x images
  x runs); else the probe's rate, where the probe timed this model and size; else a quick
  measure, 2 epochs of the same program.

A :class:`Strategy` is how the runs share the device: one at a time or as members, in one
process or several, in float32 or bfloat16, host-fed or device-resident. ``--strategy auto``
takes the fastest variant the GPU probe measured (``benchmarks/gpu_probe.py``'s JSON) that
the kit can run; without a probe, members of up to 6 on an accelerator and single runs on the
CPU.

:func:`parser`, :func:`parse` and :func:`run` are the command line every table module shares
(``--protocol``, ``--budget-s``, ``--strategy``, ``--report``, ...): a module adds its own
options and passes its plan.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import hashlib
import json
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

from experiments import common

# The per-epoch fields a record keeps: the imbalance tables' class weights and the noise
# table's flipped/clean weights and lam's path.
HISTORY_KEYS = (*common.HISTORY_KEYS, "val_balanced_acc", "epoch_time_s")
# What sets the cost of a run: two runs alike in these take about the same time.
SHAPE_KEYS = (
  "preset",
  "dataset",
  "imbalance",
  "rho",
  "n_max",
  "test_per_class",
  "val_fraction",
  "model",
  "image_size",
  "epochs",
  "batch_size",
  "dtype",
  "eval_every",
)
# What sets the cost of a run per image and epoch.
PER_IMAGE_KEYS = ("model", "image_size", "batch_size", "dtype", "head")
MARGIN = 1.15  # An estimate is a median; a run takes up to this much longer and still fits.
PROBE_CAUTION = 1.5  # The probe times the step alone; the loop around it adds to that.
MIN_LEFT_S = 5.0
LOOKAHEAD = 48  # How far down the queue a group looks for runs to train beside its first.
MIRROR: str | None = None  # --mirror: a folder that gets a copy of each record appended.
PROTOCOL_NAMES = ("tiny", "reduced", "full")


@dataclasses.dataclass(frozen=True)
class Run:
  """One run of a table: trained once, recorded under ``key`` in ``results``."""

  results: str  # the record file (JSONL)
  key: str
  fields: dict  # what the report groups by (stage, setting, row, seed, the tuned value)
  make: Callable[[], Any]  # the run's Config, built when it is needed
  label: str = ""  # how the log names it; the key if empty

  @property
  def name(self) -> str:
    return self.label or self.key


@dataclasses.dataclass(frozen=True)
class Wait:
  """A run a plan cannot name yet, and what it waits for."""

  what: str


@dataclasses.dataclass(frozen=True)
class Strategy:
  """How the runs share the device.

  ``members`` runs at most train as the members of one program (1: one run at a time), in the
  sweep's ``mode``; ``procs`` processes take runs from the queue at once. ``dtype`` (empty:
  each config's own) and ``input_pipeline`` are set on every run; ``xla_flags`` are added to
  the workers' XLA flags. ``source`` says where the choice came from.
  """

  members: int = 1
  mode: str = "auto"
  procs: int = 1
  dtype: str = ""
  input_pipeline: str = "auto"
  xla_flags: str = ""
  source: str = "defaults"
  # What the probe measured of it: images/s of one process (over its members), its compile
  # time, and the run it timed (model, image size, batch), for the estimates.
  probe_rate: float = 0.0
  probe_compile_s: float = 0.0
  probe_run: tuple = ()

  @property
  def name(self) -> str:
    """The probe's name for it: ``DTYPE-FEED-MEMBERS[-procsP]`` (``f32-auto-vmap6``)."""
    dtype = {"bfloat16": "bf16", "float32": "f32", "": "f32"}[self.dtype]
    mode = {"map": "unrolled"}.get(self.mode, self.mode)
    core = f"{dtype}-{self.input_pipeline}-" + (
      "1" if self.members == 1 else f"{mode}{self.members}"
    )
    return core + (f"-procs{self.procs}" if self.procs > 1 else "")

  def settings(self) -> dict[str, Any]:
    """The settings it lays under every run's own."""
    out = {"input_pipeline": self.input_pipeline}
    if self.dtype:
      out["dtype"] = self.dtype
    return out

  def in_children(self) -> bool:
    """Whether the runs must train in processes of their own (XLA reads its flags at start)."""
    return self.procs > 1 or bool(self.xla_flags)


def default_strategy(platform: str) -> Strategy:
  """Members of up to 6 on an accelerator (a small model leaves it idle); single runs on the
  CPU, where vmapped members are slower than separate runs (docs/results/sweeps.md)."""
  if platform == "cpu":
    return Strategy(source="defaults for the CPU: one run at a time")
  return Strategy(members=6, mode="vmap", source=f"defaults for {platform}: members of up to 6")


# The probe's variant names (benchmarks/gpu_probe.py): DTYPE-FEED-MEMBERS[-procsP][-XLA].
_VARIANT = re.compile(
  r"^(f32|bf16)-(host|device)-(?:1|(vmap|laxmap|unrolled|async)(\d+))(?:-procs(\d+))?(?:-(\w+))?$"
)
# The member modes the kit's Sweep has, by the probe's name for them.
_KIT_MODES = {"vmap": "vmap", "unrolled": "map"}


def strategy_from_probe(path: str) -> Strategy | None:
  """The fastest variant of a GPU probe's JSON that the kit can run, or None if none ran.

  Fastest by images/s summed over the variant's runs, which is what a table of many runs
  needs. ``laxmapM`` and ``asyncM`` have no counterpart in the kit and are passed over.
  """
  with open(path) as f:
    data = json.load(f)
  timed = data.get("probe", {}).get("args", {})
  timed = (timed.get("model"), timed.get("image_size"), timed.get("batch"))
  best, best_ips = None, 0.0
  for name, r in data.get("variants", {}).items():
    if r.get("status") != "ok":
      continue
    match = _VARIANT.match(r.get("resolved", name))
    if not match:
      continue
    dtype, feed, mode, members, procs, _ = match.groups()
    if mode is not None and mode not in _KIT_MODES:
      continue
    ips = float(r.get("images_per_s") or 0.0)
    if ips > best_ips:
      best_ips = ips
      best = Strategy(
        members=int(members or 1),
        mode=_KIT_MODES.get(mode or "", "auto"),
        procs=int(procs or 1),
        dtype="bfloat16" if dtype == "bf16" else "float32",
        input_pipeline=feed,
        xla_flags=r.get("xla_flags", ""),
        source=f"the probe's fastest runnable variant, {name} ({ips:,.0f} images/s), in {path}",
        probe_rate=ips / int(procs or 1),
        probe_compile_s=float(r.get("compile_s") or 0.0),
        probe_run=timed,
      )
  return best


def find_probe(platform: str, device: str) -> str | None:
  """``benchmarks/results/gpu_probe_<platform>_<device>.json`` for this device, if there."""
  kind = re.sub(r"[^a-z0-9]+", "-", device.lower()).strip("-")
  path = os.path.join(common.ROOT, "benchmarks", "results", f"gpu_probe_{platform}_{kind}.json")
  return path if os.path.exists(path) else None


# --- records --------------------------------------------------------------------------------


def append(path: str, record: dict) -> None:
  """Appends ``record`` to ``path``, and to the mirror folder's file of the same name."""
  common.append_record(path, record)
  if MIRROR:
    common.append_record(os.path.join(MIRROR, os.path.basename(path)), record)


def done_keys(paths: Sequence[str]) -> dict[str, set[str]]:
  return {p: {r["key"] for r in common.read_records(p)} for p in set(paths)}


def choose(scores: Sequence[tuple[Any, float | None]]) -> Any:
  """The point with the best score; None until every point has one. Ties go to the first."""
  if not scores or any(s is None for _, s in scores):
    return None
  best = max(range(len(scores)), key=lambda i: (scores[i][1], -i))
  return scores[best][0]


def _measurements(summary: dict, history: list, n_train: int, wall_s: float, cpu_s: float):
  final = summary["final"]
  tests = [h["test_acc"] for h in history if h.get("test_acc") is not None]
  return dict(
    config=summary["config"],
    wall_s=wall_s,
    cpu_s=cpu_s,
    test_acc=final.get("test_acc"),
    test_balanced_acc=final.get("test_balanced_acc"),
    best_test_acc=max(tests) if tests else None,
    val_acc=final.get("val_acc"),
    val_balanced_acc=final.get("val_balanced_acc"),
    train_acc=final.get("train_acc"),
    train_loss=final.get("train_loss"),
    train_images=n_train,
    history=[{k: h.get(k) for k in HISTORY_KEYS} for h in history],
  )


# --- members --------------------------------------------------------------------------------

_SWEPT = ("lam", "seed")


def _member_view(config) -> dict | None:
  """A run's settings as a sweep member sees them (an SGD run is ABSGD at lam = inf), or None
  for a run that cannot be a member (a KL budget, another method)."""
  from absgd_jax.train.run_folder import config_to_dict

  flat = config_to_dict(config)
  if flat["kl_budget"] > 0 or flat["method"] not in ("sgd", "absgd"):
    return None
  if flat["method"] == "sgd":
    flat.update(method="absgd", lam="inf")
  flat.pop("out_dir")
  return flat


def _same_program(a: dict | None, b: dict | None) -> bool:
  if a is None or b is None:
    return False
  return all(a[k] == b[k] for k in a if k not in _SWEPT) and (a["lam"], a["seed"]) != (
    b["lam"],
    b["seed"],
  )


def group(pending: Sequence[Run], size: int) -> list[Run]:
  """The first pending run and the later ones that can train beside it in one program (up to
  ``size`` runs, in queue order)."""
  head = pending[0]
  if size <= 1:
    return [head]
  views = [_member_view(head.make())]
  out = [head]
  for run in pending[1 : 1 + LOOKAHEAD]:
    if len(out) == size:
      break
    if run.results != head.results:
      continue
    view = _member_view(run.make())
    if all(_same_program(view, v) for v in views):
      out.append(run)
      views.append(view)
  return out


def _lam_seed(configs: Sequence[Any]) -> list[tuple[float, int]]:
  return [(math.inf if c.method == "sgd" else c.weighting.lam, c.seed) for c in configs]


def is_grid(runs: Sequence[Run]) -> bool:
  """Whether ``runs`` are a whole grid of lam x seed, as a Sweep trains them (a part of one
  would train the rest of it too)."""
  cells = _lam_seed([r.make() for r in runs])
  return len({c[0] for c in cells}) * len({c[1] for c in cells}) == len(cells)


def _sweep_of(runs: Sequence[Run], configs: Sequence[Any]):
  """A Sweep's base config and grid for ``runs`` (one program), and each member's run index
  (None for a member of the grid's product that no run asked for)."""
  all_sgd = all(c.method == "sgd" for c in configs)
  members = _lam_seed(configs)
  base = next((c for c in configs if c.method != "sgd"), configs[0])
  grid: dict[str, list] = {}
  lams = list(dict.fromkeys(m[0] for m in members))
  seeds = list(dict.fromkeys(m[1] for m in members))
  if not all_sgd and len(lams) > 1:
    grid["lam"] = lams
  if len(seeds) > 1 or not grid:
    grid["seed"] = seeds
  if "lam" not in grid and not all_sgd:
    base = base.replace(lam=lams[0])
  combos = [dict(zip(grid, c)) for c in _product(list(grid.values()))]
  index = []
  for combo in combos:
    want = (combo.get("lam", lams[0] if not all_sgd else math.inf), combo.get("seed", seeds[0]))
    index.append(members.index(want) if want in members else None)
  return base, grid, index


def _product(lists):
  out = [()]
  for values in lists:
    out = [p + (v,) for p in out for v in values]
  return out


def train_runs(runs: Sequence[Run], strategy: Strategy, out_dir: str) -> list[dict | None]:
  """Trains ``runs`` (one, or the members of one program); returns each run's measurements
  (None for one that diverged)."""
  import jax

  from absgd_jax.train import DivergenceError, RunMismatchError, Sweep, Trainer

  configs = [r.make() for r in runs]
  t0, c0 = time.time(), time.process_time()
  if len(runs) == 1:
    start, index = functools.partial(Trainer, configs[0]), [0]
  else:
    base, grid, index = _sweep_of(runs, configs)
    start = functools.partial(Sweep, base.replace(out_dir=out_dir), grid, mode=strategy.mode)
  try:
    trainer = start(progress=False, log=False)
  except RunMismatchError:  # A folder left by other settings: these runs start afresh.
    trainer = start(progress=False, log=False, new_run=True)
  try:
    summaries = trainer.fit()
  except DivergenceError:  # Every member diverged; the records say nothing of them.
    summaries = [None] * len(trainer.members)
  wall_s, cpu_s = time.time() - t0, time.process_time() - c0
  device = str(jax.devices()[0].device_kind)
  out: list[dict | None] = [None] * len(runs)
  for i, j in enumerate(index):
    if j is None or summaries[i] is None:
      continue
    n_train = len(trainer.exps[i].train)
    out[j] = _measurements(summaries[i], trainer.histories[i], n_train, wall_s, cpu_s)
    out[j].update(device=device, strategy=strategy.name, members=len(runs))
  return out


# --- estimates ------------------------------------------------------------------------------


def _shape(flat: dict) -> tuple:
  return tuple(json.dumps(flat.get(k)) for k in SHAPE_KEYS)


def approx_images(config) -> int:
  """About how many training images ``config`` reads (no data is read): its classes' sizes
  after the imbalance, less the validation split."""
  from absgd_jax.data.facts import facts
  from absgd_jax.data.imbalance import imbalanced_counts

  f = facts(config.data.dataset)
  per_class = config.data.n_max or (f.train_size // max(f.num_classes, 1))
  if config.data.imbalance == "none":
    n = per_class * f.num_classes
  else:
    n = int(
      imbalanced_counts(per_class, f.num_classes, config.data.rho, config.data.imbalance).sum()
    )
  return max(1, int(n * (1 - config.data.val_fraction)))


class Estimator:
  """How long a group of runs will take, and why it thinks so: from records of this device and
  strategy (the same shape and group size, else scaled by the work), else from the probe's
  rate where the probe timed this model and size, else from a quick measure."""

  def __init__(self, strategy: Strategy, device: str, measure: Callable | None = None):
    self.strategy, self.device = strategy, device
    self.measure = measure or quick_measure
    self.measured: dict[tuple, tuple[int, float]] = {}

  def __call__(self, runs: Sequence[Run], records: list[dict]) -> tuple[float, str]:
    from absgd_jax.train.run_folder import config_to_dict

    config = runs[0].make()
    flat, k = config_to_dict(config), len(runs)
    mine = [
      r
      for r in records
      if r.get("device") == self.device
      and r.get("strategy") == self.strategy.name
      and r.get("wall_s") is not None
      and isinstance(r.get("config"), dict)
    ]
    same = [r for r in mine if r.get("members", 1) == k and _shape(r["config"]) == _shape(flat)]
    if same:
      s = statistics.median(r["wall_s"] for r in same)
      return s, f"the median of {_n(len(same), 'record')} of this shape on {self.device}"
    # Runs of the same model, size, batch and dtype cost the same per image and epoch.
    work = config.schedule.epochs * approx_images(config) * k
    rates = [
      r["wall_s"] / (r["config"]["epochs"] * r["train_images"] * r.get("members", 1))
      for r in mine
      if r.get("train_images") and all(r["config"].get(x) == flat[x] for x in PER_IMAGE_KEYS)
    ]
    if rates:
      s = statistics.median(rates) * work
      return s, f"{_n(len(rates), 'record')} on {self.device} scaled by epochs x images x runs"
    if config.schedule.epochs <= 2:
      return 0.0, "nothing: a run of 2 epochs or fewer is its own measure"
    probed = self.from_probe(config, k)
    if probed is not None:
      return probed, f"the probe's {self.strategy.probe_rate:,.0f} images/s, x{PROBE_CAUTION}"
    shape = _shape(flat)
    if shape not in self.measured:
      self.measured[shape] = (k, self.measure(runs, self.strategy))
    k0, s = self.measured[shape]
    return s * k / k0, f"a quick measure (2 epochs of {_n(k0, 'run')} of this shape)"

  def from_probe(self, config, k: int) -> float | None:
    """The group's time at the probe's rate, where the probe timed this model, image size
    and batch: its epochs and evaluations of its k runs (an evaluation costs a third of a
    training pass per image), the probe's compile time for each program, and the data's
    loading; x ``PROBE_CAUTION``, since the probe times the step alone (and a program of
    fewer members than the probe's runs at a lower rate)."""
    s = self.strategy
    size = config.input.image_size or 32
    if not s.probe_rate or s.probe_run != (config.model.name, size, config.optim.batch_size):
      return None
    from absgd_jax.data.facts import facts

    epochs = config.schedule.epochs
    train_s = epochs * approx_images(config) * k / s.probe_rate
    tests = (config.data.test_per_class or 1000) * facts(config.data.dataset).num_classes
    eval_s = (epochs / max(config.run.eval_every, 1)) * tests * k / s.probe_rate / 3
    return PROBE_CAUTION * (train_s + eval_s) + 3 * s.probe_compile_s + 30.0


def _n(n: int, what: str) -> str:
  return f"{n} {what}" + ("" if n == 1 else "s")


def quick_measure(runs: Sequence[Run], strategy: Strategy) -> float:
  """The group's time, from 2 epochs of the same program: its overhead (data, compiling) plus
  the second epoch's time for each epoch, and the evaluations in proportion."""
  from absgd_jax.train.presets import scale_epochs

  scratch = tempfile.mkdtemp(prefix="absgd-measure-")
  configs = [r.make() for r in runs]
  epochs = configs[0].schedule.epochs
  if epochs <= 2:
    return 0.0  # A two-epoch run measures itself.
  probe_runs = []
  for r, c in zip(runs, configs):
    scaled = scale_epochs(c.flat(), epochs, 2)
    small = c.replace(epochs=2, eval_every=2, checkpoint=False, out_dir=scratch, **scaled)
    probe_runs.append(dataclasses.replace(r, make=lambda small=small: small))
  t0 = time.time()
  got = train_runs(probe_runs, strategy, os.path.join(scratch, "members"))
  total = time.time() - t0
  hist = next(g for g in got if g is not None)["history"]
  second = hist[-1].get("epoch_time_s") or total / 2
  evals = max(1, epochs // max(configs[0].run.eval_every, 1))
  eval_s = max(total - sum(h.get("epoch_time_s") or 0 for h in hist), 0) / 2  # one of 2
  return total + (epochs - 2) * second + (evals - 1) * min(eval_s, second)


# --- the queue ------------------------------------------------------------------------------


@dataclasses.dataclass
class Outcome:
  trained: list[str] = dataclasses.field(default_factory=list)
  failed: list[str] = dataclasses.field(default_factory=list)
  stopped: str = ""  # why the job ended before the plan did; empty when it is done
  missing: list[str] = dataclasses.field(default_factory=list)


def execute(
  plan: Callable[[], list],
  strategy: Strategy,
  *,
  deadline: float | None = None,
  log: Callable[[str], None] = print,
  train: Callable | None = None,
  estimator: Callable | None = None,
  clock: Callable[[], float] = time.time,
  wait_s: float = 10.0,
) -> Outcome:
  """Trains the runs of ``plan`` in its order (see the module's docstring).

  Args:
    plan: returns the runs and waits in training order, from the records as they are now;
      called again after every group of runs.
    strategy: how the runs share the device (here: how many may train as members).
    deadline: a ``clock()`` time; a run starts only if its estimate ends before it.
    train: ``(runs, strategy, out_dir) -> measurements per run`` (default
      :func:`train_runs`).
    estimator: ``(runs, records) -> (seconds, why)`` (default :class:`Estimator`).
    clock, wait_s: the time, and how long to wait for runs other workers hold.
  """
  train = train or train_runs
  out = Outcome()
  failed: set[str] = set()
  if estimator is None and deadline is not None:
    import jax

    estimator = Estimator(strategy, str(jax.devices()[0].device_kind))
  while True:
    items = plan()
    runs = [i for i in items if isinstance(i, Run)]
    done = done_keys([r.results for r in runs])
    pending = [r for r in runs if r.key not in done[r.results] and r.key not in failed]
    waits = [i.what for i in items if isinstance(i, Wait)]
    free = [r for r in pending if not _locked(r)]
    if not free:
      out.missing = [r.key for r in pending]
      if not pending:  # Nothing is training anywhere: what still waits cannot start.
        if waits:
          out.stopped = "these wait on runs that did not finish: " + "; ".join(waits[:3])
        return out
      if not waits:  # The rest is in other workers' hands, and nothing here waits on it.
        log(f"the {len(pending)} runs left are being trained by other workers")
        return out
      if deadline is not None and clock() + wait_s > deadline:
        out.stopped = "the deadline came while other workers held the remaining runs"
        return out
      log(f"waiting {wait_s:.0f} s for runs other workers hold ({len(pending)} pending)")
      time.sleep(wait_s)
      continue
    batch = group(free, strategy.members)
    # The sizes at which the group is a whole grid of lam x seed, largest first.
    sizes = [n for n in range(len(batch), 1, -1) if is_grid(batch[:n])] + [1]
    batch = batch[: sizes[0]]
    if deadline is not None:
      left = deadline - clock()
      if left < MIN_LEFT_S:
        out.stopped, out.missing = f"{left:.0f} s left", [r.key for r in pending]
        log(f"stopped before {batch[0].name}: {out.stopped}")
        return out
      recs = common.read_records(batch[0].results)
      # A group that does not fit may fit with fewer members; the first run alone is the last
      # try, and the one the message names.
      for size in sizes:
        seconds, why = estimator(batch[:size], recs)
        left = deadline - clock()
        if MARGIN * seconds <= left:
          break
      batch = batch[:size]
      if MARGIN * seconds > left:
        out.stopped = (
          f"{batch[0].name} needs about {MARGIN * seconds:.0f} s ({seconds:.0f} s from {why}, "
          f"x{MARGIN}); {left:.0f} s left"
        )
        out.missing = [r.key for r in pending]
        log(f"stopped: {out.stopped}")
        return out
      log(f"next: {_what(batch)}, about {seconds:.0f} s ({why}); {left:.0f} s left")
    claimed = [r for r in batch if common.claim(_lock(r))]
    try:
      done = done_keys([r.results for r in claimed])
      claimed_new = [r for r in claimed if r.key not in done[r.results]]
      if not claimed_new:
        continue
      folder = common.run_dir(claimed_new[0].results, "members-" + _digest(claimed_new))
      got = train(claimed_new, strategy, folder)
      for run, m in zip(claimed_new, got):
        if m is None:
          failed.add(run.key)
          out.failed.append(run.key)
          log(f"{run.name}: diverged; no record (it is tried again by the next job)")
          continue
        if len(claimed_new) > 1:  # Its wall time is the program's, shared by the members.
          m = dict(m, group=_digest(claimed_new))
        append(run.results, dict(key=run.key, **run.fields, **m))
        out.trained.append(run.key)
        log(_said(run, m))
    finally:
      for r in claimed:
        try:
          os.remove(_lock(r))
        except FileNotFoundError:
          pass


def _what(batch: Sequence[Run]) -> str:
  more = len(batch) - 1
  return batch[0].name + (f" and {_n(more, 'more run')}, as members of one program" if more else "")


def _said(run: Run, m: dict) -> str:
  val = next((m[k] for k in ("val_balanced_acc", "val_acc") if m.get(k) is not None), None)
  val = "" if val is None else f", validation {100 * val:.2f}"
  return f"{run.name}: test {100 * m['test_acc']:.2f}{val} ({m['wall_s']:.0f} s)"


def _lock(run: Run) -> str:
  return common.run_dir(run.results, common.slug(run.key)) + ".lock"


def _locked(run: Run) -> bool:
  lock = _lock(run)
  if not os.path.exists(lock):
    return False
  try:
    with open(lock) as f:
      os.kill(int(f.read().strip() or 0), 0)
    return True
  except (ProcessLookupError, ValueError, FileNotFoundError):
    return False  # Its worker is gone: claim() takes it over.


def _digest(runs: Sequence[Run]) -> str:
  return hashlib.sha1("\n".join(sorted(r.key for r in runs)).encode()).hexdigest()[:12]


def out_dir(results: str, key: str) -> str:
  """A run's own folder under ``runs/`` (checkpoints, metrics)."""
  return common.run_dir(results, common.slug(key))


def wall_hours(records: Sequence[dict]) -> float:
  """The records' wall time in hours, a program of several members counted once."""
  groups = {r["group"]: r["wall_s"] for r in records if r.get("group")}
  single = sum(r.get("wall_s") or 0.0 for r in records if not r.get("group"))
  return (single + sum(groups.values())) / 3600


# --- the command line -----------------------------------------------------------------------


def parser(doc: str, protocols: Sequence[str] = PROTOCOL_NAMES) -> argparse.ArgumentParser:
  """The options every table module takes; a module adds its own."""
  ap = argparse.ArgumentParser(
    description=doc.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
  )
  ap.add_argument("--protocol", choices=list(protocols), default="reduced")
  ap.add_argument(
    "--tiny", action="store_true", help="the same as --protocol tiny (a seconds-long run)"
  )
  ap.add_argument("--data-dir", default=common.DATA_DIR)
  ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
  ap.add_argument(
    "--set", action="append", default=[], metavar="KEY=VALUE", help="a setting of every run"
  )
  ap.add_argument("--report", action="store_true", help="only the tables, from the records")
  ap.add_argument(
    "--budget-s",
    type=float,
    default=None,
    help="start only the runs whose estimated time fits in this many seconds from now",
  )
  ap.add_argument("--deadline", type=float, default=None, help=argparse.SUPPRESS)
  ap.add_argument(
    "--strategy",
    choices=("auto", "single", "members", "processes"),
    default="auto",
    help="auto: the GPU probe's fastest runnable variant (--probe), else the defaults",
  )
  ap.add_argument("--probe", default=None, help="a GPU probe's JSON (default: this device's)")
  ap.add_argument("--members", type=int, default=6, help="--strategy members: runs per program")
  ap.add_argument("--workers", type=int, default=2, help="--strategy processes: processes")
  ap.add_argument(
    "--mirror", default=None, help="a folder that gets a copy of every record appended"
  )
  ap.add_argument(
    "--work",
    default=common.RUNS,
    help="where runs keep their checkpoints and locks (default runs/ in the checkout)",
  )
  ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
  return ap


def parse(ap: argparse.ArgumentParser, argv=None) -> argparse.Namespace:
  argv = list(sys.argv[1:] if argv is None else argv)
  args = ap.parse_args(argv)
  args.argv = argv  # What a worker process is started with.
  if args.tiny:
    args.protocol = "tiny"
  if args.budget_s is not None and args.deadline is None:
    args.deadline = time.time() + args.budget_s
  common.RUNS = args.work
  global MIRROR
  MIRROR = args.mirror
  return args


def overrides(args) -> dict[str, Any]:
  """``--set KEY=VALUE`` as a dict (strings: make_config parses them)."""
  out = {}
  for item in args.set:
    key, sep, value = item.partition("=")
    if not sep:
      raise SystemExit(f"--set expects KEY=VALUE; got {item!r}")
    out[key.strip()] = value.strip()
  return out


def pick_strategy(args, records: Sequence[dict] = ()) -> Strategy:
  """The strategy of ``--strategy``; ``auto`` reads the probe. A table keeps the dtype its
  records on this device were made in, so that one table is not made in two."""
  import jax

  platform, device = jax.default_backend(), str(jax.devices()[0].device_kind)
  if args.strategy == "single":
    s = Strategy(source="--strategy single")
  elif args.strategy == "members":
    s = Strategy(members=args.members, source=f"--strategy members ({args.members})")
  elif args.strategy == "processes":
    s = Strategy(procs=args.workers, source=f"--strategy processes ({args.workers})")
  else:
    path = args.probe or find_probe(platform, device)
    s = (strategy_from_probe(path) if path and os.path.exists(path) else None) or (
      default_strategy(platform)
    )
  if s.members > 1:
    from absgd_jax.train.members import resolve_mode

    s = dataclasses.replace(s, mode=resolve_mode(s.mode, s.members))
  made = [
    r["config"].get("dtype")
    for r in records
    if r.get("device") == device and isinstance(r.get("config"), dict)
  ]
  if s.dtype and made and made[0] != s.dtype:
    s = dataclasses.replace(
      s, dtype=made[0], source=s.source + f"; dtype {made[0]}, as the records made here"
    )
  return s


def run(
  args,
  plan: Callable[[Strategy], list],
  module: str,
  log: Callable[[str], None] = print,
  record_files: Sequence[str] = (),
) -> Outcome | None:
  """Trains ``plan`` as ``args`` say: here, or in worker processes (``module`` is started as
  ``python -m module ... --worker``). Returns this process's outcome (None for workers')."""
  from absgd_jax.train.compile_cache import use_compile_cache

  records = [r for p in record_files for r in common.read_records(p)]
  strategy = pick_strategy(args, records)
  if args.worker:  # One of the strategy's processes: its records name the whole strategy.
    pass
  elif strategy.in_children():
    log(f"strategy {strategy.name}: {strategy.source}; {strategy.procs} worker process(es)")
    return _spawn(args, module, strategy)
  else:
    log(f"strategy {strategy.name}: {strategy.source}")
  use_compile_cache(common.CACHE)
  out = execute(lambda: plan(strategy), strategy, deadline=args.deadline, log=log)
  if out.failed:
    log(f"{len(out.failed)} runs diverged: {', '.join(out.failed)}")
  if out.stopped:
    log(f"stopped: {out.stopped}")
    log(f"{len(out.trained)} runs trained; {len(out.missing)} still missing, resumed next time")
  else:
    log(f"{len(out.trained)} runs trained; nothing left to train")
  return out


def _spawn(args, module: str, strategy: Strategy) -> None:
  argv = [a for a in args.argv if a != "--worker"]
  argv = _drop_option(_drop_option(argv, "--budget-s"), "--deadline")
  cmd = [sys.executable, "-m", module, *argv, "--worker"]
  if args.deadline is not None:
    cmd += ["--deadline", repr(args.deadline)]
  path = os.pathsep.join(p for p in (common.ROOT, os.environ.get("PYTHONPATH")) if p)
  env = dict(os.environ, PYTHONPATH=path)
  env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {strategy.xla_flags}".strip()
  if strategy.procs > 1:  # Each process takes a share of the device's memory, not most of it.
    env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    env.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", f"{min(0.3, 0.75 / strategy.procs):.3f}")
  procs = [subprocess.Popen(cmd, env=env) for _ in range(strategy.procs)]
  codes = [p.wait() for p in procs]
  if any(codes):
    raise SystemExit(f"a worker failed (exit codes {codes}); its output is above")
  return None


def _drop_option(argv: list[str], name: str) -> list[str]:
  out, skip = [], False
  for a in argv:
    if skip:
      skip = False
      continue
    if a == name:
      skip = True
      continue
    if a.startswith(name + "="):
      continue
    out.append(a)
  return out


def default_results(name: str, protocol: str) -> str:
  """``experiments/results/NAME.jsonl``; tiny runs' records go under ``runs/`` (ignored)."""
  if protocol == "tiny":
    return os.path.join(common.RUNS, "results", name + ".jsonl")
  return common.results_path(name)
