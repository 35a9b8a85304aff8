"""A sweep as one program: each member equals its single run, one compile, clear refusals;
and a sweep folder is a run folder (member folders as single runs', refusal, resume).

The single runs are :class:`absgd_jax.train.Trainer` with the member's own config, on one
device; the tolerance is that of the one-vs-eight-device tests in test_train.py (the vmapped
program sums in another order than the single one, and ABSGD's exponential weights carry
such float32 differences from step to step).
"""

import json

import jax
import numpy as np
import pytest

from absgd_jax.train import (
  DivergenceError,
  RunMismatchError,
  Sweep,
  Trainer,
  cli,
  make_config,
  sweep,
)
from absgd_jax.train import members as members_lib
from absgd_jax.train.sweep import member_configs, parse_sweep

ONE = jax.devices()[:1]
PARAM_TOL = dict(rtol=2e-4, atol=2e-6)  # test_train.test_eight_devices_match_one's


def _cfg(tmp_path, **kw):
  base = dict(epochs=2, checkpoint=False, out_dir=str(tmp_path / "sweep"), batch_size=64)
  base.update(kw)
  return make_config("digits-lt", **base)


def _member(tree, i):
  return jax.tree.map(lambda x: np.asarray(x)[i], jax.device_get(tree))


def _assert_trees_close(a, b, **kw):
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, **kw), a, b)


def _max_diff(a, b):
  return max(
    float(np.max(np.abs(np.asarray(x) - np.asarray(y))))
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))
  )


_SINGLE_RUNS = {}  # the single runs, by config without out_dir: two cases share theirs


def _single_run(config):
  key = config.replace(out_dir="")
  if key not in _SINGLE_RUNS:
    single = Trainer(config, progress=False, log=False, devices=ONE)
    single.fit()
    _SINGLE_RUNS[key] = single
  return _SINGLE_RUNS[key]


@pytest.mark.parametrize(
  "grid, kw, mode",
  [
    # lam from the first step, with a validation split to choose the winner on.
    ({"lam": ["0.5", "5"]}, dict(val_fraction=0.2), "vmap"),
    # lam (traced inside the stage-2 schedule) x seed: own init, data and batch order.
    ({"lam": ["1", "5"], "seed": ["0", "1"]}, dict(stage2_epoch=1), "vmap"),
    # gamma, one weigher per value chosen by lax.switch (a select under vmap).
    ({"gamma": ["0.5", "1.0"]}, dict(lam=1.0), "vmap"),
    # A one-value lam beside a gamma axis: every member's lam (2) replaces the base's (5).
    ({"lam": ["2"], "gamma": ["0.5", "1.0"]}, {}, "vmap"),
    # The CPU's default: the members one after another (lax.map) inside the program.
    ({"lam": ["1", "5"], "seed": ["0", "1"]}, dict(stage2_epoch=1), "map"),
  ],
)
def test_members_equal_their_single_runs(tmp_path, grid, kw, mode):
  cfg = _cfg(tmp_path, **kw)
  sw = Sweep(cfg, grid, progress=False, devices=ONE, mode=mode)
  sw.fit()
  out = sw.result
  singles = []
  for i, m in enumerate(sw.members):
    single = _single_run(m.config)
    singles.append(single)
    _assert_trees_close(
      _member(sw.state.params, i), jax.device_get(single.member_state(0).params), **PARAM_TOL
    )
    assert float(_member(sw.state.w_state.log_s, i)) == pytest.approx(
      float(single.member_state(0).w_state.log_s), rel=1e-4, abs=1e-6
    )
    assert int(_member(sw.state.step, i)) == int(single.member_state(0).step)
    got, want = out["members"][i]["final"], single.history[-1]
    for key in ("train_loss", "weighted_loss", "ess_mean"):
      assert got[key] == pytest.approx(want[key], rel=1e-4), key
    assert got["test_acc"] == pytest.approx(want["test_acc"], abs=1.5 / len(single.exp.test))
  # The members are different runs: a sweep that trained one model M times would fail here.
  for a in range(len(singles)):
    for b in range(a):
      assert (
        _max_diff(
          jax.device_get(singles[a].member_state(0).params),
          jax.device_get(singles[b].member_state(0).params),
        )
        > 1e-3
      )
  _check_winner_and_records(out, singles, tmp_path / "sweep")


def _check_winner_and_records(out, singles, folder):
  """The winner is the best single run on the chosen split; the records say the same."""
  key = out["selected_on"]
  assert key == ("val_balanced_acc" if singles[0].exp.val is not None else "test_balanced_acc")
  scores = [t.history[-1][key] for t in singles]
  best = int(np.argmax(scores))  # the first of equal scores, as the sweep's rule
  assert out["winner"] == out["members"][best]["label"]
  rows = [json.loads(line) for line in (folder / "sweep.jsonl").read_text().splitlines()]
  assert [r["winner"] for r in rows] == [i == best for i in range(len(singles))]
  for r, s, t in zip(rows, scores, singles):
    assert r["status"] == "ok" and r["score"] == pytest.approx(s, abs=1.5 / len(t.exp.test))
    assert r["config"]["lam"] == t.config.weighting.lam and r["config"]["seed"] == t.config.seed
    run = folder / r["label"]
    assert json.loads((run / "config.json").read_text())["config"] == r["config"]
    assert len((run / "metrics.jsonl").read_text().splitlines()) == t.config.schedule.epochs
    assert (
      json.loads((run / "summary.json").read_text())["final"]["epoch"]
      == t.config.schedule.epochs - 1
    )
  assert f"winner: {out['winner']}, by final {key}" in sweep.table(out)


@pytest.mark.parametrize("mode", ["vmap", "map"])
def test_whole_sweep_compiles_each_step_once(tmp_path, monkeypatch, fast_compile, mode):
  traces = {"train": 0, "eval": 0}
  real_train, real_eval = members_lib.make_train_step, members_lib.make_eval_step

  def counting_train(*args, **kwargs):  # built once per trace of the vmapped member step
    traces["train"] += 1
    return real_train(*args, **kwargs)

  def counting_eval(*args, **kwargs):
    step = real_eval(*args, **kwargs)

    def eval_step(state, batch):
      traces["eval"] += 1
      return step(state, batch)

    return eval_step

  monkeypatch.setattr(members_lib, "make_train_step", counting_train)
  monkeypatch.setattr(members_lib, "make_eval_step", counting_eval)
  cfg = _cfg(tmp_path, epochs=2, val_fraction=0.2)
  sw = Sweep(
    cfg, {"lam": [1, 5], "gamma": [0.5, 0.9]}, progress=False, log=False, devices=ONE, mode=mode
  )
  sw.fit()
  # 2 epochs of steps for 4 members, evaluated on test and val each epoch: one trace each
  # (whose program, in map mode, holds the 4 members' steps one after another).
  per_trace = 4 if mode == "map" else 1
  assert traces == {"train": per_trace, "eval": per_trace}
  assert np.asarray(sw.state.step).tolist() == [2 * sw.steps_per_epoch] * 4


@pytest.mark.parametrize(
  "items, preset_kw, key",
  [
    (["foo=1,2"], {}, "foo"),
    (["model=mlp,resnet8"], {}, "model"),
    (["batch_size=32,64"], {}, "batch_size"),
    (["lam="], {}, "lam"),
    (["lam=1", "lam=2"], {}, "lam"),
    (["lam=1,1"], {}, "lam"),
    (["lam=abc"], {}, "lam"),
    (["lam=0,1"], {}, "lam"),
    (["seed=-1,0"], {}, "seed"),
    (["gamma=0.5,1.5"], {}, "gamma"),
    (["gamma=0.5,0.9"], dict(method="eg"), "gamma"),
    (["lam=1,2"], dict(method="sgd"), "lam"),
    (["lam1,2"], {}, "KEY=V1"),
  ],
)
def test_bad_sweep_specs_are_refused_naming_the_key(items, preset_kw, key):
  cfg = make_config("digits-lt", **preset_kw)
  with pytest.raises(ValueError, match=key):
    member_configs(cfg, parse_sweep(items))


def test_cli_refuses_a_bad_sweep_before_training(capsys, tmp_path):
  with pytest.raises(SystemExit) as e:
    cli.main(["--config", "digits-lt", "--out", str(tmp_path), "--sweep", "model=mlp,cnn4"])
  assert e.value.code == 2
  err = capsys.readouterr().err
  assert "--sweep model" in err and "lam, gamma, seed" in err
  assert not list(tmp_path.iterdir())  # nothing was written


def test_default_folder_names_the_sweep_not_one_lam():
  cfg = make_config("digits-lt")  # out_dir defaults to the single run's, which names lam=5
  members = member_configs(cfg, {"lam": ["1", "5"], "seed": ["0", "1"]})
  root = "runs/digits-lt/absgd-sweep-lam-seed-"
  assert all(m.config.run.out_dir.startswith(root) for m in members)
  assert members[3].config.run.out_dir.endswith("/lam=5,seed=1")
  assert len({m.config.run.out_dir for m in members}) == 4
  given = make_config("digits-lt", out_dir="mine")
  assert member_configs(given, {"lam": [2]})[0].config.run.out_dir == "mine/lam=2"


@pytest.mark.skipif(jax.device_count() < 2, reason="needs 2 simulated devices")
def test_sweep_on_two_devices_matches_one(tmp_path):
  # The batches split over a ("data",) mesh: [B] shared, or [M, B] stacked per seed.
  cfg = _cfg(tmp_path, epochs=1)
  grid = {"seed": [0, 1]}
  one = Sweep(cfg, grid, progress=False, log=False, devices=jax.devices()[:1], mode="vmap")
  two = Sweep(cfg, grid, progress=False, log=False, devices=jax.devices()[:2], mode="vmap")
  one.fit(), two.fit()
  assert two.mesh.size == 2 and not two.shared_batches
  _assert_trees_close(
    jax.device_get(one.state.params), jax.device_get(two.state.params), **PARAM_TOL
  )


# ------------------------------------------------------------- a sweep folder is a run folder


def _files(folder):
  """Every file under ``folder`` (relative paths), without orbax's per-save internals; an
  event file by its folder alone (its name holds the time and the host)."""
  return sorted(
    "tensorboard/<events>" if "tensorboard" in p.parts else str(p.relative_to(folder))
    for p in folder.rglob("*")
    if p.is_file() and "checkpoints" not in p.parts
  )


def _snapshot(folder):
  """Every file's bytes and time of change, and every folder, under ``folder``."""
  return {
    str(p): (p.read_bytes(), p.stat().st_mtime_ns) if p.is_file() else "folder"
    for p in folder.rglob("*")
  }


def _run_cfg(tmp_path, name, **kw):
  # lr_decay_epochs given, so that `epochs` changes no setting (a resume may extend a run).
  base = dict(
    epochs=2,
    checkpoint=True,
    out_dir=str(tmp_path / name),
    batch_size=64,
    lr_decay_epochs=(),
    drw_epoch=160,
    val_fraction=0.2,
  )
  base.update(kw)
  return make_config("digits-lt", **base)


def test_a_members_folder_holds_what_a_single_runs_holds(tmp_path):
  sw = Sweep(_run_cfg(tmp_path, "sweep"), {"lam": [2, 5]}, progress=False, devices=ONE, mode="vmap")
  sw.fit()
  single = Trainer(_run_cfg(tmp_path, "single", lam=2.0), progress=False, devices=ONE)
  single.fit()
  member, run = tmp_path / "sweep" / "lam=2", tmp_path / "single"
  assert _files(member) == _files(run)
  assert _files(run) == ["config.json", "metrics.jsonl", "summary.json", "tensorboard/<events>"]
  assert sorted(p.name for p in (member / "checkpoints").iterdir()) == sorted(
    p.name for p in (run / "checkpoints").iterdir()
  )
  got_cfg, want_cfg = (json.loads((d / "config.json").read_text()) for d in (member, run))
  assert got_cfg["fingerprint"] == want_cfg["fingerprint"]
  assert {**got_cfg["config"], "out_dir": ""} == {**want_cfg["config"], "out_dir": ""}
  got, want = (json.loads((d / "summary.json").read_text()) for d in (member, run))
  assert got.keys() == want.keys() and got["weights"] == want["weights"]
  assert got["weights"] == {"method": "absgd", "first_step": 0, "on": True}
  for a, b in zip(*((d / "metrics.jsonl").read_text().splitlines() for d in (member, run))):
    a, b = json.loads(a), json.loads(b)
    assert a.keys() == b.keys()
    assert a["test_acc"] == pytest.approx(b["test_acc"], abs=1.5 / len(single.exp.test))
    assert a["val_acc"] == pytest.approx(b["val_acc"], abs=1.5 / len(single.exp.val))
  _assert_trees_close(
    _member(sw.state.params, 0), jax.device_get(single.member_state(0).params), **PARAM_TOL
  )
  # The member's checkpoint is a single run's: a Trainer resumes it as its own.
  again = Trainer(_run_cfg(tmp_path, "sweep/lam=2", lam=2.0), progress=False, devices=ONE)
  assert again.restore() == 2
  _assert_trees_close(
    jax.device_get(again.member_state(0).params), _member(sw.state.params, 0), rtol=0, atol=0
  )


def test_a_one_member_sweep_is_a_plain_run(tmp_path):
  sw = Sweep(_run_cfg(tmp_path, "sweep", epochs=1), {"lam": [2]}, progress=False, devices=ONE)
  sw.fit()
  out = sw.result
  single = Trainer(_run_cfg(tmp_path, "single", epochs=1, lam=2.0), progress=False, devices=ONE)
  single.fit()
  assert out["winner"] == "lam=2"
  jax.tree.map(
    np.testing.assert_array_equal,
    _member(sw.state.params, 0),
    jax.device_get(single.member_state(0).params),
  )
  assert sw.history[-1]["test_acc"] == single.history[-1]["test_acc"]


def test_a_reused_sweep_folder_with_other_settings_is_refused_and_left_alone(tmp_path, capsys):
  Sweep(_run_cfg(tmp_path, "sweep", epochs=1), {"lam": [1, 2]}, progress=False, devices=ONE).fit()
  before = _snapshot(tmp_path / "sweep")
  assert any(k.endswith("lam=2/summary.json") for k in before)
  # The command line, as a user reruns a sweep with another learning rate.
  code = cli.main(
    [
      "--config",
      "digits-lt",
      "--out",
      str(tmp_path / "sweep"),
      "--set",
      "epochs=1",
      "--set",
      "lr_decay_epochs=",
      "--set",
      "val_fraction=0.2",
      "--set",
      "lr=0.05",
      "--sweep",
      "lam=1,2",
      "--no-progress",
      "--no-plots",
    ]
  )
  assert code == 2
  assert "lr: 0.1 in the saved run, 0.05 now" in capsys.readouterr().err
  assert _snapshot(tmp_path / "sweep") == before  # nothing written, nothing touched
  with pytest.raises(RunMismatchError, match=r"lr: 0\.1 in the saved run"):
    Sweep(
      _run_cfg(tmp_path, "sweep", epochs=1, lr=0.05), {"lam": [1, 2]}, progress=False, devices=ONE
    )
  # Another grid is another sweep: its sweep.jsonl would replace this one's.
  with pytest.raises(RunMismatchError, match=r"sweep: \{'lam': \[1\.0, 2\.0\]\} in the saved"):
    Sweep(_run_cfg(tmp_path, "sweep", epochs=1), {"lam": [1, 2, 5]}, progress=False, devices=ONE)
  assert _snapshot(tmp_path / "sweep") == before
  # Asked for, a new run starts afresh there with its own settings.
  Sweep(
    _run_cfg(tmp_path, "sweep", epochs=1, lr=0.05),
    {"lam": [1, 2]},
    progress=False,
    devices=ONE,
    new_run=True,
  ).fit()
  for label in ("lam=1", "lam=2"):
    saved = json.loads((tmp_path / "sweep" / label / "config.json").read_text())["config"]
    assert saved["lr"] == 0.05


def test_an_interrupted_sweep_resumes_from_its_members_checkpoints(tmp_path, capsys):
  grid = {"lam": [1, 5], "seed": [0, 1]}
  straight = Sweep(
    _run_cfg(tmp_path, "a", epochs=3), grid, progress=False, devices=ONE, mode="vmap"
  )
  straight.fit()
  # Stopped after its first epoch, then run again to the end.
  Sweep(_run_cfg(tmp_path, "b", epochs=1), grid, progress=False, devices=ONE, mode="vmap").fit()
  resumed = Sweep(_run_cfg(tmp_path, "b", epochs=3), grid, progress=True, devices=ONE, mode="vmap")
  resumed.fit()
  out = resumed.result
  assert "resumed from epoch 0" in capsys.readouterr().out
  jax.tree.map(
    np.testing.assert_array_equal,
    jax.device_get(straight.state.params),
    jax.device_get(resumed.state.params),
  )
  for h, want in zip(resumed.histories, straight.histories):
    assert [r["epoch"] for r in h] == [0, 1, 2]
    assert h[-1]["test_acc"] == want[-1]["test_acc"]
  assert out["winner"] == straight.result["winner"]
  for m in resumed.members:
    lines = (tmp_path / "b" / m.label / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [0, 1, 2]
  # Members saved at different epochs (stopped between two saves) go back to the earliest.
  ckpt = resumed.folders[1].checkpointer
  ckpt._manager.delete(2)
  again = Sweep(_run_cfg(tmp_path, "b", epochs=3), grid, progress=False, devices=ONE, mode="vmap")
  assert again.restore() == 2
  assert [len(h) for h in again.histories] == [2] * 4


def test_lam_inf_member_is_plain_sgd(tmp_path):
  # lam = inf gives every sample weight 1: the member trains as method="sgd" does, so one
  # program can hold the SGD baseline beside the ABSGD members.
  sw = Sweep(
    _run_cfg(tmp_path, "sweep", epochs=1, checkpoint=False),
    {"lam": ["inf", "2"]},
    progress=False,
    devices=ONE,
    mode="vmap",
  )
  assert [m.label for m in sw.members] == ["lam=inf", "lam=2"]
  sw.fit()
  # Its summary says the weights were off, as an SGD run's does; the lam = 2 member's were on.
  assert [s["weights"]["on"] for s in sw.summaries] == [False, True]
  sgd = Trainer(
    _run_cfg(tmp_path, "sgd", epochs=1, checkpoint=False, method="sgd"), progress=False, devices=ONE
  )
  sgd.fit()
  _assert_trees_close(
    _member(sw.state.params, 0), jax.device_get(sgd.member_state(0).params), **PARAM_TOL
  )
  assert _max_diff(_member(sw.state.params, 1), jax.device_get(sgd.member_state(0).params)) > 1e-3


def test_a_diverged_member_stops_alone_and_the_last_one_stops_the_sweep(tmp_path):
  # The divergence rules are the single run's (health.divergence), watched per member: a
  # member that diverges is left out, the others carry on, and when none is left the sweep
  # raises the single run's error, naming the members.
  sw = Sweep(
    _run_cfg(tmp_path, "sweep", epochs=1, checkpoint=False),
    {"lam": [1, 2]},
    progress=False,
    devices=ONE,
  )
  ok = {"train_loss": 1.0, "weighted_loss": 0.9, "ess_mean": 50.0, "log_s": 0.3, "lam": 1.0}
  bad = {**ok, "train_loss": float("nan")}
  records = [bad, dict(ok)]
  sw.watch.divergence(0, records, sw.histories)
  assert sw.status[0].startswith("diverged in epoch 0: the mean training loss is nan")
  assert sw.status[1] == "ok" and records == [None, ok]
  with pytest.raises(DivergenceError, match=r"member lam=2: training diverged in epoch 1"):
    sw.watch.divergence(1, [None, bad], sw.histories)
  sw._finish(0.0)
  out = sw.result
  assert out["winner"] is None and [r["status"][:8] for r in out["members"]] == ["diverged"] * 2
  assert "no healthy member: no winner." in sweep.table(out)
