"""A sweep as one program: each member equals its single run, one compile, clear refusals.

The single runs are :class:`absgd_jax.train.Trainer` with the member's own config, on one
device; the tolerance is that of the one-vs-eight-device tests in test_train.py (the vmapped
program sums in another order than the single one, and ABSGD's exponential weights carry
such float32 differences from step to step).
"""

import dataclasses
import json

import jax
import numpy as np
import pytest

from absgd_jax.train import Sweep, Trainer, cli, make_config, sweep
from absgd_jax.train import members as members_lib
from absgd_jax.train import trainer as trainer_lib
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
  return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y))))
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


_SINGLE_RUNS = {}  # the single runs, by config without out_dir: two cases share theirs


def _single_run(config):
  key = dataclasses.replace(config, out_dir="")
  if key not in _SINGLE_RUNS:
    single = Trainer(config, progress=False, log=False, devices=ONE)
    single.fit()
    _SINGLE_RUNS[key] = single
  return _SINGLE_RUNS[key]


@pytest.mark.parametrize("grid, kw, mode", [
    # lam from the first step, with a validation split to choose the winner on.
    ({"lam": ["0.5", "5"]}, dict(val_fraction=0.2), "vmap"),
    # lam (traced inside the stage-2 schedule) x seed: own init, data and batch order.
    ({"lam": ["1", "5"], "seed": ["0", "1"]}, dict(stage2_epoch=1), "vmap"),
    # gamma, one weigher per value chosen by lax.switch (a select under vmap).
    ({"gamma": ["0.5", "1.0"]}, dict(lam=1.0), "vmap"),
    # The CPU's default: the members one after another (lax.map) inside the program.
    ({"lam": ["1", "5"], "seed": ["0", "1"]}, dict(stage2_epoch=1), "map"),
])
def test_members_equal_their_single_runs(tmp_path, grid, kw, mode):
  cfg = _cfg(tmp_path, **kw)
  sw = Sweep(cfg, grid, progress=False, devices=ONE, mode=mode)
  out = sw.fit()
  singles = []
  for i, m in enumerate(sw.members):
    single = _single_run(m.config)
    singles.append(single)
    _assert_trees_close(_member(sw.state.params, i), jax.device_get(single.state.params),
                        **PARAM_TOL)
    assert float(_member(sw.state.w_state.log_s, i)) == pytest.approx(
        float(single.state.w_state.log_s), rel=1e-4, abs=1e-6)
    assert int(_member(sw.state.step, i)) == int(single.state.step)
    got, want = out["members"][i]["final"], single.history[-1]
    for key in ("train_loss", "weighted_loss", "ess_mean"):
      assert got[key] == pytest.approx(want[key], rel=1e-4), key
    assert got["test_acc"] == pytest.approx(want["test_acc"], abs=1.5 / len(single.exp.test))
  # The members are different runs: a sweep that trained one model M times would fail here.
  for a in range(len(singles)):
    for b in range(a):
      assert _max_diff(jax.device_get(singles[a].state.params),
                       jax.device_get(singles[b].state.params)) > 1e-3
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
    assert r["config"]["lam"] == t.config.lam and r["config"]["seed"] == t.config.seed
    run = folder / r["label"]
    assert json.loads((run / "config.json").read_text())["config"] == r["config"]
    assert len((run / "metrics.jsonl").read_text().splitlines()) == t.config.epochs
    assert json.loads((run / "summary.json").read_text())["final"]["epoch"] == t.config.epochs - 1
  assert f"winner: {out['winner']}, by final {key}" in sweep.table(out)


@pytest.mark.parametrize("mode", ["vmap", "map"])
def test_whole_sweep_compiles_each_step_once(tmp_path, monkeypatch, fast_compile, mode):
  traces = {"train": 0, "eval": 0}
  real_train, real_eval = members_lib.make_train_step, trainer_lib.make_eval_step

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
  monkeypatch.setattr(trainer_lib, "make_eval_step", counting_eval)
  cfg = _cfg(tmp_path, epochs=2, val_fraction=0.2)
  sw = Sweep(cfg, {"lam": [1, 5], "gamma": [0.5, 0.9]}, progress=False, log=False,
             devices=ONE, mode=mode)
  sw.fit()
  # 2 epochs of steps for 4 members, evaluated on test and val each epoch: one trace each
  # (whose program, in map mode, holds the 4 members' steps one after another).
  per_trace = 4 if mode == "map" else 1
  assert traces == {"train": per_trace, "eval": per_trace}
  assert np.asarray(sw.state.step).tolist() == [2 * sw.steps_per_epoch] * 4


@pytest.mark.parametrize("items, preset_kw, key", [
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
])
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
  assert all(m.config.out_dir.startswith(root) for m in members)
  assert members[3].config.out_dir.endswith("/lam=5,seed=1")
  assert len({m.config.out_dir for m in members}) == 4
  given = make_config("digits-lt", out_dir="mine")
  assert member_configs(given, {"lam": [2]})[0].config.out_dir == "mine/lam=2"


@pytest.mark.skipif(jax.device_count() < 2, reason="needs 2 simulated devices")
def test_sweep_on_two_devices_matches_one(tmp_path):
  # The batches split over a ("data",) mesh: [B] shared, or [M, B] stacked per seed.
  cfg = _cfg(tmp_path, epochs=1)
  grid = {"seed": [0, 1]}
  one = Sweep(cfg, grid, progress=False, log=False, devices=jax.devices()[:1], mode="vmap")
  two = Sweep(cfg, grid, progress=False, log=False, devices=jax.devices()[:2], mode="vmap")
  one.fit(), two.fit()
  assert two.mesh.size == 2 and not two.shared_batches
  _assert_trees_close(jax.device_get(one.state.params), jax.device_get(two.state.params),
                      **PARAM_TOL)
