"""Which way of running the kit's ABSGD step is fastest on one accelerator: a probe.

ResNet-32 at batch 128 is about 0.05 TFLOP a step, a few percent of a GPU's rate; the step is
bound by launching its many small kernels. This probe times, in one call and a few minutes,
the ways of running it that might pack the device better, each checked against the float32
result, and says which is fastest:

    PYTHONPATH=. python benchmarks/gpu_probe.py --profile   # a GPU: every variant, ~3 min
    PYTHONPATH=. python benchmarks/gpu_probe.py --variants 'f32-host-1,bf16-device-*'
    PYTHONPATH=. python benchmarks/gpu_probe.py --tiny      # the CPU: ResNet-8 at 8 px
    python benchmarks/gpu_probe.py --list                   # the default variants

The step is the kit's own (``benchmarks/kit_step.py``: ``make_train_step`` with ABSGD's
weights, the kit's optimizer, cross-entropy, the on-device CIFAR crop + flip), on random
uint8 images with CIFAR-10-LT's 12,406 class sizes. A variant is named
``DTYPE-FEED-MEMBERS[-procsP][-XLA]``:

- DTYPE: ``f32``, or ``bf16`` (the kit's ``dtype="bfloat16"``: activations in bfloat16;
  parameters, optimizer state, BatchNorm statistics and the loss in float32).
- FEED: ``host`` (each batch gathered in NumPy and sent per step, as the Trainer does) or
  ``device`` (the data set resident, each run of ``--steps`` steps one ``lax.scan``:
  :mod:`absgd_jax.train.device_epoch`).
- MEMBERS: ``1`` (one run), or M runs (each its own batch order) as ``vmapM`` (the kit's
  sweep: vmapped, so convolutions become grouped ones), ``laxmapM`` (``lax.map`` over the
  members, a loop inside the program), ``unrolledM`` (the kit's ``mode="map"``: M copies of
  the step in one program), ``asyncM`` (M separate states and jitted calls dispatched one
  after another, nothing waiting between them). Members folded into the batch axis would
  need one set of kernels for all, which members do not share; stacking them along the
  channels instead (block-diagonal kernels, no grouped convolution) costs M times the
  arithmetic. Neither is here.
- ``procsP``: P processes sharing the device, started together, each with
  ``XLA_PYTHON_CLIENT_MEM_FRACTION`` set; their images/s are summed.
- XLA: ``cmdbuf_off`` or ``cmdbuf_all`` (XLA's command buffers, i.e. CUDA graphs, off, or on
  for every kind of command including loops and conditionals; without it, XLA's default
  set). XLA reads its flags when the backend starts, so these run in a child process.
- ``best1`` / ``bestM`` in place of DTYPE-FEED-MEMBERS: the fastest one-run / M-run variant
  measured so far in this call (``best1-procs3``, ``bestM-procs2``: twelve runs for M = 6).

The baseline ``f32-host-1`` is today's path. Every variant runs ``--steps`` steps once from
the same initial state on the same batches as the baseline (member m on member m's): the
relative difference of the first step's loss and of the parameter update after those
steps (and of the update's norm) are recorded; the baseline repeats itself, so its own
differences say how deterministic the device is. Compile time is that first run's wall time
less a timed run's. Then ``--rounds`` timed runs; the median is reported. Images/s are summed
over a variant's runs.

The JSON (``--out``; default ``benchmarks/results/gpu_probe_<platform>_<device>.json``) holds
the machine, every variant's numbers or its error or why it was skipped, and the goals: one
run at twice the baseline's images/s, twelve runs at three times, and Table 1's twelve runs
(200 epochs of CIFAR-10-LT x6 and CIFAR-10-ST x6) in ten minutes, with the closest variant
and what bounds it. ``--profile`` traces the fastest variant (``jax.profiler``) into the
output folder and summarises the trace: kernels per step, device-busy share of the wall
time, the top operations. ``--budget-s`` skips the variants that no longer fit.
"""

from __future__ import annotations

import argparse
import dataclasses
import fnmatch
import glob
import gzip
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback

T0 = time.perf_counter()  # the budget counts from here: importing jax is part of it

# Child processes share the device with this one: it must not take most of its memory.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.flatten_util import ravel_pytree  # noqa: E402
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P  # noqa: E402

from absgd_jax.data import num_batches  # noqa: E402
from absgd_jax.train import device_epoch as de  # noqa: E402
from absgd_jax.train.members import over_members, stack, take  # noqa: E402
from kit_step import host_batch, machine_info, make_kit, synthetic_long_tailed  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASELINE = "f32-host-1"
MODES = ("vmap", "laxmap", "unrolled", "async")
# XLA's command types (xla.proto's CommandBufferCmdType); the default set is FUSION, CUBLAS,
# CUBLASLT, CUSTOM_CALL and CUDNN. A list replaces the set ("+X" adds to it, but the parser
# stops after the first "+X" of a list, so the whole list is given).
CMDBUF_ALL = ("FUSION", "CUBLAS", "CUBLASLT", "CUSTOM_CALL", "CUDNN", "CONDITIONAL", "WHILE")
# setting -> (flags, optional flags). XLA aborts on a flag it does not know: a child that
# fails so is run again without the optional ones (recorded as dropped).
XLA_SETTINGS = {
  "cmdbuf_off": (("--xla_gpu_enable_command_buffer=",), ()),
  "cmdbuf_all": (
    (f"--xla_gpu_enable_command_buffer={','.join(CMDBUF_ALL)}",),
    ("--xla_gpu_graph_min_graph_size=1",),  # graph even short runs of kernels (default 5)
  ),
}
# XLA leaves command buffers out while a profiler is attached, unless told otherwise.
PROFILE_FLAGS = ("--xla_enable_command_buffers_during_profiling=true",)
# Table 1: 200 epochs of six CIFAR-10-LT runs (12,406 images) and six CIFAR-10-ST runs
# (25,250), in ten minutes: about 75,000 images/s summed over the runs.
TABLE1_IMAGES = 200 * 6 * (12_406 + 25_250)
TABLE1_SECONDS = 600


# --- variants -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Variant:
  """One way of running the step (see the module docstring for the names)."""

  dtype: str = "f32"  # f32 | bf16
  feed: str = "host"  # host | device
  mode: str = "single"  # single | vmap | laxmap | unrolled | async
  members: int = 1
  procs: int = 1
  xla: str = "default"  # default | a key of XLA_SETTINGS
  best: str = ""  # best1 | bestM: chosen at run time from the measured variants

  @property
  def name(self) -> str:
    core = self.best or f"{self.dtype}-{self.feed}-" + (
      "1" if self.mode == "single" else f"{self.mode}{self.members}"
    )
    parts = [core] + ([f"procs{self.procs}"] if self.procs > 1 else [])
    return "-".join(parts + ([self.xla] if self.xla != "default" else []))

  @property
  def runs(self) -> int:
    return self.members * self.procs

  @property
  def inner(self) -> "Variant":
    """What each process runs: the variant without its processes and XLA setting."""
    return dataclasses.replace(self, procs=1, xla="default")

  @classmethod
  def parse(cls, name: str) -> "Variant":
    """``Variant.parse("bf16-device-vmap6-procs2")``; a ValueError names a bad part."""
    tokens, fields = name.strip().split("-"), {}
    if tokens[0] in ("best1", "bestM"):
      fields["best"] = tokens.pop(0)
    else:
      if len(tokens) < 3:
        raise ValueError(f"variant {name!r}: expected DTYPE-FEED-MEMBERS, e.g. {BASELINE!r}.")
      dtype, feed, members, tokens = *tokens[:3], tokens[3:]
      if dtype not in ("f32", "bf16") or feed not in ("host", "device"):
        raise ValueError(f"variant {name!r}: DTYPE is f32 or bf16, FEED host or device.")
      fields.update(dtype=dtype, feed=feed)
      if members != "1":
        m = re.fullmatch(rf"({'|'.join(MODES)})(\d+)", members)
        if m is None or int(m[2]) < 2:
          raise ValueError(
            f"variant {name!r}: MEMBERS is 1 or one of {', '.join(MODES)} followed by M >= 2."
          )
        fields.update(mode=m[1], members=int(m[2]))
    for t in tokens:
      m = re.fullmatch(r"procs(\d+)", t)
      if m and int(m[1]) >= 2:
        fields["procs"] = int(m[1])
      elif t in XLA_SETTINGS:
        fields["xla"] = t
      else:
        raise ValueError(
          f"variant {name!r}: unknown part {t!r} (procsP with P >= 2, or one of "
          f"{', '.join(XLA_SETTINGS)})."
        )
    return cls(**fields)


def default_variants(members: int, procs: int) -> list[str]:
  """The probe's variants, most informative first (``--budget-s`` cuts from the end)."""
  M, Pn = members, procs
  return [
    BASELINE,
    "bf16-host-1",
    "f32-device-1",
    "bf16-device-1",
    f"f32-host-vmap{M}",  # today's sweep
    f"f32-host-laxmap{M}",
    f"f32-host-async{M}",
    f"bf16-device-vmap{M}",
    f"bf16-device-laxmap{M}",
    f"bf16-device-async{M}",
    f"best1-procs{Pn}",
    "bestM-procs2",  # twelve runs for M = 6: two processes of six members
    "f32-host-1-cmdbuf_off",
    "f32-host-1-cmdbuf_all",
    "f32-device-1-cmdbuf_all",
    f"f32-host-1-procs{Pn}",
    f"f32-host-unrolled{M}",  # compiles M copies of the step: last
  ]


def select_variants(args) -> list[Variant]:
  """``--variants`` (names, or patterns over the defaults) less ``--skip``; the baseline first."""
  defaults = default_variants(args.members, args.procs)
  names: list[str] = []
  for item in (s.strip() for s in (args.variants or ",".join(defaults)).split(",")):
    if not item:
      continue
    matched = (
      [d for d in defaults if fnmatch.fnmatchcase(d, item)] if set("*?[") & set(item) else []
    )
    names += matched or ([] if set("*?[") & set(item) else [item])
  skip = [s.strip() for s in (args.skip or "").split(",") if s.strip()]
  names = [n for n in dict.fromkeys(names) if not any(fnmatch.fnmatchcase(n, s) for s in skip)]
  names = [BASELINE] + [n for n in names if n != BASELINE]  # every comparison needs it
  return [Variant.parse(n) for n in names]


# --- the probe ------------------------------------------------------------------------------


def _rel(a: float, b: float) -> float:
  return abs(a - b) / abs(b) if b else abs(a - b)


class Probe:
  """The data, the steps and the reference of one probe process."""

  def __init__(self, args, reference_file: str | None = None):
    self.args, self.K = args, args.steps
    self.images, self.labels = synthetic_long_tailed(args.n_max, args.rho, args.image_size)
    self.n = len(self.labels)
    self.steps_per_epoch = num_batches(self.n, args.batch)
    f32 = make_kit(args.model, args.batch, args.image_size, steps_per_epoch=self.steps_per_epoch)
    self.kits = {"f32": f32, "bf16": f32.with_dtype("bfloat16")}
    mesh = Mesh(np.array(jax.devices()[:1]), ("data",))
    self.batch_sharding = NamedSharding(mesh, P("data"))
    self.replicated = NamedSharding(mesh, P())
    # How the Trainer stacks the members' batches when each member has its own order.
    self.stack_batches = jax.jit(stack, out_shardings=NamedSharding(mesh, P(None, "data")))
    self.state0 = jax.device_put(f32.state, self.replicated)
    self.params0 = np.asarray(ravel_pytree(jax.device_get(f32.state.params))[0])
    self.orders: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    self.fns: dict[tuple, object] = {}
    self.compile_s: dict[tuple, float] = {}  # each program's, from the unit that compiled it
    self.refs: dict[int, tuple[float, np.ndarray]] = {}
    self.reference_file = reference_file
    self.resident = None
    self.runners: dict[str, tuple] = {}  # name -> (unit, state): kept for --profile

  # data --------------------------------------------------------------------------------------

  def order(self, m: int) -> tuple[np.ndarray, np.ndarray]:
    """Member m's batches (seed m), epoch after epoch, for every unit a probe runs."""
    if m not in self.orders:
      need = self.K * (3 + self.args.rounds)
      epochs = -(-need // self.steps_per_epoch)
      parts = [de.epoch_indices(self.n, self.args.batch, m, e) for e in range(epochs)]
      self.orders[m] = tuple(np.concatenate(p) for p in zip(*parts))
    return self.orders[m]

  def rows(self, m: int, start: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    idx, mask = self.order(m)
    t = np.arange(start, start + count) % len(idx)  # a long timing window wraps around
    return idx[t], mask[t]

  def host_batch(self, m: int, t: int) -> dict:
    """Member m's batch t, gathered and sent as inputs.train_batches sends it."""
    idx, mask = (a[0] for a in self.rows(m, t, 1))
    return host_batch(self.images, self.labels, idx, mask, self.batch_sharding)

  def resident_data(self) -> dict:
    if self.resident is None:
      self.resident = de.put_resident({"images": self.images, "labels": self.labels})
    return self.resident

  # programs ----------------------------------------------------------------------------------

  def program(self, v: Variant):
    """The jitted program a variant calls, shared between variants that call the same one."""
    mode = "single" if v.mode == "async" else v.mode
    key = (v.dtype, mode, v.feed, 1 if mode == "single" else v.members)
    if key not in self.fns:
      step = self.kits[v.dtype].train_step()
      if mode == "vmap":
        step = over_members(step, "vmap", (False, False))
      elif mode == "unrolled":
        step = over_members(step, "map", (False, False))
      elif mode == "laxmap":
        member = step
        step = lambda states, batch: jax.lax.map(lambda sb: member(*sb), (states, batch))
      if v.feed == "device":
        step = de.make_train_epoch(step)
      self.fns[key] = jax.jit(
        step, donate_argnums=0, out_shardings=(self.replicated, self.replicated)
      )
    return key, self.fns[key]

  def fresh_state(self, v: Variant):
    if v.mode == "single":
      return jax.tree.map(jnp.copy, self.state0)
    if v.mode == "async":
      return [jax.tree.map(jnp.copy, self.state0) for _ in range(v.members)]
    return jax.tree.map(lambda x: jnp.broadcast_to(x, (v.members, *x.shape)), self.state0)

  def make_unit(self, v: Variant):
    """``unit(state, start) -> (state, first)``: ``--steps`` steps from global step ``start``,
    finished and their metrics fetched (as the Trainer fetches an epoch's); ``first`` is the
    first step's metrics, each with a leading member axis."""
    _, fn = self.program(v)
    K, M = self.K, v.members
    one = v.mode == "single"

    def lead(m):  # a one-run step's metrics, as a member axis of 1
      return jax.tree.map(lambda x: np.asarray(x)[None], m)

    if v.feed == "device":
      data = self.resident_data()

      def indices(members, start):
        parts = [self.rows(m, start, K) for m in members]
        return de.put_indices(*(parts[0] if len(parts) == 1 else de.stack_members(parts)))

      if v.mode == "async":

        def unit(states, start):
          out = [fn(s, data, *indices([m], start)) for m, s in enumerate(states)]
          got = jax.device_get([m for _, m in out])
          return [s for s, _ in out], {
            k: np.asarray([g[k][0] for g in got]) for k in ("loss_sum", "count")
          }

        return unit

      def unit(state, start):
        state, metrics = fn(state, data, *indices([0] if one else range(M), start))
        first = jax.tree.map(lambda x: x[0], jax.device_get(metrics))
        return state, lead(first) if one else first

      return unit

    if v.mode == "async":

      def unit(states, start):
        steps = []
        for t in range(start, start + K):
          for m in range(M):
            states[m], metrics = fn(states[m], self.host_batch(m, t))
            steps.append(metrics)
        got = jax.device_get(steps[:M])
        jax.device_get(steps[M:])
        return states, {k: np.asarray([g[k] for g in got]) for k in ("loss_sum", "count")}

      return unit

    def unit(state, start):
      steps = []
      for t in range(start, start + K):
        if one:
          batch = self.host_batch(0, t)
        else:
          batch = self.stack_batches([self.host_batch(m, t) for m in range(M)])
        state, metrics = fn(state, batch)
        steps.append(metrics)
      steps = jax.device_get(steps)
      return state, lead(steps[0]) if one else steps[0]

    return unit

  def dispatches_per_step(self, v: Variant) -> float:
    """Calls into the runtime per step of all members: each array sent, each program run."""
    M, K = v.members, self.K
    if v.feed == "device":
      return (3 * (M if v.mode == "async" else 1)) / K  # two index arrays and the epoch call
    if v.mode == "single":
      return 4.0  # three arrays (images, labels, mask), one step
    if v.mode == "async":
      return 4.0 * M
    return 3.0 * M + 2  # each member's arrays, the stacking, the step

  # the check ---------------------------------------------------------------------------------

  def member_params(self, v: Variant, state) -> list[np.ndarray]:
    if v.mode == "single":
      trees = [state.params]
    elif v.mode == "async":
      trees = [s.params for s in state]
    else:
      trees = [take(state.params, m) for m in range(v.members)]
    return [np.asarray(ravel_pytree(jax.device_get(t))[0]) for t in trees]

  def reference(self, m: int) -> tuple[float, np.ndarray]:
    """Member m's first-step loss and its update after ``--steps`` steps, by the baseline on
    member m's batches (read from the parent's file in a child process)."""
    if m not in self.refs:
      if self.reference_file is not None:
        with np.load(self.reference_file) as f:
          self.refs[m] = (float(f["loss"][m]), f["update"][m])
      else:
        base = Variant()
        _, fn = self.program(base)
        state, steps = self.fresh_state(base), []
        for t in range(self.K):
          state, metrics = fn(state, self.host_batch(m, t))
          steps.append(metrics)
        first = jax.device_get(steps[0])
        loss = float(first["loss_sum"] / first["count"])
        self.refs[m] = (loss, self.member_params(base, state)[0] - self.params0)
    return self.refs[m]

  def write_references(self, members: int, path: str) -> None:
    refs = [self.reference(m) for m in range(members)]
    np.savez(path, loss=np.asarray([r[0] for r in refs]), update=np.stack([r[1] for r in refs]))

  def check(self, v: Variant, first, params: list[np.ndarray]) -> dict:
    losses = np.asarray(first["loss_sum"], np.float64) / np.asarray(first["count"], np.float64)
    loss_d, upd_d, norm_d = [], [], []
    for m in range(v.members):
      ref_loss, ref_update = self.reference(m)
      update = params[m] - self.params0
      ref_norm = float(np.linalg.norm(ref_update.astype(np.float64)))
      loss_d.append(_rel(float(losses[m]), ref_loss))
      upd_d.append(float(np.linalg.norm((update - ref_update).astype(np.float64))) / ref_norm)
      norm_d.append(_rel(float(np.linalg.norm(update.astype(np.float64))), ref_norm))
    return {
      "loss_rel_diff": max(loss_d),
      "update_rel_diff": max(upd_d),
      "update_norm_rel_diff": max(norm_d),
      "check_steps": self.K,
      "first_loss": [float(x) for x in losses],
    }

  # running -----------------------------------------------------------------------------------

  def run(self, v: Variant, window: tuple | None = None) -> dict:
    """Compile and check (the first unit), warm up, then time ``--rounds`` units; or, with a
    ``window`` (ready file, go file, seconds), as many units as fit in it once the probe says
    go (every process it started being ready)."""
    key, _ = self.program(v)
    compiled_before = key in self.compile_s
    unit = self.make_unit(v)
    t = time.perf_counter()
    state, first = unit(self.fresh_state(v), 0)
    first_unit_s = time.perf_counter() - t
    result = {"first_unit_s": first_unit_s, **self.check(v, first, self.member_params(v, state))}
    state, _ = unit(state, self.K)  # warm: the allocator's growth, the first transfers
    start, times = 2 * self.K, []
    if window is not None:
      ready, go, seconds = window
      open(ready, "w").close()
      deadline = time.time() + 600
      while not os.path.exists(go):
        if time.time() > deadline:
          raise TimeoutError("no go signal from the probe in 600 s")
        time.sleep(0.002)
    t_end = time.perf_counter() + (window[2] if window else 0.0)
    while (len(times) < self.args.rounds) if window is None else (time.perf_counter() < t_end):
      t = time.perf_counter()
      state, _ = unit(state, start)
      times.append(time.perf_counter() - t)
      start += self.K
    # Rounds: the median. A window: every unit in it, as the others ran beside them.
    unit_s = statistics.median(times) if window is None else sum(times) / len(times)
    if not compiled_before:
      self.compile_s[key] = max(0.0, first_unit_s - unit_s)
    step_s = unit_s / self.K
    result.update(
      status="ok",
      runs=v.runs,
      images_per_s=v.members * self.args.batch / step_s,
      ms_per_step=1e3 * step_s,
      ms_per_step_range=[1e3 * min(times) / self.K, 1e3 * max(times) / self.K],
      rounds=len(times),
      steps_per_round=self.K,
      compile_s=self.compile_s[key],
      compile_shared=compiled_before,
      dispatches_per_step=self.dispatches_per_step(v),
    )
    if window is not None:
      result["window_s"] = sum(times)
    self.runners[v.name] = (unit, state, start)
    return result

  def hlo_flops(self, dtype: str) -> dict:
    """XLA's count of one run's step (before optimisation): flops and bytes accessed."""
    try:
      _, fn = self.program(Variant(dtype=dtype))
      cost = fn.lower(self.fresh_state(Variant()), self.host_batch(0, 0)).cost_analysis()
      cost = cost[0] if isinstance(cost, (list, tuple)) else cost
      return {"flops": float(cost["flops"]), "bytes_accessed": float(cost["bytes accessed"])}
    except Exception as e:  # an estimate only: its absence must not stop the probe
      return {"error": f"{type(e).__name__}: {e}"}


# --- child processes ------------------------------------------------------------------------


def child_args(args) -> list[str]:
  """The settings a child needs to build the same data, model and steps."""
  keys = ("model", "batch", "image_size", "n_max", "rho", "steps", "rounds", "members", "procs")
  return [a for k in keys for a in (f"--{k.replace('_', '-')}", str(getattr(args, k)))]


def mem_fraction(args, procs: int) -> float:
  """Each of P processes' share of the device's memory: together under 3/4 of it, so that
  this process's own allocations still fit beside them."""
  return args.mem_fraction or round(min(0.3, 0.75 / procs), 3)


def child_env(extra_flags: tuple[str, ...], procs: int, args) -> dict:
  env = dict(os.environ)
  env["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, env.get("PYTHONPATH", "")) if p)
  env["XLA_FLAGS"] = " ".join([env.get("XLA_FLAGS", ""), *extra_flags]).strip()
  env["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"
  if procs > 1:
    env["XLA_PYTHON_CLIENT_MEM_FRACTION"] = str(mem_fraction(args, procs))
  return env


def spawn(
  probe: Probe,
  inner: Variant,
  procs: int,
  flags: tuple,
  work: str,
  timeout: float,
  profile_dir: str | None = None,
) -> list[dict]:
  """Runs ``inner`` in ``procs`` child processes at once; each one's result (or error)."""
  args = probe.args
  ref = os.path.join(work, f"reference{inner.members}.npz")
  if not os.path.exists(ref):
    probe.write_references(inner.members, ref)
  folder = tempfile.mkdtemp(prefix=f"{inner.name}-", dir=work)
  go = os.path.join(folder, "go")
  env = child_env(flags, procs, args)
  children = []
  for i in range(procs):
    out = os.path.join(folder, f"child{i}.json")
    cmd = [sys.executable, os.path.abspath(__file__), "--child", "--variants", inner.name]
    cmd += ["--ref", ref, "--out", out, *child_args(args)]
    if procs > 1:
      cmd += ["--ready", os.path.join(folder, f"ready{i}"), "--go", go]
      cmd += ["--window-s", str(args.window_s)]
    if profile_dir:
      cmd += ["--profile-dir", profile_dir]
    log = open(os.path.join(folder, f"child{i}.log"), "w")  # a file: a full pipe would block
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    children.append((proc, out, log))
  deadline = time.time() + timeout
  if procs > 1:  # Start the timing together, once every child has compiled and warmed up.
    while time.time() < deadline:
      ready = sum(os.path.exists(os.path.join(folder, f"ready{i}")) for i in range(procs))
      if ready == procs or any(p.poll() is not None for p, _, _ in children):
        break
      time.sleep(0.01)
    open(go, "w").close()
  results = []
  for proc, out, log in children:
    try:
      proc.wait(timeout=max(1.0, deadline - time.time()))
    except subprocess.TimeoutExpired:
      proc.kill()
      proc.wait()
    log.close()
    with open(log.name) as f:
      tail = f.read()[-3000:]
    if proc.returncode == 0 and os.path.exists(out):
      with open(out) as f:
        got = json.load(f)
      results.append({**got["variants"][inner.name], "profile": got.get("profile")})
    else:
      why = "timed out" if proc.returncode == -9 else f"exit code {proc.returncode}"
      results.append({"status": "error", "error": f"child {why}", "output_tail": tail})
  return results


def spawn_flags(probe, inner, procs, flags, optional, work, timeout, profile_dir=None):
  """:func:`spawn` with ``flags + optional``, and again without ``optional`` if XLA refused
  one of them as unknown; the results and the flags dropped."""
  got = spawn(probe, inner, procs, flags + optional, work, timeout, profile_dir)
  if optional and any("nknown flag" in r.get("output_tail", "") for r in got):
    return spawn(probe, inner, procs, flags, work, timeout, profile_dir), list(optional)
  return got, []


def run_in_children(probe: Probe, v: Variant, work: str, timeout: float) -> dict:
  """A variant that needs its own processes: P at once, or one with its XLA flags."""
  flags, optional = XLA_SETTINGS.get(v.xla, ((), ()))
  got, dropped = spawn_flags(probe, v.inner, v.procs, flags, optional, work, timeout)
  xla = {"xla_flags": " ".join(flags + (() if dropped else optional))}
  if dropped:
    xla["dropped_flags"] = dropped
  if any(r.get("status") != "ok" for r in got):
    bad = next(r for r in got if r.get("status") != "ok")
    return {"status": "error", "runs": v.runs, **bad, **xla, "children": got}
  if v.procs == 1:
    return {**got[0], "runs": v.runs, **xla}
  return {
    "status": "ok",
    "runs": v.runs,
    "images_per_s": sum(r["images_per_s"] for r in got),
    "ms_per_step": max(r["ms_per_step"] for r in got),
    "compile_s": max(r["compile_s"] for r in got),
    "loss_rel_diff": max(r["loss_rel_diff"] for r in got),
    "update_rel_diff": max(r["update_rel_diff"] for r in got),
    "update_norm_rel_diff": max(r["update_norm_rel_diff"] for r in got),
    "check_steps": probe.K,
    "dispatches_per_step": got[0].get("dispatches_per_step"),
    "mem_fraction": mem_fraction(probe.args, v.procs),
    **xla,
    "children": [
      {k: r[k] for k in ("images_per_s", "ms_per_step", "window_s", "rounds", "compile_s")}
      for r in got
    ],
  }


# --- the profile ----------------------------------------------------------------------------


def _union_s(intervals: list[tuple[float, float]]) -> float:
  """Seconds covered by (start, end) intervals in microseconds, overlaps counted once."""
  total, end = 0.0, -math.inf
  for a, b in sorted(intervals):
    if b > end:
      total += b - max(a, end)
      end = b
  return total * 1e-6


def summarise_trace(folder: str, wall_s: float, steps: int) -> dict:
  """A few numbers from a ``jax.profiler`` trace: kernels (device ops) per step, the share of
  the wall time the device was busy, and the operations that took the most time.

  On a GPU the device's rows are the processes named ``/device:...``; their ``Stream`` rows
  hold the kernels (the ``XLA Modules`` row, where present, the executable runs). Without a
  device row (the CPU) the host's XLA threads stand in.
  """
  files = sorted(glob.glob(os.path.join(folder, "**", "*.trace.json.gz"), recursive=True))
  files += sorted(glob.glob(os.path.join(folder, "**", "perfetto_trace.json.gz"), recursive=True))
  if not files:
    return {"error": f"no trace file under {folder}"}
  with gzip.open(files[0], "rt") as f:
    trace = json.load(f)
  events = trace["traceEvents"] if isinstance(trace, dict) else trace
  procs = {e["pid"]: e["args"]["name"] for e in events if e.get("name") == "process_name"}
  threads = {
    (e["pid"], e.get("tid")): e["args"]["name"] for e in events if e.get("name") == "thread_name"
  }
  spans = [e for e in events if e.get("ph") == "X" and "dur" in e]
  device = [e for e in spans if str(procs.get(e["pid"], "")).startswith("/device:")]

  def row(e):
    return str(threads.get((e["pid"], e.get("tid")), ""))

  modules = [e for e in device if "XLA Modules" in row(e)]
  ops = [e for e in device if "Stream" in row(e)] or [
    e for e in device if "XLA Modules" not in row(e) and "Steps" not in row(e)
  ]
  where = "device"
  if not ops:  # No device rows (the CPU): the host's XLA operations, without the runtime's
    # own scopes (C++ names with "::") and the python frames (names starting "$").
    where = "host"
    ops = [
      e
      for e in spans
      if row(e) != "python"
      and "::" not in str(e.get("name"))
      and not str(e["name"]).startswith("$")
    ]
  totals: dict[str, list] = {}
  for e in ops:
    t = totals.setdefault(e["name"], [0.0, 0])
    t[0] += e["dur"] * 1e-6
    t[1] += 1
  busy = _union_s([(e["ts"], e["ts"] + e["dur"]) for e in ops])
  top = sorted(totals.items(), key=lambda kv: -kv[1][0])[:10]
  by_row: dict[tuple, list] = {}  # every row of the trace, so that the summary can be checked
  for e in spans:
    by_row.setdefault((str(procs.get(e["pid"], e["pid"])), row(e)), []).append(e)
  rows = sorted(
    (
      {
        "process": p,
        "row": r,
        "events": len(es),
        "busy_s": _union_s([(e["ts"], e["ts"] + e["dur"]) for e in es]),
      }
      for (p, r), es in by_row.items()
    ),
    key=lambda x: -x["busy_s"],
  )[:12]
  return {
    "trace_file": os.path.relpath(files[0], folder),
    "ops_from": where,
    "ops_per_step": len(ops) / steps,
    "executables_per_step": len(modules) / steps if modules else None,
    "busy_s": busy,
    "wall_s": wall_s,
    "busy_share_of_wall": busy / wall_s if wall_s else None,
    "top_ops": [{"name": n[:120], "total_ms": 1e3 * s, "count": c} for n, (s, c) in top],
    "rows": rows,
  }


def profile_here(probe: Probe, v: Variant, folder: str) -> dict:
  """One more unit of ``v`` in this process, under the profiler."""
  if v.name not in probe.runners:
    probe.run(v)
  unit, state, start = probe.runners[v.name]
  os.makedirs(folder, exist_ok=True)
  with jax.profiler.trace(folder, create_perfetto_trace=True):
    t = time.perf_counter()
    state, _ = unit(state, start)
    wall = time.perf_counter() - t
  probe.runners[v.name] = (unit, state, start + probe.K)
  return {"variant": v.name, "folder": folder, **summarise_trace(folder, wall, probe.K)}


# --- goals and the table --------------------------------------------------------------------


def goals(results: dict, flops: dict, batch: int, profile: dict | None = None) -> dict:
  """The three goals against the measured variants: for each, the closest and what bounds it
  (its step time, its dispatches per step, the arithmetic rate it reached, and the profile's
  reading where the profiled variant is the closest)."""
  ok = {n: r for n, r in results.items() if r.get("status") == "ok"}
  base = ok.get(BASELINE, {}).get("images_per_s")
  if not base:
    return {"error": "the baseline did not run"}

  def bound(name):
    r = ok[name]
    out = {"ms_per_step": r["ms_per_step"], "dispatches_per_step": r.get("dispatches_per_step")}
    # XLA's count of one run's step (the same arithmetic in either dtype) at this rate.
    f = flops.get("bf16" if name.startswith("bf16") else "f32") or flops.get("f32") or {}
    if f.get("flops"):
      out["achieved_tflops"] = f["flops"] * r["images_per_s"] / batch / 1e12
    if profile and profile.get("of") == name and profile.get("busy_share_of_wall") is not None:
      busy = profile["busy_share_of_wall"]
      out["profile"] = {
        "ops_per_step": profile["ops_per_step"],
        "busy_share_of_wall": busy,
        "top_ops": [o["name"] for o in profile["top_ops"][:3]],
        # An idle device between kernels waits on launches; a busy one on its kernels.
        "reading": "launch-bound: the device idles between kernels"
        if busy < 0.5
        else "kernel-bound: the top ops are the time",
      }
    else:
      out["profile"] = "not profiled (--profile traces the fastest variant)"
    return out

  def goal(target, candidates, what):
    if not candidates:
      return {"target_images_per_s": target, "met": None, "why": f"no {what} variant ran"}
    best = max(candidates, key=lambda n: ok[n]["images_per_s"])
    ips = ok[best]["images_per_s"]
    return {
      "target_images_per_s": target,
      "closest": best,
      "images_per_s": ips,
      "of_target": ips / target,
      "met": ips >= target,
      "bound": bound(best),
    }

  table1 = goal(TABLE1_IMAGES / TABLE1_SECONDS, list(ok), "")
  table1["table1_minutes"] = TABLE1_IMAGES / table1["images_per_s"] / 60
  table1["note"] = "training alone, the twelve runs in groups of the variant's runs"
  return {
    "baseline_images_per_s": base,
    "one_run_2x": goal(2 * base, [n for n in ok if ok[n]["runs"] == 1], "one-run"),
    "twelve_runs_3x": goal(3 * base, [n for n in ok if ok[n]["runs"] >= 12], "twelve-run"),
    "table1_10_minutes": table1,
  }


def table(results: dict) -> str:
  base = results.get(BASELINE, {}).get("images_per_s")
  head = (
    f"{'variant':30}{'runs':>5}{'images/s':>11}{'ms/step':>9}{'x base':>8}{'compile':>9}"
    f"{'loss d':>10}{'update d':>10}  status"
  )
  lines = [head, "-" * len(head)]
  for name, r in results.items():
    if r.get("status") == "ok":
      ips = r["images_per_s"]
      lines.append(
        f"{name:30}{r.get('runs', 1):5d}{ips:11,.0f}{r['ms_per_step']:9.2f}"
        f"{ips / base if base else math.nan:8.2f}{r['compile_s']:8.1f}s"
        f"{r['loss_rel_diff']:10.1e}{r['update_rel_diff']:10.1e}  ok"
      )
    else:
      why = r.get("error") or r.get("reason") or ""
      lines.append(f"{name:30}{'':52}  {r.get('status')}: {why[:70]}")
  return "\n".join(lines)


# --- main -----------------------------------------------------------------------------------


def parse_args(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--tiny", action="store_true", help="ResNet-8 at 8 px, batch 8: a CPU run")
  ap.add_argument("--model", default=None, help="default resnet32 (tiny: resnet8)")
  ap.add_argument("--batch", type=int, default=None, help="default 128 (tiny: 8)")
  ap.add_argument("--image-size", type=int, default=None, help="default 32 (tiny: 8)")
  ap.add_argument("--n-max", type=int, default=None, help="largest class (default 5000)")
  ap.add_argument("--rho", type=float, default=None, help="imbalance (default 100: 12,406)")
  ap.add_argument("--steps", type=int, default=None, help="steps per timed run (default 20)")
  ap.add_argument("--rounds", type=int, default=None, help="timed runs (default 3)")
  ap.add_argument("--members", type=int, default=None, help="M of the members (default 6)")
  ap.add_argument("--procs", type=int, default=None, help="P of procsP (default 3)")
  ap.add_argument("--window-s", type=float, default=None, help="procsP timing window (3 s)")
  ap.add_argument("--mem-fraction", type=float, default=None, help="default min(0.3, 0.75/P)")
  ap.add_argument("--variants", default="", help="comma-separated names or patterns")
  ap.add_argument("--skip", default="", help="comma-separated patterns to leave out")
  ap.add_argument("--budget-s", type=float, default=170.0, help="skip what no longer fits")
  ap.add_argument("--profile", action="store_true", help="trace the fastest variant")
  ap.add_argument("--out", default="", help="the JSON (default under benchmarks/results/)")
  ap.add_argument("--list", action="store_true", help="print the default variants and exit")
  # Set by the probe for its child processes.
  ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
  ap.add_argument("--ref", default=None, help=argparse.SUPPRESS)
  ap.add_argument("--ready", default=None, help=argparse.SUPPRESS)
  ap.add_argument("--go", default=None, help=argparse.SUPPRESS)
  ap.add_argument("--profile-dir", default=None, help=argparse.SUPPRESS)
  args = ap.parse_args(argv)
  sizes = dict(model="resnet32", batch=128, image_size=32, n_max=5000, rho=100.0, steps=20)
  sizes.update(rounds=3, members=6, procs=3, window_s=3.0)
  if args.tiny:
    sizes.update(model="resnet8", batch=8, image_size=8, n_max=12, rho=3.0, steps=2)
    sizes.update(rounds=1, members=2, procs=2, window_s=0.3)
  for k, v in sizes.items():
    if getattr(args, k) is None:
      setattr(args, k, v)
  return args


def child_main(args) -> None:
  probe = Probe(args, reference_file=args.ref)
  v = Variant.parse(args.variants)
  window = (args.ready, args.go, args.window_s) if args.go else None
  out = {"machine": machine_info(), "variants": {}}
  try:
    out["variants"][v.name] = probe.run(v, window)
  except Exception as e:
    if window:  # the others wait for every child: say this one is done
      open(args.ready, "w").close()
    out["variants"][v.name] = {"status": "error", "error": f"{type(e).__name__}: {e}"}
    out["variants"][v.name]["traceback"] = traceback.format_exc()[-3000:]
  if args.profile_dir and out["variants"][v.name].get("status") == "ok":
    out["profile"] = profile_here(probe, v, args.profile_dir)
  with open(args.out, "w") as f:
    json.dump(out, f, indent=1)


def expected_s(v: Variant, base: dict, args) -> float:
  """About how long a variant takes, from the baseline's numbers: compiling (an unrolled
  program is M copies of the step), its units, and for child processes starting jax."""
  compile_s = base.get("compile_s", 0.0)
  compile_s *= v.members if v.mode == "unrolled" else 1.5 if v.members > 1 else 1.0
  units_s = (3 + args.rounds) * args.steps * v.members * base.get("ms_per_step", 0.0) * 1e-3
  child_s = 15.0 if v.procs > 1 or v.xla != "default" or v.best else 0.0
  return compile_s + units_s + child_s


def resolve_best(v: Variant, results: dict, variants: dict) -> Variant | str:
  """``best1``/``bestM`` as the fastest measured one-run / M-run variant, or why not."""
  want_one = v.best == "best1"
  measured = [
    n
    for n, r in results.items()
    if r.get("status") == "ok"
    and variants[n].procs == 1
    and variants[n].xla == "default"
    and (variants[n].members == 1) == want_one
  ]
  if not measured:
    return f"no {'one-run' if want_one else 'multi-member'} variant measured before it"
  best = variants[max(measured, key=lambda n: results[n]["images_per_s"])]
  return dataclasses.replace(best, procs=v.procs, xla=v.xla)


def main(argv=None):
  args = parse_args(argv)
  if args.list:
    print("\n".join(default_variants(args.members, args.procs)))
    return None
  if args.child:
    return child_main(args)
  work = tempfile.mkdtemp(prefix="gpu_probe_")
  try:
    return probe_main(args, work)
  finally:  # the children's references, logs and the compilation cache
    shutil.rmtree(work, ignore_errors=True)


def probe_main(args, work: str) -> dict:
  # Shared with the children, so that processes running a program this one compiled load it.
  if not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
    jax.config.update("jax_compilation_cache_dir", os.path.join(work, "jax_cache"))
    os.environ["JAX_COMPILATION_CACHE_DIR"] = os.path.join(work, "jax_cache")
  platform = jax.default_backend()
  plan = select_variants(args)
  probe = Probe(args)
  print(
    f"{args.model} batch {args.batch} at {args.image_size} px, {probe.n} images, "
    f"{args.steps} steps x {args.rounds} rounds, on {jax.devices()[0].device_kind} "
    f"({platform}); budget {args.budget_s:.0f} s",
    flush=True,
  )
  results: dict[str, dict] = {}
  variants: dict[str, Variant] = {}
  flops: dict[str, dict] = {}
  for v in plan:
    elapsed = time.perf_counter() - T0
    left = args.budget_s - elapsed
    expect = expected_s(v, results.get(BASELINE, {}), args)
    record = {}
    try:
      if v.xla != "default" and platform == "cpu":
        record = {"status": "not applicable on cpu", "reason": "XLA's GPU flags"}
      elif v.name != BASELINE and elapsed + expect > args.budget_s:
        record = {
          "status": "skipped",
          "reason": f"budget: about {expect:.0f} s needed, {max(left, 0):.0f} s left",
        }
      else:
        resolved = resolve_best(v, results, variants) if v.best else v
        if isinstance(resolved, str):
          record = {"status": "skipped", "reason": resolved}
        elif resolved.name in results and resolved.name != v.name:
          record = {**results[resolved.name], "same_as": resolved.name}
        elif resolved.procs == 1 and resolved.xla == "default":
          record = probe.run(resolved)
          if resolved.mode == "single" and resolved.feed == "host":
            flops[resolved.dtype] = probe.hlo_flops(resolved.dtype)
        else:
          record = run_in_children(probe, resolved, work, timeout=max(60.0, left + 60))
        if not isinstance(resolved, str) and resolved.name != v.name:
          record["resolved"] = resolved.name
          variants[v.name] = resolved
    except Exception as e:  # one variant's failure (out of memory, a compiler error) is data
      record = {"status": "error", "error": f"{type(e).__name__}: {e}"}
      record["traceback"] = traceback.format_exc()[-3000:]
    variants.setdefault(v.name, v)
    record.setdefault("runs", v.runs)
    results[v.name] = record
    r = record
    said = (
      f"{r['images_per_s']:,.0f} images/s, {r['ms_per_step']:.2f} ms/step, compile "
      f"{r['compile_s']:.1f} s, loss d {r['loss_rel_diff']:.1e}, update d "
      f"{r['update_rel_diff']:.1e}"
      if r.get("status") == "ok"
      else f"{r['status']}: {(r.get('error') or r.get('reason') or '')[:200]}"
    )
    print(f"[{time.perf_counter() - T0:6.1f}s] {v.name}: {said}", flush=True)

  out = {
    "probe": {
      "args": {k: v for k, v in vars(args).items() if k not in ("child", "ref", "ready", "go")},
      "images": probe.n,
      "steps_per_epoch": probe.steps_per_epoch,
      "variants_planned": [v.name for v in plan],
      "compile_cache": os.environ.get("JAX_COMPILATION_CACHE_DIR"),
    },
    "machine": machine_info(),
    "hlo_cost_per_run_step": flops,
    "variants": results,
  }
  ok = [n for n, r in results.items() if r.get("status") == "ok"]
  base = results[BASELINE].get("images_per_s")
  for n in ok:
    results[n]["speedup"] = results[n]["images_per_s"] / base if base else None
  if args.profile and ok:
    name = max(ok, key=lambda n: results[n]["images_per_s"])
    best = variants[name]
    folder = os.path.splitext(os.path.abspath(out_path(args, platform)))[0] + "_profile"
    try:
      if best.xla == "default":
        out["profile"] = profile_here(probe, best.inner, folder)
      else:
        flags, optional = XLA_SETTINGS[best.xla]
        got, _ = spawn_flags(
          probe, best.inner, 1, flags, optional + PROFILE_FLAGS, work, 300, folder
        )
        out["profile"] = got[0].get("profile") or {"error": got[0].get("error"), **got[0]}
      if best.procs > 1:
        out["profile"]["note"] = "profiled alone, not beside the other processes"
    except Exception as e:
      out["profile"] = {"error": f"{type(e).__name__}: {e}"}
    out["profile"]["of"] = name
  out["goals"] = goals(results, flops, args.batch, out.get("profile"))
  out["probe"]["elapsed_s"] = time.perf_counter() - T0
  path = out_path(args, platform)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "w") as f:
    json.dump(out, f, indent=1)

  print()
  print(table(results))
  g = out["goals"]
  for key in ("one_run_2x", "twelve_runs_3x", "table1_10_minutes"):
    goal = g.get(key, {})
    if "images_per_s" in goal:
      print(
        f"goal {key}: {goal['images_per_s']:,.0f} of {goal['target_images_per_s']:,.0f} "
        f"images/s ({goal['closest']}): {'met' if goal['met'] else 'missed'}"
        + (f"; Table 1 in {goal['table1_minutes']:.1f} min" if "table1_minutes" in goal else "")
      )
    else:
      print(f"goal {key}: {goal.get('why') or g.get('error')}")
  if "profile" in out:
    p = out["profile"]
    if "top_ops" in p:
      print(
        f"profile of {p['of']}: {p['ops_per_step']:.0f} {p['ops_from']} ops per step, busy "
        f"{100 * (p['busy_share_of_wall'] or 0):.0f}% of the wall time; top: "
        + ", ".join(f"{o['name'][:40]} {o['total_ms']:.2f} ms" for o in p["top_ops"][:3])
      )
    else:
      print(f"profile: {p.get('error')}")
  print(f"{out['probe']['elapsed_s']:.0f} s in all; JSON: {path}")
  return out


def out_path(args, platform: str) -> str:
  if args.out:
    return args.out
  kind = re.sub(r"[^a-z0-9]+", "-", str(jax.devices()[0].device_kind).lower()).strip("-")
  return os.path.join(ROOT, "benchmarks", "results", f"gpu_probe_{platform}_{kind}.json")


if __name__ == "__main__":
  main()
