"""The paper tables' runner (experiments/tables.py) and a GPU window's script, on the CPU.

The budgeted queue is driven with a made-up clock and a train function that only appends
what a run would (its real configs are built, no data is read), so that the order, the stop
and the resume are checked exactly; the window script runs end to end at ``--tiny`` size.
"""

import json
import os
import subprocess
import sys

import pytest
from processes import ROOT, child_env

from absgd_jax.train.run_folder import config_to_dict

DATA = os.environ.get("ABSGD_CIFAR10_DIR") or os.path.join(
  ROOT, "..", "shared", "data", "cifar10-jpeg"
)
needs_cifar = pytest.mark.skipif(
  not os.path.exists(os.path.join(DATA, "train.zip")), reason="CIFAR-10 zips not found"
)


@pytest.fixture
def runner(tmp_path, monkeypatch):
  from experiments import common, table1, tables

  monkeypatch.setattr(common, "RUNS", str(tmp_path / "runs"))
  monkeypatch.setattr(tables, "MIRROR", None)
  return tables, table1


class Clock:
  """The time, moved on by the fake training alone."""

  def __init__(self):
    self.now = 1000.0

  def __call__(self) -> float:
    return self.now


def _trainer(clock, path, seconds, seen):
  """Training that takes ``seconds(config)`` on ``clock`` and checks, before each run, that
  every run trained before it is already in the record file."""
  from experiments import common, tables

  def train(runs, strategy, out_dir):
    have = [r["key"] for r in common.read_records(path)]
    assert have == seen, "a finished run's record was not appended at once"
    out = []
    for run in runs:
      cfg = run.make()
      clock.now += seconds(cfg)
      seen.append(run.key)
      out.append(
        dict(
          config=config_to_dict(cfg),
          wall_s=seconds(cfg),
          test_acc=0.5,
          train_images=tables.approx_images(cfg),
          device="cpu",
          strategy=strategy.name,
          members=len(runs),
          history=[],
        )
      )
    return out

  return train


def test_budget_stops_before_a_run_that_does_not_fit_and_resumes_in_order(runner, tmp_path):
  tables, table1 = runner
  path = str(tmp_path / "t.jsonl")
  keys = [r.key for r in table1.plan("full", results=path, data_dir="x")]
  assert keys[:3] == [f"final__LT__SGD__CE___seed{s}" for s in range(3)] and len(keys) == 12
  clock, seen, measured = Clock(), [], []

  def seconds(cfg):  # An ST run has twice the images of an LT run.
    return 100.0 if cfg.data.imbalance == "exp" else 200.0

  def measure(runs, strategy):
    measured.append(runs[0].key)
    return 100.0

  strategy, logged = tables.Strategy(), []
  estimator = tables.Estimator(strategy, "cpu", measure=measure)
  out = tables.execute(
    lambda: table1.plan("full", results=path, data_dir="x"),
    strategy,
    deadline=clock() + 650.0,
    train=_trainer(clock, path, seconds, seen),
    estimator=estimator,
    clock=clock,
    log=logged.append,
  )
  # Six LT runs fit in 600 s; the first ST run is estimated from the LT records scaled by its
  # images (about 2 x 100 s, with the margin 230 s) and does not fit in the 50 s left.
  assert out.trained == keys[:6] and measured == [keys[0]]
  assert out.missing == keys[6:]
  assert out.stopped.startswith("final__ST__SGD__CE___seed0 needs about")
  assert out.stopped.endswith("50 s left") and "scaled by epochs x images x runs" in out.stopped
  assert any(line.startswith("stopped: final__ST__SGD__CE___seed0") for line in logged)
  # The next job takes the runs still missing, in order, from the records now there.
  out = tables.execute(
    lambda: table1.plan("full", results=path, data_dir="x"),
    strategy,
    deadline=clock() + 2000.0,
    train=_trainer(clock, path, seconds, seen),
    estimator=estimator,
    clock=clock,
    log=logged.append,
  )
  assert out.trained == keys[6:] and not out.stopped and not out.missing
  assert [json.loads(line)["key"] for line in open(path)] == keys
  assert measured == [keys[0]]  # Once there are records, no more measuring.


def test_members_group_runs_of_one_program_and_leave_the_rest(runner, tmp_path):
  tables, table1 = runner
  from experiments import table2

  path = str(tmp_path / "t.jsonl")
  items = table1.plan("full", results=path, data_dir="x") + table2.plan(
    "full", results=path, data_dir="x", cells=[("LT", "SGD (LA)"), ("LT", "ABSGD (CE, KL budget)")]
  )
  runs = [i for i in items if isinstance(i, tables.Run)]
  # SGD (CE) and ABSGD (CE) of one setting differ in lam (inf for SGD) and seed alone.
  group = tables.group(runs, 6)
  assert [r.key for r in group] == [r.key for r in runs[:6]]
  base, grid, index = tables._sweep_of(group, [r.make() for r in group])
  assert base.method == "absgd" and grid == {"lam": [float("inf"), 5.0], "seed": [0, 1, 2]}
  assert index == [0, 1, 2, 3, 4, 5]
  assert [r.key for r in tables.group(runs, 2)] == [r.key for r in runs[:2]]
  # ST has other data, LA another loss, the KL budget no sweepable form: none joins LT's.
  later = runs[6:]
  assert [r.key for r in tables.group(later, 6)] == [r.key for r in later[:6]]
  la = [r for r in runs if r.fields["row"] == "SGD (LA)"]
  assert [r.key for r in tables.group(la, 6)] == [r.key for r in la]
  kl = [r for r in runs if "KL" in r.fields["row"]]
  assert len(tables.group(kl, 6)) == 1


def test_a_group_that_does_not_fit_trains_with_fewer_members(runner, tmp_path):
  tables, table1 = runner
  path = str(tmp_path / "t.jsonl")
  clock, seen = Clock(), []
  sizes = []

  def estimator(runs, records):  # 100 s a run, members or not
    sizes.append(len(runs))
    return 100.0 * len(runs), "made up"

  out = tables.execute(
    lambda: table1.plan("full", results=path, data_dir="x"),
    tables.Strategy(members=6),
    deadline=clock() + 250.0,
    train=_trainer(clock, path, lambda cfg: 100.0, seen),
    estimator=estimator,
    clock=clock,
    log=lambda *_: None,
  )
  # 6 and 3 members (the whole lam x seed grids among the first 6) do not fit 250 s with the
  # margin (690, 345 s); 2 do (230 s). Then 50 s are left: the other 4 runs of the program are
  # no whole grid, and the first alone needs 115 s.
  assert sizes == [6, 3, 2] + [1]
  assert out.trained == seen == ["final__LT__SGD__CE___seed0", "final__LT__SGD__CE___seed1"]
  assert out.stopped == (
    "final__LT__SGD__CE___seed2 needs about 115 s (100 s from made up, x1.15); 50 s left"
  )


def test_the_probes_rate_estimates_a_run_it_timed_and_only_such_a_run(runner):
  tables, table1 = runner
  from absgd_jax.train import make_config

  s = tables.Strategy(
    members=6, probe_rate=60_000.0, probe_compile_s=20.0, probe_run=("resnet32", 32, 128)
  )
  est = tables.Estimator(s, "gpu", measure=lambda *_: pytest.fail("no measure was needed"))
  run = next(iter(table1.plan("full", results="/tmp/unused.jsonl", data_dir="x")))
  seconds, why = est([run] * 6, [])
  cfg = run.make()
  images = 12_406  # CIFAR-10-LT at rho = 100: 5000 * 100 ** (-c / 9), c = 0..9, rounded
  train_s = 200 * images * 6 / 60_000  # 200 epochs, 6 members at the probe's 6-member rate
  eval_s = 20 * 10_000 * 6 / 60_000 / 3  # every 10 epochs, 10,000 test images
  assert tables.approx_images(cfg) == images
  assert seconds == pytest.approx(1.5 * (train_s + eval_s) + 3 * 20.0 + 30.0)
  assert "the probe's 60,000 images/s" in why
  # Two members: a third of the training and evaluation, the same compiling and loading.
  assert est([run] * 2, [])[0] == pytest.approx(1.5 * (train_s + eval_s) / 3 + 90.0)
  noise = make_config("cifar10-noise", epochs=120)
  assert est.from_probe(noise, 1) is None  # another model: the probe did not time it


def _probe_json(path, variants):
  with open(path, "w") as f:
    json.dump({"machine": {"platform": "gpu", "device": "H100"}, "variants": variants}, f)


def test_the_strategy_is_the_probes_fastest_variant_the_kit_can_run(runner, tmp_path):
  tables, _ = runner
  path = str(tmp_path / "probe.json")
  ok = lambda ips, **kw: dict(status="ok", images_per_s=ips, **kw)  # noqa: E731
  _probe_json(
    path,
    {
      "f32-host-1": ok(20_000.0),
      "bf16-device-vmap6": ok(90_000.0),
      "f32-host-laxmap6": ok(95_000.0),  # faster, but the kit has no lax.map members
      "bf16-device-async6": ok(99_000.0),  # the same
      "f32-device-1-procs3": dict(status="error", error="out of memory"),
      "best1-procs3": ok(60_000.0, resolved="bf16-device-1-procs3"),
    },
  )
  s = tables.strategy_from_probe(path)
  assert (s.members, s.mode, s.procs, s.dtype, s.input_pipeline) == (
    6,
    "vmap",
    1,
    "bfloat16",
    "device",
  )
  assert s.name == "bf16-device-vmap6" and "bf16-device-vmap6" in s.source
  assert s.settings() == {"input_pipeline": "device", "dtype": "bfloat16"}
  _probe_json(
    path,
    {
      "f32-host-1": ok(20_000.0),
      "best1-procs3": ok(60_000.0, resolved="f32-device-1-procs3"),
      "f32-host-1-cmdbuf_all": ok(30_000.0, xla_flags="--xla_gpu_enable_command_buffer=FUSION"),
    },
  )
  s = tables.strategy_from_probe(path)
  assert (s.members, s.procs, s.input_pipeline, s.in_children()) == (1, 3, "device", True)
  _probe_json(path, {"f32-host-1": dict(status="error", error="no GPU")})
  assert tables.strategy_from_probe(path) is None


@needs_cifar
def test_gpu_window_runs_the_probe_then_the_tables_and_brings_back_its_files(tmp_path):
  """The window's script end to end on the CPU: the probe's --tiny, then the tiny tables
  within what is left, every file that comes back in one folder."""
  out = tmp_path / "out"
  run = subprocess.run(
    [
      sys.executable,
      "-m",
      "experiments.gpu_window",
      "--tiny",
      "--budget-s",
      "150",
      "--probe-share",
      "0.2",
      "--out",
      str(out),
      "--data-dir",
      DATA,
      "--results-dir",
      str(tmp_path / "results"),
      "--work",
      str(tmp_path / "runs"),
      "--",
      "--tables",
      "1",
      "--seeds",
      "0",
    ],
    cwd=tmp_path,
    env=child_env("--xla_cpu_multi_thread_eigen=false"),
    capture_output=True,
    text=True,
    timeout=400,
  )
  assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
  files = sorted(os.listdir(out))
  assert {"gpu_probe.json", "window.log", "window.json", "paper_tables_tiny.jsonl"} <= set(files)
  assert len(files) <= 8 and all(os.path.isfile(out / f) for f in files)
  probe = json.loads((out / "gpu_probe.json").read_text())
  assert probe["variants"]["f32-host-1"]["status"] == "ok"
  summary = json.loads((out / "window.json").read_text())
  assert summary["tables"]["exit_code"] == 0 and summary["elapsed_s"] < 150
  assert summary["tables"]["strategy"].startswith("strategy ")
  # The records brought back are the ones the tables appended, each once.
  back = [json.loads(line) for line in open(out / "paper_tables_tiny.jsonl")]
  kept = [json.loads(line) for line in open(tmp_path / "results" / "paper_tables_tiny.jsonl")]
  assert back == kept and len(back) == summary["records"]["paper_tables_tiny.jsonl"] >= 1
  assert "probe: " in (out / "window.log").read_text()


def test_merge_keeps_the_records_a_window_brought_back_once(tmp_path):
  from experiments import common, gpu_window

  back, results, bench = tmp_path / "back", tmp_path / "results", tmp_path / "bench"
  back.mkdir(), results.mkdir(), bench.mkdir()
  common.append_record(str(results / "t.jsonl"), dict(key="a", test_acc=0.1))
  for key in ("a", "b", "c"):  # "a" was there already (the window's checkout had it)
    common.append_record(str(back / "t.jsonl"), dict(key=key, test_acc=0.2))
  _probe_json(str(back / "gpu_probe.json"), {})
  for _ in range(2):  # A second merge of the same folder adds nothing.
    gpu_window.merge(str(back), str(results), str(bench), log=lambda *_: None)
  recs = common.read_records(str(results / "t.jsonl"))
  assert [(r["key"], r["test_acc"]) for r in recs] == [("a", 0.1), ("b", 0.2), ("c", 0.2)]
  assert os.listdir(bench) == ["gpu_probe_gpu_h100.json"]
