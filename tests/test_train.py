"""The training kit: device-count invariance, exact resume, no recompiles, divergence, freezing.

Trainers run on one device unless the test is about parallelism, and the tests that only
continue a short run share one (``digits_run``), copied into their own folder.
"""

import concurrent.futures
import dataclasses
import json
import os
import shutil
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import absgd_jax
from absgd_jax.train import DivergenceError, RunMismatchError, Trainer, make_config
from absgd_jax.train import experiment_data, health, inputs, setup
from absgd_jax.train.run_folder import resolve_out_dir
from absgd_jax.train.members import stack, take
from processes import launch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ONE = jax.devices()[:1]


def _cfg(tmp_path, **kw):
  # The epoch-valued fields are given, so that they do not follow `epochs` (a resume may
  # extend a run): no decay and no DRW within these short runs.
  base = dict(
    epochs=2,
    checkpoint=False,
    out_dir=str(tmp_path / "run"),
    batch_size=64,
    lr_decay_epochs=(),
    drw_epoch=160,
  )
  base.update(kw)
  return make_config("digits-lt", **base)


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
  """One checkpointed epoch of digits-lt (ABSGD, lam = 5): the start that resumes continue."""
  path = tmp_path_factory.mktemp("digits_run")
  t = Trainer(_cfg(path, epochs=1, checkpoint=True), progress=False, devices=ONE)
  t.fit()
  return path / "run", t.history


def _copy_run(digits_run, tmp_path):
  shutil.copytree(digits_run[0], tmp_path / "run")
  return tmp_path


def _params(trainer):
  return jax.tree.map(np.asarray, jax.device_get(trainer.member_state(0).params))


def _assert_trees_close(a, b, **kw):
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, **kw), a, b)


@pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 simulated devices")
@pytest.mark.parametrize(
  "preset_kw",
  [
    dict(method="absgd", lam=0.5),
    dict(method="absgd", lam=-1.0, noise="sym", noise_rate=0.4, imbalance="none"),
  ],
)
def test_eight_devices_match_one(tmp_path, preset_kw):
  cfg = _cfg(tmp_path, epochs=1, **preset_kw)
  exp = experiment_data.build(cfg)
  one = Trainer(cfg, exp=exp, progress=False, log=False, devices=jax.devices()[:1])
  eight = Trainer(cfg, exp=exp, progress=False, log=False, devices=jax.devices()[:8])
  [s1], [s8] = one.fit(), eight.fit()
  _assert_trees_close(_params(one), _params(eight), rtol=2e-4, atol=2e-6)
  assert s1["final"]["log_s"] == pytest.approx(s8["final"]["log_s"], rel=1e-4, abs=1e-6)
  assert s8["devices"] == 8


@pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 simulated devices")
def test_eight_devices_match_one_with_batchnorm(tmp_path, fast_compile):
  # ResNet-8 has BatchNorm: its statistics must be those of the global batch on 8 devices.
  # Three steps: float32 summation order differs between 1 and 8 devices, and ABSGD's
  # exponential weights amplify that 1e-7 noise step by step (CNN4's max-pools on digits,
  # with their many exactly tied zeros, amplify it far faster).
  cfg = _cfg(tmp_path, epochs=1, model="resnet8", lam=2.0)
  exp = experiment_data.build(cfg)
  exp = dataclasses.replace(exp, train=exp.train.subset(np.arange(192)))
  one = Trainer(cfg, exp=exp, progress=False, log=False, devices=jax.devices()[:1])
  eight = Trainer(cfg, exp=exp, progress=False, log=False, devices=jax.devices()[:8])
  one.fit(), eight.fit()
  _assert_trees_close(_params(one), _params(eight), rtol=1e-3, atol=1e-5)
  _assert_trees_close(
    jax.device_get(one.member_state(0).batch_stats),
    jax.device_get(eight.member_state(0).batch_stats),
    rtol=1e-3,
    atol=1e-5,
  )


def test_resume_continues_exactly(tmp_path, digits_run):
  straight = Trainer(_cfg(tmp_path / "a", epochs=3, checkpoint=True), progress=False, devices=ONE)
  straight.fit()
  _copy_run(digits_run, tmp_path / "b")  # the first epoch, run and checkpointed alone
  resumed = Trainer(_cfg(tmp_path / "b", epochs=3, checkpoint=True), progress=False, devices=ONE)
  [summary] = resumed.fit()
  jax.tree.map(np.testing.assert_array_equal, _params(straight), _params(resumed))
  assert int(resumed.member_state(0).step) == int(straight.member_state(0).step)
  assert float(resumed.member_state(0).w_state.log_s) == float(
    straight.member_state(0).w_state.log_s
  )
  assert [r["epoch"] for r in resumed.history] == [0, 1, 2]
  assert summary["final"]["test_acc"] == straight.history[-1]["test_acc"]


def test_checkpoint_every_saves_each_nth_and_the_last_epoch_and_resumes_exactly(
  tmp_path, monkeypatch
):
  from absgd_jax.train.checkpoint import Checkpointer

  saved, save = [], Checkpointer.save
  monkeypatch.setattr(
    Checkpointer,
    "save",
    lambda self, epoch, *a, **k: (saved.append(epoch), save(self, epoch, *a, **k)),
  )
  straight = Trainer(
    _cfg(tmp_path / "a", epochs=3, checkpoint=True, checkpoint_every=2), progress=False, devices=ONE
  )
  straight.fit()
  assert saved == [1, 2]  # epoch 1 is due, epoch 2 is the last

  # Stopped in epoch 2, after epoch 1's checkpoint: the resume trains epoch 2 again.
  saved.clear()
  cut = Trainer(
    _cfg(tmp_path / "b", epochs=3, checkpoint=True, checkpoint_every=2), progress=False, devices=ONE
  )
  train_epoch = cut.train_epoch

  def stop_in_epoch_2(epoch):
    if epoch == 2:
      raise KeyboardInterrupt
    return train_epoch(epoch)

  cut.train_epoch = stop_in_epoch_2
  with pytest.raises(KeyboardInterrupt):
    cut.fit()
  assert saved == [1]
  resumed = Trainer(
    _cfg(tmp_path / "b", epochs=3, checkpoint=True, checkpoint_every=2), progress=False, devices=ONE
  )
  resumed.fit()
  assert saved == [1, 2]
  jax.tree.map(np.testing.assert_array_equal, _params(straight), _params(resumed))
  assert [r["epoch"] for r in resumed.history] == [0, 1, 2]
  assert resumed.history[-1]["test_acc"] == straight.history[-1]["test_acc"]


def test_a_corrupt_checkpoint_falls_back_to_the_previous_one(tmp_path, digits_run, capsys):
  # A corrupt checkpoint must give a fall-back, not a TensorStore dump. The
  # shared run goes on to epoch 2 (checkpoints 0 and 1); epoch 1's is then cut short, and a
  # resume to 3 epochs starts again from epoch 0's, retracing epoch 1 exactly.
  _copy_run(digits_run, tmp_path)
  first = Trainer(_cfg(tmp_path, epochs=2, checkpoint=True), progress=False, devices=ONE)
  first.fit()
  hit = 0
  for path in (tmp_path / "run" / "checkpoints" / "1" / "state").rglob("*"):
    if path.is_file() and path.parent.name == "d":  # the array data files
      path.write_bytes(b"\x00garbage" * 7)
      hit += 1
  assert hit
  again = Trainer(_cfg(tmp_path, epochs=3, checkpoint=True), progress=True, devices=ONE)
  with pytest.warns(
    UserWarning,
    match=r"checkpoints/1 does not read .*falling back to the "
    r"previous one, epoch 0",
  ):
    again.fit()
  assert "resumed from epoch 0" in capsys.readouterr().out
  assert [r["epoch"] for r in again.history] == [0, 1, 2]
  assert again.history[1]["train_loss"] == first.history[1]["train_loss"]  # retraced exactly
  assert again.checkpointer.latest_epoch() == 2


def test_no_recompile_across_lam_switch_lr_decay_and_restore(tmp_path, capsys):
  cfg = _cfg(
    tmp_path,
    epochs=3,
    checkpoint=True,
    stage2_epoch=1,
    lr_decay_epochs=(2,),
    warmup_epochs=1,
    lam=2.0,
  )
  t = Trainer(cfg, progress=True, devices=ONE)
  [summary] = t.fit()
  assert t.train_step._cache_size() == 1
  # Restoring into the live trainer and training on reuses the compiled step.
  t.restore()
  t.train_epoch(2)
  assert t.train_step._cache_size() == 1
  # The console: a line per epoch, and one where the lam stage begins.
  out = capsys.readouterr().out
  for epoch in range(3):
    line = next(l for l in out.splitlines() if l.startswith(f"epoch {epoch}: loss"))
    assert "ESS" in line and "test acc" in line and line.endswith("s")
  spe = -(-len(t.exp.train) // cfg.optim.batch_size)
  assert f"epoch 1: absgd weights on from step {spe} (lam=2.0)" in out
  # summary.json says from which step the weights were on.
  assert summary["weights"] == {"method": "absgd", "first_step": spe, "on": True}
  assert json.loads((tmp_path / "run" / "summary.json").read_text())["weights"]["on"]
  # A rerun of the finished run resumes and says so.
  Trainer(cfg, progress=True, devices=ONE).fit()
  assert "resumed from epoch 2" in capsys.readouterr().out


def test_two_stage_switches_lam_and_freezes_all_but_the_head(tmp_path, fast_compile):
  # ResNet-8: a model with BatchNorm, for the check on frozen layers' statistics, and of the
  # models that have it the cheapest to run unoptimised (the CNN's 196-channel convolutions at
  # the suite's -O0 took 1.5 s a step).
  cfg = _cfg(tmp_path, epochs=2, model="resnet8", stage2_epoch=1, stage2_trainable="fc", lam=1.0)
  exp = experiment_data.build(cfg)
  exp = dataclasses.replace(exp, train=exp.train.subset(np.arange(128)))
  t = Trainer(cfg, exp=exp, progress=False, log=False, devices=ONE)
  t.history.append({"epoch": 0, **t.train_epoch(0)[0]})
  assert t.history[0]["log_s"] == 0.0  # stage 1: lam = inf, every weight 1
  snap = jax.device_get((t.member_state(0).params, t.member_state(0).batch_stats))
  [rec] = t.train_epoch(1)
  params, stats = jax.device_get((t.member_state(0).params, t.member_state(0).batch_stats))
  for name in params:
    changed = not all(
      np.array_equal(a, b)
      for a, b in zip(jax.tree.leaves(snap[0][name]), jax.tree.leaves(params[name]))
    )
    assert changed == (name == "head"), name
  # The frozen layers' BatchNorm statistics go on tracking the data (torch's behaviour), so
  # training and testing normalise the head's features alike.
  assert any(
    not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(snap[1]), jax.tree.leaves(stats))
  )
  assert rec["log_s"] != 0.0 and rec["max_weight"] > 1.0  # stage 2: real weights


def test_divergence_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
  cfg = _cfg(tmp_path, epochs=3, checkpoint=True)
  spe = -(-len(experiment_data.build(cfg).train) // cfg.optim.batch_size)
  # Epoch 1 runs at lr = 1e11 (a config may not raise lr by a decay factor > 1).
  monkeypatch.setattr(
    setup, "learning_rate_schedule", lambda config, steps: lambda s: jnp.where(s < spe, 0.1, 1e11)
  )
  t = Trainer(cfg, progress=False, devices=ONE)
  with pytest.raises(DivergenceError, match="diverged in epoch 1") as err:
    t.fit()
  assert "last healthy checkpoint is epoch 0" in str(err.value)
  assert t.checkpointer.latest_epoch() == 0
  again = Trainer(cfg, progress=False, devices=ONE)
  assert again.restore() == 1
  assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(_params(again)))


def _resume_with(tmp_path, digits_run, poke):
  """Resumes the shared run to 3 epochs with ``poke(state)`` applied to the restored state."""
  _copy_run(digits_run, tmp_path)
  t = Trainer(_cfg(tmp_path, epochs=3, checkpoint=True), progress=False, devices=ONE)
  restore = t.restore

  def restore_and_poke():
    epoch = restore()
    t.state = stack([poke(t.member_state(0))])
    return epoch

  t.restore = restore_and_poke
  return t


def test_a_finite_blowup_stops_naming_the_healthy_checkpoint(tmp_path, digits_run):
  # Losses of 1e16 (no NaN) must not be checkpointed over the good epochs. Here the
  # classifier's scale is blown up by 1e6: the loss stays finite but leaves its running level.
  def blow_up(state):
    params = dict(state.params)
    params["head"] = jax.tree.map(lambda x: x * 1e6, params["head"])
    return state.replace(params=params)

  t = _resume_with(tmp_path, digits_run, blow_up)
  with pytest.raises(DivergenceError, match="diverged in epoch 1") as err:
    t.fit()
  assert "times the median of the earlier epochs" in str(err.value)
  assert "last healthy checkpoint is epoch 0" in str(err.value)
  assert t.checkpointer.latest_epoch() == 0  # the blown-up epoch was not saved


def test_a_log_s_blowup_that_zeroes_every_weight_stops(tmp_path, digits_run):
  # log s at 6.9e30 makes every weight 0 and would freeze the model silently.
  t = _resume_with(
    tmp_path,
    digits_run,
    lambda state: state.replace(
      w_state=state.w_state._replace(log_s=jnp.asarray(6.9e30, jnp.float32))
    ),
  )
  with pytest.raises(DivergenceError, match="every ABSGD weight has collapsed to 0") as err:
    t.fit()
  assert "last healthy checkpoint is epoch 0" in str(err.value)
  assert t.checkpointer.latest_epoch() == 0


def test_divergence_rules_on_hand_made_epochs():
  ok = {"train_loss": 1.0, "weighted_loss": 0.9, "ess_mean": 50.0, "log_s": 0.3, "lam": 5.0}
  history = [ok, {**ok, "train_loss": 3.0}, {**ok, "train_loss": 2.0}]  # median 2
  assert health.divergence(ok, history) is None
  assert health.divergence({**ok, "train_loss": 199.0}, history) is None  # < 100 x median
  assert "125 times the median" in health.divergence({**ok, "train_loss": 250.0}, history)
  assert "nan" in health.divergence({**ok, "train_loss": float("nan")}, history)
  assert "inf" in health.divergence({**ok, "weighted_loss": float("inf")}, history)
  assert "collapsed to 0" in health.divergence({**ok, "ess_mean": 0.5}, history)
  assert "weighted loss is 0" in health.divergence({**ok, "weighted_loss": 0.0}, history)
  # log s: a jump of orders of magnitude at the same lam, but not at a lam switch.
  assert "log s jumped" in health.divergence({**ok, "log_s": 1001.0}, history)
  assert health.divergence({**ok, "log_s": 999.0}, history) is None  # < 100 x max(0.3, 10)
  assert health.divergence({**ok, "log_s": 5e3, "lam": 0.001}, history) is None
  assert "log s is inf" in health.divergence({**ok, "log_s": float("inf")}, history)
  # Short of divergence, a checkpoint is still not marked healthy (the Checkpointer keeps the
  # last healthy one apart) when the loss is 10x its level, or a step zeroed every weight.
  assert health.suspect({**ok, "train_loss": 19.0}, history) is None
  assert "12.5 times the median" in health.suspect({**ok, "train_loss": 25.0}, history)
  assert "every ABSGD weight at 0" in health.suspect({**ok, "ess_min": 0.0}, history)
  # ... but not for learning to reweight (lam = inf), whose all-zero steps are Ren et al.'s.
  assert health.suspect({**ok, "ess_min": 0.0, "lam": float("inf")}, history) is None


def test_resuming_with_other_settings_refuses_and_names_them(tmp_path, digits_run):
  # method=sgd lr=0.5 in an ABSGD run's folder must not train a hybrid (or 0 epochs) and
  # relabel ABSGD's result as SGD's.
  _copy_run(digits_run, tmp_path)
  before = (tmp_path / "run" / "summary.json").read_text()
  other = _cfg(tmp_path, epochs=3, checkpoint=True, method="sgd", lr=0.5)
  with pytest.raises(
    RunMismatchError,
    match=r"lr: 0\.1 in the saved run, 0\.5 now; "
    r"method: 'absgd' in the saved run, 'sgd' now",
  ):
    Trainer(other, progress=False, devices=ONE).fit()
  assert (tmp_path / "run" / "summary.json").read_text() == before  # nothing rewritten
  # Asked for, a new run starts from epoch 0 with its own settings.
  t = Trainer(other.replace(epochs=1), progress=False, devices=ONE, new_run=True)
  [summary] = t.fit()
  assert [r["epoch"] for r in t.history] == [0]
  assert summary["config"]["method"] == "sgd"
  assert summary["weights"] == {"method": "sgd", "first_step": None, "on": False}
  stored = json.loads((tmp_path / "run" / "config.json").read_text())["config"]
  assert stored["method"] == "sgd" and stored["lr"] == 0.5


def test_a_class_given_up_by_negative_lam_is_named(tmp_path, capsys):
  # lam < 0 from step 0 can lock classes out (their mean weight falls to ~0).
  cfg = _cfg(
    tmp_path, epochs=1, imbalance="none", lam=-0.3, collapse_steps=10, collapse_weight=0.05
  )
  t = Trainer(cfg, progress=True, devices=ONE)
  with pytest.warns(
    RuntimeWarning,
    match=r"class \d \(\d\) has had a mean weight below 0\.05 "
    r"for 10 steps",
  ):
    t.fit()
  hits = t.history[0]["collapsed_classes"]
  assert hits and all(h["mean_weight"] < 0.05 and h["step"] >= 9 for h in hits)
  assert f"warning: class {hits[0]['class']}" in capsys.readouterr().out
  logged = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
  assert logged["collapsed_classes"] == hits


def test_positive_lam_never_trips_the_class_guard(digits_run):
  assert [r["collapsed_classes"] for r in digits_run[1]] == [[]]
  assert digits_run[1][0]["healthy"]


def test_metrics_files_and_noise_weights(tmp_path):
  cfg = _cfg(
    tmp_path, epochs=2, imbalance="none", noise="sym", noise_rate=0.4, lam=-2.0, checkpoint=False
  )
  [summary] = Trainer(cfg, progress=False, devices=ONE).fit()
  lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
  assert len(lines) == 2
  rec = json.loads(lines[-1])
  for key in (
    "train_loss",
    "weighted_loss",
    "log_s",
    "ess_mean",
    "class_mean_weight",
    "test_acc",
    "test_balanced_acc",
    "test_class_acc",
    "test_many_shot_acc",
    "flipped_mean_weight",
    "clean_mean_weight",
  ):
    assert key in rec, key
  # lam < 0 down-weights the samples whose (noisy) label disagrees with the model.
  assert rec["flipped_mean_weight"] < rec["clean_mean_weight"]
  assert json.loads((tmp_path / "run" / "summary.json").read_text())["final"]["epoch"] == 1
  assert summary["final"]["test_acc"] == rec["test_acc"]
  assert summary["weights"] == {"method": "absgd", "first_step": 0, "on": True}


def test_bad_config_values_list_the_choices():
  with pytest.raises(ValueError, match="method='adamw' is not one of sgd, absgd"):
    make_config("digits-lt", method="adamw")
  with pytest.raises(ValueError, match="unknown config 'cifar7'.*digits-lt"):
    make_config("cifar7")
  with pytest.raises(ValueError, match="unknown setting 'lamda'"):
    make_config("digits-lt", lamda=1.0)
  with pytest.raises(ValueError, match="rho must be >= 1"):
    make_config("digits-lt", rho=0.5)
  with pytest.raises(ValueError, match="head='cosine'"):
    make_config("digits-lt", loss="ldam")


_WORKER = textwrap.dedent("""
    import json, sys
    import numpy as np
    import jax
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    pid, nproc, port, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    jax.distributed.initialize(f"localhost:{port}", num_processes=nproc, process_id=pid)
    from absgd_jax.train import Trainer, make_config
    cfg = make_config("digits-lt", **json.loads(sys.argv[5]), out_dir=out + f"/run{pid}")
    t = Trainer(cfg, progress=False, log=False)
    t.fit()
    leaves = [np.asarray(x) for x in jax.tree.leaves(jax.device_get(t.member_state(0).params))]
    np.savez(out + f"/params_{pid}.npz", *leaves)
""")
_WORKER_CONFIG = dict(epochs=1, batch_size=64, checkpoint=False, lam=0.5)


def test_two_processes_match_one_process(tmp_path):
  script = tmp_path / "worker.py"
  script.write_text(_WORKER)
  # The reference is this process: 8 devices, as the 2 processes of 4 have together. It runs
  # while they do.
  with concurrent.futures.ThreadPoolExecutor(1) as pool:
    multi = pool.submit(launch, script, 2, 4, str(tmp_path), json.dumps(_WORKER_CONFIG))
    t = Trainer(
      make_config("digits-lt", **_WORKER_CONFIG, out_dir=str(tmp_path / "one")),
      progress=False,
      log=False,
    )
    assert len(t.mesh.devices.flat) == 8
    t.fit()
    multi.result()
  single = [np.asarray(x) for x in jax.tree.leaves(jax.device_get(t.member_state(0).params))]
  for pid in range(2):
    got = np.load(tmp_path / f"params_{pid}.npz")
    assert len(got.files) == len(single)
    for i, want in enumerate(single):
      np.testing.assert_allclose(got[f"arr_{i}"], want, rtol=2e-4, atol=2e-6)


def test_learning_rate_schedule_warmup_and_step_decay():
  cfg = make_config("cifar10-lt", epochs=200)
  sched = setup.learning_rate_schedule(cfg, steps_per_epoch=10)
  # 5-epoch linear warm-up from lr/50 to lr, then /100 at epoch 160 and again at 180.
  assert float(sched(0)) == pytest.approx(0.1 / 50, rel=1e-5)
  assert float(sched(49)) == pytest.approx(0.1, rel=1e-5)
  assert float(sched(1599)) == pytest.approx(0.1, rel=1e-5)
  assert float(sched(1600)) == pytest.approx(1e-3, rel=1e-5)
  assert float(sched(1800)) == pytest.approx(1e-5, rel=1e-5)


@pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 simulated devices")
def test_train_step_under_shard_map_matches_jit(tmp_path, fast_compile):
  # The same step function, written with axis_name for users who shard_map it themselves,
  # gives the global-batch step that plain jit gives.
  from jax.sharding import Mesh, PartitionSpec as P
  from absgd_jax.models import create_model
  from absgd_jax.train import make_train_step

  cfg = _cfg(tmp_path, epochs=1, model="resnet8", lam=1.5)
  t = Trainer(cfg, progress=False, log=False, devices=jax.devices()[:1])
  batch = next(inputs.train_batches(cfg, t.exp, 0, t.batch_sharding))
  batch = jax.tree.map(np.asarray, batch)
  state0 = jax.device_get(t.member_state(0))
  want, want_m = take(jax.jit(t.train_step)(stack([state0]), batch), 0)

  loss_fn = lambda logits, labels, step: absgd_jax.losses.cross_entropy(logits, labels)
  model = create_model("resnet8", 10, axis_name="data")
  weigher = absgd_jax.absgd_weights(1.5, cfg.weighting.gamma, axis_name="data")
  step = make_train_step(model, t.tx, loss_fn, weigher, num_classes=10, axis_name="data")
  mesh = Mesh(np.array(jax.devices()[:8]), ("data",))
  for check_vma in (True, False):  # shard_map's default, and the unchecked mode
    sharded = jax.jit(
      jax.shard_map(
        step, mesh=mesh, in_specs=(P(), P("data")), out_specs=(P(), P()), check_vma=check_vma
      )
    )
    got, got_m = sharded(state0, batch)
    _assert_trees_close(
      jax.device_get(got.params), jax.device_get(want.params), rtol=1e-4, atol=1e-6
    )
    _assert_trees_close(
      jax.device_get(got.batch_stats), jax.device_get(want.batch_stats), rtol=1e-4, atol=1e-6
    )
    assert float(got_m["wloss_sum"]) == pytest.approx(float(want_m["wloss_sum"]), rel=1e-5)
    assert float(got.w_state.log_s) == pytest.approx(float(want.w_state.log_s), rel=1e-5)
    # The metrics are of the global batch in both modes (ESS, per-class weight sums).
    for k in ("ess", "max_weight", "class_weight_sum", "class_count", "loss_sum"):
      np.testing.assert_allclose(
        np.asarray(got_m[k]), np.asarray(want_m[k]), rtol=1e-4, atol=1e-5, err_msg=k
      )
  # And under pmap, with the batch split over a leading device axis.
  split = jax.tree.map(lambda x: x.reshape(8, -1, *x.shape[1:]), batch)
  got, _ = jax.pmap(step, axis_name="data", in_axes=(None, 0))(state0, split)
  _assert_trees_close(
    jax.device_get(jax.tree.map(lambda x: x[0], got.params)),
    jax.device_get(want.params),
    rtol=1e-4,
    atol=1e-6,
  )


# Each case with what four epochs of digits-lt must show (measured on this data in
# brackets). min_test_acc: the balanced test set's accuracy (chance: 0.1); the long-tail
# methods (DRW with a balanced sampler, LDAM with class-balanced weights, ABSGD's second
# stage, LA, BS) lift it well above the head classes' share. min_train_acc: accuracy on the
# long-tailed training set, where always answering the head class scores 0.36; class-balanced
# SCE trades it for the tail classes, so it is held to its test accuracy alone.
@pytest.mark.parametrize(
  "kw, min_test_acc, min_train_acc",
  [
    (dict(method="adam", lr=1e-3), 0.15, 0.5),  # (0.20, 0.59)
    (dict(method="abadam", lr=1e-3, lam=2.0), 0.15, 0.5),  # (0.24, 0.61)
    (dict(method="eg", loss="sce"), 0.25, 0.5),  # (0.38, 0.76)
    (
      dict(method="sgd", class_weighting="drw", drw_epoch=1, sampler="balanced"),
      0.45,
      0.5,
    ),  # (0.58, 0.59)
    # LDAM's losses are ~30x CE's (logit scale 30), so lam scales with them: lam = 5 collapses.
    (
      dict(method="absgd", loss="ldam", head="cosine", class_weighting="cb", lam=100.0),
      0.45,
      0.5,
    ),  # (0.71, 0.79)
    (
      dict(method="absgd", loss="focal", stage2_epoch=1, stage2_trainable="fc+lb"),
      0.45,
      0.5,
    ),  # (0.61, 0.86)
    # Not tce: from scratch every p_y is below k = 0.5, so its gradient is 0 everywhere.
    (dict(method="sgd", loss="gce"), 0.15, 0.5),  # (0.20, 0.58)
    # The prior-corrected losses, and class weights on a noise-robust loss.
    (dict(method="absgd", loss="la", lam=2.0, stage2_epoch=1), 0.45, 0.5),  # (0.74, 0.86)
    (dict(method="sgd", loss="bs"), 0.45, 0.5),  # (0.60, 0.88)
    (dict(method="sgd", loss="sce", class_weighting="cb"), 0.25, 0.0),  # (0.36, 0.13)
  ],
)
def test_every_method_and_loss_trains(tmp_path, kw, min_test_acc, min_train_acc, fast_compile):
  cfg = _cfg(tmp_path, epochs=4, **kw)
  trainer = Trainer(cfg, progress=False, log=False, devices=ONE)
  final = trainer.fit()[0]["final"]
  assert np.isfinite(final["train_loss"]) and final["test_acc"] > 0.15, final
  # Learning, not drifting: the training loss falls over the run (measured: by 11% for
  # class-balanced SCE, whose reverse term is bounded, and by 38% to 88% for the rest) ...
  losses = [r["train_loss"] for r in trainer.history]
  assert len(losses) == 4 and losses[-1] < 0.95 * losses[0], losses
  # ... and reaches what the method is for.
  assert final["test_acc"] >= min_test_acc, final
  assert trainer.history[-1]["train_acc"] >= min_train_acc, trainer.history[-1]


def _image_zip(path, per_class, side, seed):
  """A CIFAR-shaped zip of PNG images (lossless, so the downsampled pixels are predictable)."""
  import io
  import zipfile
  from PIL import Image

  rng = np.random.default_rng(seed)
  with zipfile.ZipFile(path, "w") as z:
    for c in range(10):
      for i in range(per_class):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(buf, "PNG")
        z.writestr(f"class{c}/{i:03d}.png", buf.getvalue())


def test_reduced_cifar_protocol_downsamples_caps_the_head_class_and_trains(
  tmp_path, monkeypatch, fast_compile
):
  monkeypatch.setenv("ABSGD_CACHE", str(tmp_path / "cache"))
  _image_zip(tmp_path / "train.zip", 12, 16, 0)
  _image_zip(tmp_path / "test.zip", 2, 16, 1)
  cfg = make_config(
    "cifar10-lt",
    data_dir=str(tmp_path),
    image_size=8,
    n_max=6,
    rho=3,
    crop_padding=1,
    model="resnet8",
    epochs=1,
    batch_size=16,
    warmup_epochs=0,
    stage2_epoch=0,
    checkpoint=False,
    out_dir=str(tmp_path / "run"),
  )
  exp = experiment_data.build(cfg)
  assert exp.train.images.shape[1:] == (8, 8, 3) and exp.test.images.shape == (20, 8, 8, 3)
  from absgd_jax.data import imbalanced_counts

  assert exp.train.class_counts().tolist() == imbalanced_counts(6, 10, 3).tolist()
  # The other order, every image downsampled before the subset, gives the same arrays.
  from absgd_jax.data import downsample, load_image_folder, make_imbalanced

  full = downsample(load_image_folder(tmp_path / "train.zip"), 8)
  want = make_imbalanced(full, 3, seed=cfg.seed, n_max=6)
  np.testing.assert_array_equal(exp.train.images, want.images)
  np.testing.assert_array_equal(exp.train.labels, want.labels)
  [summary] = Trainer(cfg, exp=exp, progress=False, log=False, devices=ONE).fit()
  assert np.isfinite(summary["final"]["train_loss"])
  balanced = experiment_data.build(cfg.replace(imbalance="none", n_max=5))
  assert balanced.train.class_counts().tolist() == [5] * 10
  # test_per_class=1: the first test image of every class, and the training set untouched.
  capped = experiment_data.build(cfg.replace(test_per_class=1))
  first = [int(np.flatnonzero(exp.test.labels == c)[0]) for c in range(10)]
  np.testing.assert_array_equal(capped.test.images, exp.test.images[sorted(first)])
  assert sorted(capped.test.labels.tolist()) == list(range(10))
  np.testing.assert_array_equal(capped.train.images, exp.train.images)
  with pytest.raises(ValueError, match="crop_padding must be >= 0"):
    make_config("cifar10-lt", crop_padding=-1)
  with pytest.raises(ValueError, match="test_per_class"):
    make_config("cifar10-lt", test_per_class=-1)


def test_kl_budget_run_waits_for_stage_two_then_sets_lam_from_the_budget(tmp_path, capsys):
  # kl_budget > 0: uniform weights in stage 1, then lam from the budget.
  cfg = _cfg(tmp_path, epochs=2, stage2_epoch=1, kl_budget=0.01, checkpoint=True)
  assert "-kl0.01-" in resolve_out_dir(make_config("digits-lt", kl_budget=0.01)).run.out_dir
  t = Trainer(cfg, progress=True, devices=ONE)
  [summary] = t.fit()
  first, second = t.history
  assert first["max_weight"] == 1.0 and first["lam"] == float("inf")
  assert second["max_weight"] > 1.0 and 0 < second["lam"] < float("inf")
  ws = jax.device_get(t.member_state(0).w_state)
  assert isinstance(ws, absgd_jax.KlAbsgdWeightsState)
  spe = -(-len(t.exp.train) // cfg.optim.batch_size)
  assert int(ws.count) == spe  # the budget's state waited through stage 1 ...
  assert summary["weights"]["first_step"] == spe  # ... and the weights were on from stage 2
  assert f"absgd weights on from step {spe} (lam set by KL budget 0.01)" in capsys.readouterr().out
  np.testing.assert_allclose(second["lam"], float(absgd_jax.kl_lam(ws)), rtol=1e-6)
  # The budget's weigher is the core's: on one batch of losses both give the same weights.
  losses = jnp.asarray(np.random.default_rng(0).exponential(size=64), jnp.float32)
  kit = setup.make_batch_weigher(cfg, spe, None, None)
  core = absgd_jax.kl_absgd_weights(0.01, cfg.weighting.gamma)
  w_before, _ = kit.for_batch({}, {}, jnp.asarray(spe - 1)).update(losses, kit.init())
  w_after, st = kit.for_batch({}, {}, jnp.asarray(spe)).update(losses, kit.init())
  w_core, st_core = core.update(losses, core.init())
  np.testing.assert_array_equal(w_before, np.ones(64, np.float32))
  np.testing.assert_allclose(w_after, w_core, rtol=1e-6)
  np.testing.assert_allclose(st.log_abs_lam, st_core.log_abs_lam, rtol=1e-6)
  # A resume restores the budget's state layout, and refuses to mix it with a fixed lam.
  again = Trainer(cfg, progress=True, devices=ONE)
  again.fit()
  assert "resumed from epoch 1" in capsys.readouterr().out
  _assert_trees_close(jax.device_get(again.member_state(0).w_state), ws, rtol=0)
  with pytest.raises(RunMismatchError, match="kl_budget"):
    Trainer(cfg.replace(kl_budget=0.0), progress=False, devices=ONE)


def test_kl_budget_refuses_methods_it_does_not_serve():
  with pytest.raises(ValueError, match="kl_budget=0.1 sets ABSGD's lam: it needs method"):
    make_config("digits-lt", method="sgd", kl_budget=0.1)
  with pytest.raises(ValueError, match="kl_budget=-1.0 is outside the allowed range"):
    make_config("digits-lt", kl_budget=-1.0)


@pytest.mark.parametrize(
  "loss,weighting", [("la", "drw"), ("bs", "cb"), ("sce", "cb"), ("ldam", "none")]
)
def test_the_kit_s_loss_is_the_library_s(loss, weighting):
  """make_loss_fn hands each loss its settings, the training counts and the class weights of
  the step, as a direct call of absgd_jax.losses would."""
  from absgd_jax import losses as L
  from absgd_jax.train import make_config
  from absgd_jax.train.setup import make_loss_fn

  counts = np.array([500, 200, 80, 30, 10])
  cfg = make_config(
    "digits-lt",
    loss=loss,
    class_weighting=weighting,
    drw_epoch=2,
    la_tau=1.5,
    head="cosine" if loss == "ldam" else "linear",
  )
  fn = make_loss_fn(cfg, counts, steps_per_epoch=10)
  rng = np.random.default_rng(0)
  logits = jnp.asarray(rng.uniform(-1, 1, (6, 5)), jnp.float32)
  labels = jnp.asarray(rng.integers(0, 5, 6))
  cb = L.class_balanced_weights(counts, cfg.loss.cb_beta)
  for step, cw in ((0, None if weighting == "drw" else cb), (25, cb)):
    if weighting == "none":
      cw = None
    want = {
      "la": lambda: L.logit_adjusted_cross_entropy(
        logits, labels, class_counts=counts, tau=1.5, class_weights=cw
      ),
      "bs": lambda: L.balanced_softmax_cross_entropy(
        logits, labels, class_counts=counts, class_weights=cw
      ),
      "sce": lambda: L.symmetric_cross_entropy(
        logits, labels, alpha=cfg.loss.sce.alpha, beta=cfg.loss.sce.beta, class_weights=cw
      ),
      "ldam": lambda: L.ldam_loss(logits, labels, margins=L.ldam_margins(counts), scale=30.0),
    }[loss]()
    np.testing.assert_allclose(
      np.asarray(fn(logits, labels, step)),
      np.asarray(want),
      rtol=1e-6,
      err_msg=f"{loss} at step {step}",
    )


def test_kl_budget_with_lam_below_zero_weighs_easy_samples_up():
  """lam < 0 with a budget: the core's min-min weigher (sign -1), from stage 2 on."""
  cfg = make_config("digits-noise", kl_budget=0.05, stage2_epoch=1)
  kit = setup.make_batch_weigher(cfg, 10, None, None)
  core = absgd_jax.kl_absgd_weights(0.05, cfg.weighting.gamma, sign=-1)
  losses = jnp.asarray(np.random.default_rng(1).exponential(size=64), jnp.float32)
  w_kit, _ = kit.for_batch({}, {}, jnp.asarray(10)).update(losses, kit.init())
  w_core, _ = core.update(losses, core.init())
  np.testing.assert_allclose(w_kit, w_core, rtol=1e-6)
  # The easiest sample weighs most, the hardest least.
  assert int(np.argmax(w_kit)) == int(np.argmin(losses))
  assert int(np.argmin(w_kit)) == int(np.argmax(losses))
