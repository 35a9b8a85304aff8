"""The experiment modules under experiments/: their choices on known records, and tiny runs.

The tiny runs start each module as a user would (``python -m experiments.NAME`` in a
subprocess, one CPU device) at a size of seconds, and check what it wrote: records, chosen
values, PNGs.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from processes import child_env

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXP = os.path.join(REPO, "experiments")
# The CIFAR-10 zips: $ABSGD_CIFAR10_DIR, else a copy beside the checkout; tests skip without.
DATA = os.environ.get("ABSGD_CIFAR10_DIR") or os.path.join(
  REPO, "..", "shared", "data", "cifar10-jpeg"
)
needs_cifar = pytest.mark.skipif(
  not os.path.exists(os.path.join(DATA, "train.zip")), reason="CIFAR-10 zips not found"
)


@pytest.fixture
def experiments():
  from experiments import common, demo_tuning, table6

  return common, demo_tuning, table6


def _script(args, tmp_path, timeout=300):
  env = child_env("--xla_cpu_multi_thread_eigen=false")
  out = subprocess.run(
    [sys.executable, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout
  )
  assert out.returncode == 0, out.stderr[-3000:]
  return out.stdout


def test_demo_tuning_chooses_the_best_mean_and_ignores_incomplete_points(
  experiments, tmp_path, monkeypatch
):
  _, demo_tuning, _ = experiments
  grid = {"imbalance": {"sgd": [dict(lr=0.1), dict(lr=0.2), dict(lr=0.3)]}}
  monkeypatch.setattr(demo_tuning, "GRID", grid)
  # lr 0.1: mean 0.6; lr 0.2: mean 0.7 (the best complete point); lr 0.3 scores 0.9 on one
  # seed only, so it is not a candidate.
  lines = [(0.1, 0, 0.5), (0.1, 1, 0.7), (0.2, 0, 0.8), (0.2, 1, 0.6), (0.3, 0, 0.9)]
  path = tmp_path / "t.jsonl"
  path.write_text(
    "".join(
      json.dumps(dict(row="imbalance", method="sgd", point=dict(lr=lr), seed=s, val_balanced_acc=v))
      + "\n"
      for lr, s, v in lines
    )
  )
  chosen, scores = demo_tuning.choose(str(path), seeds=(0, 1))
  assert chosen == {"imbalance": {"sgd": {"lr": 0.2}}}
  assert [p for p, _ in scores["imbalance"]["sgd"]] == [{"lr": 0.1}, {"lr": 0.2}]


def test_demo_tuning_tiny_run_resumes(experiments, tmp_path, monkeypatch):
  _, demo_tuning, _ = experiments
  monkeypatch.setattr(demo_tuning, "CACHE", str(tmp_path / "cache"))
  monkeypatch.setattr(
    demo_tuning, "GRID", {"imbalance": {"sgd": [dict(lr=0.1)], "absgd": [dict(lr=0.1, lam=5.0)]}}
  )
  path = str(tmp_path / "t.jsonl")
  demo_tuning.tune(path, seeds=(0,), epochs=1)
  recs = [json.loads(l) for l in open(path)]
  assert [(r["method"], r["seed"]) for r in recs] == [("sgd", 0), ("absgd", 0)]
  assert all(0.0 <= r["val_balanced_acc"] <= 1.0 for r in recs)
  demo_tuning.tune(path, seeds=(0,), epochs=1)  # Everything is there: nothing new.
  assert len(open(path).readlines()) == 2


def _fake_train(score):
  """A train function for tables.execute: each run's measurements from ``score(run, config)``,
  which also checks what the run was built with."""
  from absgd_jax.train.run_folder import config_to_dict

  def train(runs, strategy, out_dir):
    out = []
    for run in runs:
      cfg = run.make()
      val = score(run, cfg)
      out.append(
        dict(
          config=config_to_dict(cfg),
          val_acc=val,
          val_balanced_acc=val,
          test_acc=0.5,
          best_test_acc=0.5,
          train_acc=0.5,
          wall_s=1.0,
          cpu_s=0.0,
          history=[{}],
        )
      )
    return out

  return train


def test_table6_lam_rows_take_their_sgd_rows_lr(experiments, tmp_path, monkeypatch):
  common, _, table6 = experiments
  from experiments import tables

  monkeypatch.setattr(common, "RUNS", str(tmp_path / "runs"))
  # Validation accuracy as a known function of the grid point.
  score = {
    ("SGD (CE)", 0.05): 0.3,
    ("SGD (CE)", 0.1): 0.5,
    ("SGD (CE)", 0.2): 0.4,
    ("SGD (SCE)", 0.05): 0.6,
    ("SGD (SCE)", 0.1): 0.2,
    ("SGD (SCE)", 0.2): 0.6,
    ("SGD (GCE)", 0.05): 0.1,
    ("SGD (GCE)", 0.1): 0.1,
    ("SGD (GCE)", 0.2): 0.3,
  }

  def fake(run, config):
    row, p = run.fields["row"], run.fields["point"]
    assert config.optim.lr == p["lr"]
    if "lam" in p:  # lam rows: best at lam=-2, and they must run at the SGD row's lr.
      return 1.0 - abs(p["lam"] + 2.0)
    if "kl_budget" in p:  # budget rows: best at 0.25, on lam's negative side.
      assert config.weighting.kl_budget == p["kl_budget"] and config.weighting.lam < 0
      return 1.0 - abs(p["kl_budget"] - 0.25)
    return score[(row, p["lr"])]

  path = str(tmp_path / "n.jsonl")
  out = tables.execute(
    lambda: table6.plan("reduced", data_dir="unused", results=path, seeds=(0,)),
    tables.Strategy(),
    train=_fake_train(fake),
    log=lambda *_: None,
  )
  assert not out.stopped and not out.failed
  recs = common.read_records(path)
  chosen = {r["row"]: r["point"] for r in recs if r["phase"] == "table"}
  assert chosen["SGD (CE)"] == {"lr": 0.1}
  assert chosen["SGD (SCE)"] == {"lr": 0.05}  # A tie goes to the first grid point.
  assert chosen["SGD (GCE)"] == {"lr": 0.2}
  assert chosen["ABSGD (CE)"] == {"lr": 0.1, "lam": -2.0}
  assert chosen["ABSGD (SCE)"] == {"lr": 0.05, "lam": -2.0}
  assert chosen["EG (SCE)"] == {"lr": 0.05, "lam": -2.0}
  assert chosen["ABSGD (CE, KL)"] == {"lr": 0.1, "kl_budget": 0.25}
  assert chosen["ABSGD (SCE, KL)"] == {"lr": 0.05, "kl_budget": 0.25}
  # 3 lr points x 3 SGD rows, 3 points x 5 lam rows, then one table run per row.
  assert len(recs) == 9 + 15 + 8 and len(recs) == len({r["key"] for r in recs})


def test_every_experiment_module_imports_as_part_of_the_package():
  # Each module runs as `python -m experiments.NAME`, so it must import from the package alone,
  # without a sys.path edit that would make it depend on the folder it is started from.
  import importlib
  import importlib.util
  import pkgutil

  names = [m.name for m in pkgutil.walk_packages([EXP], "experiments.")]
  assert {
    "experiments.common",
    "experiments.tables",
    "experiments.table1",
    "experiments.table2",
    "experiments.table6",
    "experiments.paper_tables",
    "experiments.gpu_window",
    "experiments.figures.fig4_gamma",
    "experiments.parity.head_to_head",
  } <= set(names)
  has_torch = importlib.util.find_spec("torch") is not None
  for name in names:
    source = importlib.util.find_spec(name).origin
    assert "sys.path" not in open(source).read(), name
    if name.startswith("experiments.parity") and not has_torch:
      continue  # The PyTorch reference needs the [parity] extra.
    importlib.import_module(name)


def test_mean_std_cells(experiments):
  common, _, _ = experiments
  sd = 100 * np.std([0.5, 0.7, 0.6], ddof=1)
  assert common.mean_std([0.5, 0.7, 0.6], 100) == f"60.00 +- {sd:.2f} (n=3)"
  assert common.mean_std([50.0, 70.0, 60.0]) == f"60.00 +- {sd:.2f} (n=3)"
  assert common.mean_std([0.5, None], 100) == "50.00 (n=1)"
  assert common.mean_std([]) == "-"


def test_fig1_toy_absgd_step_helps_the_minority(tmp_path):
  out = _script(["-m", "experiments.figures.fig1_toy", "--out", str(tmp_path / "f.png")], tmp_path)
  acc = {
    line.split(" minority")[0].strip(): float(line.split("minority accuracy ")[1][:4])
    for line in out.splitlines()
    if "minority accuracy" in line
  }
  assert acc["ABSGD (lam=0.5)"] > acc["SGD"]  # The figure's point, recomputed here.
  assert (tmp_path / "f.png").read_bytes()[:4] == b"\x89PNG"


def test_fig1_toy_absgd_weights_follow_exp_loss_over_lam():
  from experiments.figures import fig1_toy

  x, y = fig1_toy.make_data(0)
  idx = fig1_toy.make_batch(y, 0)
  assert int(y[idx].sum()) == fig1_toy.BATCH_MIN
  _, w = fig1_toy.one_step(x, y, idx, 0.5, 1.0)
  w0, b0 = fig1_toy.START
  margin = (2 * y[idx] - 1) * (x[idx] @ w0 + b0)
  loss = np.log1p(np.exp(-margin))
  expect = np.exp(loss / 0.5) / np.mean(np.exp(loss / 0.5))  # gamma = 1: the batch mean.
  np.testing.assert_allclose(np.asarray(w), expect, rtol=1e-4)


def test_fig4_lam_from_gives_absgd_runs_of_their_own_and_shares_sgd(tmp_path, monkeypatch):
  import absgd_jax.train.compile_cache
  from experiments.figures import fig4_gamma

  monkeypatch.setattr(absgd_jax.train.compile_cache, "use_compile_cache", lambda folder: None)
  seen = []

  def fake(path, fields, config, done):  # As train_record, with a made-up result.
    key = json.dumps(fields, sort_keys=True)
    if key in done:
      return done[key]
    seen.append((dict(fields), config.weighting.stage2_epoch))
    rec = dict(fields, key=key, test_acc=0.4 + 0.01 * len(seen), cpu_s=0.0)
    with open(path, "a") as f:
      f.write(json.dumps(rec) + "\n")
    return rec

  monkeypatch.setattr(fig4_gamma, "train_record", fake)
  path = str(tmp_path / "f4.jsonl")
  fig4_gamma.run(path, "unused", seeds=[0])
  fig4_gamma.run(path, "unused", seeds=[0], lam_from=2)
  default, early = seen[:6], seen[6:]
  assert default[0] == (dict(method="sgd", gamma=None, seed=0, tiny=False), 16)
  assert all("stage2_epoch" not in f and e == 16 for f, e in default)
  # lam from epoch 2: five ABSGD runs of its own, and SGD (which has no lam) not run again.
  assert [f["gamma"] for f, _ in early] == [0.1, 0.3, 0.5, 0.7, 0.9]
  assert all(f["stage2_epoch"] == 2 and e == 2 for f, e in early)
  got = fig4_gamma.plot(path, str(tmp_path / "a.png"))
  assert got["sgd"] == pytest.approx([41.0]) and got["gamma=0.1"] == pytest.approx([42.0])
  got = fig4_gamma.plot(path, str(tmp_path / "b.png"), lam_from=2)
  assert got["sgd"] == pytest.approx([41.0]) and got["gamma=0.1"] == pytest.approx([47.0])


@needs_cifar
def test_table6_tiny_run(tmp_path):
  """The full protocol's pipeline at a tiny size: its first setting (20% symmetric noise),
  the paper's lr grid cut to its middle point, tuning then the table."""
  path = tmp_path / "n.jsonl"
  out = _script(
    [
      "-m",
      "experiments.table6",
      "--protocol",
      "tiny",
      "--results",
      str(path),
      "--data-dir",
      DATA,
      "--seeds",
      "0",
      "--work",
      str(tmp_path / "runs"),
    ],
    tmp_path,
  )
  recs = [json.loads(l) for l in path.read_text().splitlines()]
  assert sorted((r["phase"], r["row"]) for r in recs) == [
    ("table", "ABSGD (CE)"),
    ("table", "SGD (CE)"),
    ("tune", "ABSGD (CE)"),
    ("tune", "SGD (CE)"),
  ]
  tuned = [r for r in recs if r["phase"] == "tune"]
  assert all(r["config"]["val_fraction"] == 0.1 and r["val_acc"] is not None for r in tuned)
  assert all(r["config"]["noise"] == "sym" and r["config"]["noise_rate"] == 0.2 for r in recs)
  assert all(r["config"]["model"] == "resnet8" and r["config"]["epochs"] == 1 for r in recs)
  assert "| SGD (CE) | lr=0.01 |" in out


@needs_cifar
def test_fig3_tiny_run(tmp_path):
  _script(
    [
      "-m",
      "experiments.figures.fig3_features",
      "--tiny",
      "--embed",
      "pca",
      "--per-class",
      "3",
      "--out",
      str(tmp_path / "f3.png"),
      "--records",
      str(tmp_path / "f3.jsonl"),
      "--data-dir",
      DATA,
    ],
    tmp_path,
  )
  recs = [json.loads(l) for l in (tmp_path / "f3.jsonl").read_text().splitlines()]
  assert [r["stage2_epoch"] for r in recs] == [16, 0] and all(r["lam"] == 1.0 for r in recs)
  assert (tmp_path / "f3.png").read_bytes()[:4] == b"\x89PNG"


@needs_cifar
def test_fig4_tiny_run(tmp_path):  # A test of its own, so that pytest -n 2 can run it alongside.
  out = _script(
    [
      "-m",
      "experiments.figures.fig4_gamma",
      "--tiny",
      "--seeds",
      "0",
      "--out",
      str(tmp_path / "f4.png"),
      "--records",
      str(tmp_path / "f4.jsonl"),
      "--data-dir",
      DATA,
    ],
    tmp_path,
  )
  recs = [json.loads(l) for l in (tmp_path / "f4.jsonl").read_text().splitlines()]
  assert [(r["method"], r["gamma"]) for r in recs] == [("sgd", None), ("absgd", 0.5)]
  assert recs[1]["config"]["gamma"] == 0.5 and recs[0]["config"]["method"] == "sgd"
  assert "wrote" in out and (tmp_path / "f4.png").read_bytes()[:4] == b"\x89PNG"


def test_every_protocol_builds_a_config_on_each_of_its_presets():
  from absgd_jax.train import make_config
  from absgd_jax.train.protocols import PRESETS_OF, PROTOCOLS

  for family, protocols in PROTOCOLS.items():
    for name, values in protocols.items():
      for preset in PRESETS_OF[family]:
        cfg = make_config(preset, values)
        assert cfg.schedule.epochs == values.get("epochs", cfg.schedule.epochs), (family, name)
        # Every decay and stage switch falls inside the run.
        assert all(0 < d < cfg.schedule.epochs for d in cfg.schedule.lr_decay_epochs)
        assert cfg.weighting.stage2_epoch < cfg.schedule.epochs, (family, name, preset)


def test_the_import_graph_of_the_experiments_has_no_cycle():
  import ast
  import pkgutil

  def imports(path: str) -> set[str]:
    """The experiments modules a file imports, at any depth of its code."""
    out = set()
    for node in ast.walk(ast.parse(open(path).read())):
      if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("experiments"):
        out.add(node.module)
        out.update(f"{node.module}.{a.name}" for a in node.names)
      elif isinstance(node, ast.Import):
        out.update(a.name for a in node.names if a.name.startswith("experiments"))
    return out

  def cycle(graph: dict[str, set[str]]) -> list[str]:
    """A cycle of ``graph`` as its path, or [] if it has none (depth-first, three colours)."""
    state, path = {}, []

    def visit(n):
      state[n] = "open"
      path.append(n)
      for m in sorted(graph.get(n, ())):
        if state.get(m) == "open":
          return path[path.index(m) :] + [m]
        if m not in state and (found := visit(m)):
          return found
      state[n] = "done"
      path.pop()
      return []

    for n in sorted(graph):
      if n not in state and (found := visit(n)):
        return found
    return []

  # The check finds a cycle where there is one.
  assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
  assert cycle({"a": {"b"}, "b": {"c"}, "c": set()}) == []
  modules = {m.name: _origin(m.name) for m in pkgutil.walk_packages([EXP], "experiments.")}
  graph = {name: imports(path) & set(modules) for name, path in modules.items()}
  assert graph["experiments.paper_tables"] >= {"experiments.table1", "experiments.table6"}
  assert cycle(graph) == [], cycle(graph)


def _origin(name: str) -> str:
  import importlib.util

  return importlib.util.find_spec(name).origin


@pytest.fixture
def tables():
  from experiments import table1, table2, tables

  return tables, table1, table2


def test_reduced_sgd_row_is_the_parity_protocol(tables):
  """The reduced table's SGD (CE) on LT trains what the PyTorch head-to-head trained: every
  setting that changes what an SGD run computes is equal."""
  pytest.importorskip("torch", reason="the PyTorch reference needs the [parity] extra")
  from absgd_jax.train.run_folder import result_fields
  from experiments.parity import head_to_head

  _, table1, table2 = tables
  ours = result_fields(
    table1.config("reduced", "LT", table1.ROWS["SGD (CE)"], {}, seed=1, out_dir="/tmp/unused")
  )
  parity = result_fields(head_to_head.our_config(head_to_head.Protocol(), 1, "/tmp/unused"))
  # lam, stage2_epoch and drw_epoch do nothing for plain SGD without class weights.
  differ = {k for k in set(ours) | set(parity) if ours.get(k) != parity.get(k)}
  assert differ <= {"lam", "stage2_epoch", "drw_epoch"}, differ
  # Every ABSGD row's lam and every DRW row's class weights switch on at the first decay.
  rows = {**table1.ROWS, **table2.ROWS}
  for setting, row in table1.CELLS + table2.CELLS["reduced"]:
    cfg = table1.config("reduced", setting, rows[row], {}, out_dir="/tmp/unused")
    assert cfg.weighting.stage2_epoch == cfg.loss.drw_epoch == cfg.schedule.lr_decay_epochs[0] == 48


def test_choose_and_report(tables, tmp_path, monkeypatch):
  runner, table1, _ = tables
  monkeypatch.setattr(table1.common, "RUNS", str(tmp_path / "runs"))
  path = str(tmp_path / "t.jsonl")
  recs = [
    dict(
      key=table1.tune_key("LT", "ABSGD (CE)", "lam", lam),
      stage="tune",
      setting="LT",
      row="ABSGD (CE)",
      seed=0,
      lam=lam,
      val_balanced_acc=v,
      test_acc=0.0,
      wall_s=1.0,
    )
    for lam, v in ((1.0, 0.40), (3.0, 0.45), (10.0, 0.45))
  ]
  scores = [(r["lam"], r["val_balanced_acc"]) for r in recs]
  assert runner.choose(scores) == 3.0  # A tie goes to the earlier point.
  assert runner.choose(scores[:2] + [(10.0, None)]) is None  # A point not yet recorded.
  for seed, (sgd, ab) in enumerate([(0.50, 0.52), (0.48, 0.47), (0.51, 0.55)]):
    for row, acc, extra in (("SGD (CE)", sgd, {}), ("ABSGD (CE)", ab, {"lam": 3.0})):
      recs.append(
        dict(
          key=table1.final_key("LT", row, seed),
          stage="final",
          setting="LT",
          row=row,
          seed=seed,
          test_acc=acc,
          wall_s=1.0,
          **extra,
        )
      )
  with open(path, "w") as f:
    f.write("".join(json.dumps(r) + "\n" for r in recs))
  text = table1.report(
    "reduced", results=path, cells=[("LT", "SGD (CE)"), ("LT", "ABSGD (CE)"), ("ST", "SGD (CE)")]
  )
  row = next(line for line in text.splitlines() if "| ABSGD (CE) |" in line)
  assert "lam=3" in row and "+2.00, -1.00, +4.00 (mean +1.67, vs SGD (CE))" in row
  assert "52.07" in next(line for line in text.splitlines() if "| LT | SGD (CE) |" in line)
  assert "Still running or not started (1 cells): ST SGD (CE)" in text
  assert "lam=1: 40.00, lam=3: 45.00, lam=10: 45.00" in text
  # The same records on the full protocol: lam is fixed there, and says so.
  text = table1.report("full", results=path, cells=[("LT", "ABSGD (CE)")])
  assert "| LT | ABSGD (CE) | lam=5 (fixed, untuned) |" in text


@needs_cifar
def test_paper_tables_tiny_run_tunes_then_trains_and_resumes(tmp_path):
  args = [
    "-m",
    "experiments.paper_tables",
    "--tiny",
    "--results",
    str(tmp_path / "t.jsonl"),
    "--seeds",
    "0",
    "--cells",
    "LT:ABSGD (LA)",
    "--data-dir",
    DATA,
    "--work",
    str(tmp_path / "runs"),
  ]
  out = _script(args, tmp_path)
  recs = [json.loads(line) for line in open(tmp_path / "t.jsonl")]
  assert [(r["stage"], r.get("lam")) for r in recs] == [
    ("tune", 1.0),
    ("tune", 3.0),
    ("final", recs[-1]["lam"]),
  ]
  best = max(recs[:2], key=lambda r: r["val_balanced_acc"])["lam"]
  assert recs[-1]["lam"] == best and recs[-1]["config"]["val_fraction"] == 0.0
  assert recs[0]["config"]["val_fraction"] == 0.1 and recs[0]["config"]["loss"] == "la"
  assert "| LT | ABSGD (LA) | lam=" in out
  _script(args, tmp_path)  # Everything is recorded: nothing trains again.
  assert len(open(tmp_path / "t.jsonl").readlines()) == 3


@needs_cifar
@pytest.mark.parametrize("strategy", ["members", "processes"])
def test_table1_strategies_record_every_run(tmp_path, strategy):
  """Table 1 at 8 px on the CPU, its runs sharing the device as members of one program (lam =
  inf for SGD) or as two processes: each run recorded once, under its own key, in the
  format the report reads."""
  results = tmp_path / "t.jsonl"
  out = _script(
    [
      "-m",
      "experiments.table1",
      "--tiny",
      "--data-dir",
      DATA,
      "--results",
      str(results),
      "--seeds",
      "0",
      "1",
      "--cells",
      "LT:SGD (CE)",
      "LT:ABSGD (CE)",
      "--strategy",
      strategy,
      "--workers",
      "2",
      "--work",
      str(tmp_path / "runs"),
    ],
    tmp_path,
    timeout=600,
  )
  recs = [json.loads(line) for line in open(results)]
  assert sorted(r["key"] for r in recs) == [
    "final__LT__ABSGD__CE___seed0",
    "final__LT__ABSGD__CE___seed1",
    "final__LT__SGD__CE___seed0",
    "final__LT__SGD__CE___seed1",
  ]
  for r in recs:  # Each record holds its own run: its seed, and lam = inf for SGD.
    assert r["config"]["seed"] == r["seed"] and 0.0 <= r["test_acc"] <= 1.0
    lam = r["config"]["lam"]
    assert (
      (lam == "inf" or r["config"]["method"] == "sgd") if r["row"] == "SGD (CE)" else lam == 5.0
    )
  if strategy == "members":
    assert {r["members"] for r in recs} == {4} and len({r["group"] for r in recs}) == 1
    assert {r["strategy"] for r in recs} == {"f32-auto-unrolled6"}
  else:
    assert {r["members"] for r in recs} == {1} and {r["strategy"] for r in recs} == {
      "f32-auto-1-procs2"
    }
  assert "| LT | ABSGD (CE) | lam=5 (fixed, untuned) |" in out
