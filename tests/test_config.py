"""Configuration: a run is its settings, schedules follow the run's length,
and every bad value is named before any data is read."""

import json

import pytest

from absgd_jax.data.facts import FACTS
from absgd_jax.train import cli
from absgd_jax.train import run_folder as C
from absgd_jax.train.config import Config
from absgd_jax.train.experiment_data import validate_for_data
from absgd_jax.train.presets import PRESETS, make_config, scale_epochs
from absgd_jax.train.run_folder import (
  RunMismatchError,
  check_resume,
  config_from_dict,
  config_to_dict,
  diff_configs,
  fingerprint,
  resolve_out_dir,
  result_fields,
)

# ------------------------------------------------------------------------- a run is its settings


def test_readme_sgd_baseline_does_not_share_the_absgd_folder():
  # `--config digits-lt`, then `--config digits-lt --set method=sgd`: two runs, two folders.
  absgd = resolve_out_dir(cli.parse(["--config", "digits-lt"])[1])
  sgd = resolve_out_dir(cli.parse(["--config", "digits-lt", "--set", "method=sgd"])[1])
  assert absgd.run.out_dir != sgd.run.out_dir
  assert absgd.run.out_dir.startswith("runs/digits-lt/absgd-lam5-")
  assert sgd.run.out_dir.startswith("runs/digits-lt/sgd-")
  # The README's CIFAR commands and every preset: one folder each.
  dirs = {resolve_out_dir(cli.parse(["--config", p])[1]).run.out_dir for p in PRESETS}
  assert len(dirs) == len(PRESETS)
  # Any two settings that compute different things differ in their folder.
  lr = resolve_out_dir(cli.parse(["--config", "digits-lt", "--set", "lr=0.5"])[1])
  assert lr.run.out_dir != absgd.run.out_dir


def test_out_dir_given_is_kept_and_same_command_gives_same_folder():
  _, a = cli.parse(["--config", "digits-lt", "--out", "/tmp/x"])
  assert a.run.out_dir == "/tmp/x"
  assert (
    resolve_out_dir(cli.parse(["--config", "digits-lt"])[1]).run.out_dir
    == resolve_out_dir(cli.parse(["--config", "digits-lt"])[1]).run.out_dir
  )
  args, _ = cli.parse(["--config", "digits-lt", "--new-run"])
  assert args.new_run


def test_fingerprint_covers_result_fields_only():
  base = make_config("digits-lt")
  # Fields that do not change what is computed leave it alone ...
  for kw in (
    dict(out_dir="elsewhere"),
    dict(eval_every=5),
    dict(checkpoint=False),
    dict(data_workers=2),
    dict(data_dir="/mnt/copy"),
    dict(collapse_steps=0),
  ):
    assert fingerprint(make_config("digits-lt", **kw)) == fingerprint(base), kw
  # ... every other field changes it.
  for kw in (
    dict(method="sgd"),
    dict(lr=0.05),
    dict(lam=2.0),
    dict(seed=1),
    dict(momentum=0.8),
    dict(lr_decay_epochs=(20,)),
    dict(batch_size=32),
  ):
    assert fingerprint(make_config("digits-lt", **kw)) != fingerprint(base), kw
  # lam=5 (int) and lam=5.0 are one setting.
  assert fingerprint(make_config("digits-lt", lam=5)) == fingerprint(base)
  # Step decays: epochs says where to stop, not what each epoch computes (a resume may
  # extend a run); a cosine schedule depends on it at every step.
  assert "epochs" not in result_fields(base)
  cos = make_config("digits-lt", lr_schedule="cosine", lr_decay_epochs=())
  assert fingerprint(cos.replace(epochs=40)) != fingerprint(cos)


def test_a_field_added_later_leaves_older_runs_their_folder():
  # test_per_class came after run folders were named by fingerprint. At its default it is
  # not in what the fingerprint hashes, so a run started before it keeps its folder name,
  # and a config saved then (no such key) compares equal to today's.
  cfg = make_config("cifar10-lt")
  assert "test_per_class" not in result_fields(cfg)
  saved = {
    k: v for k, v in json.loads(json.dumps(config_to_dict(cfg))).items() if k != "test_per_class"
  }
  assert fingerprint(saved) == fingerprint(cfg)
  assert C.diff_configs(saved, cfg) == []
  # Set, it is a setting like any other: another folder, and a resume refuses to mix them.
  capped = cfg.replace(test_per_class=20)
  assert result_fields(capped)["test_per_class"] == 20
  assert fingerprint(capped) != fingerprint(cfg)
  assert C.diff_configs(saved, capped) == ["test_per_class"]


def test_saved_config_round_trips_through_json():
  cfg = make_config("cifar10-noise", lam=float("inf"), method="sgd")
  saved = json.loads(json.dumps(config_to_dict(cfg)))
  assert fingerprint(saved) == fingerprint(cfg)
  assert config_from_dict(saved) == cfg
  assert diff_configs(saved, cfg) == []


def test_diff_names_the_keys_that_differ():
  a = make_config("digits-lt")
  b = make_config("digits-lt", method="sgd", lr=0.5, out_dir="other")
  assert diff_configs(a, b) == ["lr", "method"]
  assert diff_configs(config_to_dict(a), b) == ["lr", "method"]


def test_resume_with_other_settings_is_refused_naming_the_keys(tmp_path):
  # Resuming a partial ABSGD run with method=sgd lr=0.5 is refused, naming both keys.
  first = make_config("digits-lt", out_dir=str(tmp_path))
  C.write_run_config(first)
  saved = C.read_run_config(str(tmp_path))
  second = make_config("digits-lt", method="sgd", lr=0.5, out_dir=str(tmp_path))
  with pytest.raises(
    RunMismatchError,
    match=r"lr: 0\.1 in the saved run, 0\.5 now.*"
    r"method: 'absgd' in the saved run, 'sgd' now",
  ):
    check_resume(saved, second, last_epoch=3)
  check_resume(saved, second, last_epoch=3, new_run=True)  # Asked for: no error.
  check_resume(saved, first, last_epoch=3)  # The same settings resume.
  check_resume(saved, first.replace(eval_every=3), last_epoch=3)
  check_resume(None, first)  # A fresh folder.


def test_resume_refuses_a_run_already_past_the_epochs_asked(tmp_path):
  # A 30-epoch run's last checkpoint must not be reported as a 10-epoch run's result.
  long = make_config("digits-lt", epochs=30, lr_decay_epochs=(5,), out_dir=str(tmp_path))
  short = long.replace(epochs=10)
  with pytest.raises(RunMismatchError, match="epoch 30, past the epochs=10"):
    check_resume(config_to_dict(long), short, last_epoch=29)
  check_resume(config_to_dict(short), long, last_epoch=9)  # Extending a run is a resume.
  with pytest.raises(RunMismatchError, match="no config.json"):
    check_resume(None, long, last_epoch=4)


# ------------------------------------------------------------------ schedules follow the length


def test_shortening_cifar10_lt_keeps_absgd_on():
  # `--set epochs=20` on cifar10-lt must not keep stage2_epoch=160, which would never come.
  _, cfg = cli.parse(["--config", "cifar10-lt", "--set", "epochs=20"])
  base = PRESETS["cifar10-lt"]
  r = 20 / base["epochs"]
  assert cfg.weighting.stage2_epoch == round(base["stage2_epoch"] * r) == 16
  assert (
    cfg.schedule.lr_decay_epochs == tuple(round(e * r) for e in base["lr_decay_epochs"]) == (16, 18)
  )
  assert cfg.loss.drw_epoch == 16 and cfg.schedule.warmup_epochs == 1
  assert (
    cfg.weighting.stage2_epoch < cfg.schedule.epochs
    and max(cfg.schedule.lr_decay_epochs) < cfg.schedule.epochs
  )
  # A field the user sets is theirs: it is checked, not scaled.
  with pytest.raises(
    ValueError,
    match=r"stage2_epoch=160 must be < epochs=20 with "
    r"method='absgd'",
  ):
    make_config("cifar10-lt", epochs=20, stage2_epoch=160)
  assert make_config("cifar10-lt", epochs=20, stage2_epoch=5).weighting.stage2_epoch == 5


@pytest.mark.parametrize(
  "kw, match",
  [
    (dict(epochs=20, stage2_epoch=20, method="abadam"), r"stage2_epoch=20 must be < epochs=20"),
    (
      dict(epochs=20, stage2_epoch=25, stage2_trainable="fc", method="sgd"),
      r"stage2_epoch=25 must be < epochs=20 with stage2_trainable='fc'",
    ),
    (dict(epochs=20, class_weighting="drw", drw_epoch=20), r"drw_epoch=20 must be < epochs=20"),
    (dict(epochs=20, warmup_epochs=20), r"warmup_epochs=20 must be < epochs=20"),
    (dict(epochs=20, lr_decay_epochs=(10, 25)), r"lr_decay_epochs=\(10, 25\) has \[25\]"),
    (dict(epochs=20, lr_decay_epochs=(12, 8)), r"strictly increasing"),
  ],
)
def test_epoch_fields_the_run_never_reaches_are_named(kw, match):
  with pytest.raises(ValueError, match=match):
    make_config("cifar10-lt", **kw)


def test_scale_rule():
  # round(old * new / base), halves up; stage starts stay in 1..epochs-1; decays outside
  # 1..epochs-1 are dropped; warm-up stays >= 1 and < epochs.
  v = {"stage2_epoch": 22, "drw_epoch": 0, "lr_decay_epochs": (22, 29), "warmup_epochs": 2}
  # 29 * 15 / 30 = 14.5 rounds up to 15 = epochs: a decay the run would never reach, dropped.
  assert scale_epochs(v, 30, 15) == {
    "stage2_epoch": 11,
    "drw_epoch": 0,
    "lr_decay_epochs": (11,),
    "warmup_epochs": 1,
  }
  out = scale_epochs(v, 30, 1)
  assert out == {"stage2_epoch": 1, "drw_epoch": 0, "lr_decay_epochs": (), "warmup_epochs": 0}
  assert scale_epochs({"stage2_epoch": 1}, 200, 20) == {"stage2_epoch": 1}
  # 160 * 2 / 200 = 1.6 rounds to 2 = epochs: kept at 1, so that stage 2 has its epoch.
  assert scale_epochs({"stage2_epoch": 160, "drw_epoch": 160}, 200, 2) == {
    "stage2_epoch": 1,
    "drw_epoch": 1,
  }
  assert scale_epochs({"lr_decay_epochs": (100, 150)}, 200, 300) == {"lr_decay_epochs": (150, 225)}
  # Through make_config: a one-epoch digits run has no decay; a two-stage preset needs >= 2.
  assert make_config("digits-lt", epochs=1).schedule.lr_decay_epochs == ()
  assert make_config("digits-st", epochs=2).weighting.stage2_epoch == 1
  with pytest.raises(ValueError, match="stage2_epoch=1 must be < epochs=1"):
    make_config("digits-st", epochs=1)


# ----------------------------------------------------------- every bad value, named, up front


@pytest.mark.parametrize(
  "key, value, allowed",
  [
    ("momentum", 1.5, r"\[0, 1\)"),
    ("momentum", -0.1, r"\[0, 1\)"),
    ("weight_decay", -1.0, ">= 0"),
    ("lr", 0.0, "> 0"),
    ("lr", -1.0, "> 0"),
    ("lr", float("nan"), "> 0"),
    ("gamma", 0.0, r"\(0, 1\]"),
    ("gamma", 1.5, r"\(0, 1\]"),
    ("epochs", 0, ">= 1"),
    ("batch_size", 0, ">= 1"),
    ("eval_every", 0, ">= 1"),
    ("rho", 0.5, ">= 1"),
    ("noise_rate", 1.0, r"\[0, 1\)"),
    ("val_fraction", -0.1, r"\[0, 1\)"),
    ("lr_decay_factor", 0.0, r"\(0, 1\]"),
    ("cb_beta", 1.0, r"\[0, 1\)"),
    ("focal_gamma", -1.0, ">= 0"),
    ("gce_q", 0.0, r"\(0, 1\]"),
    ("tce_k", 1.0, r"\(0, 1\)"),
    ("seed", -1, ">= 0"),
    ("warmup_epochs", -1, ">= 0"),
    ("stage2_epoch", -1, ">= 0"),
    ("meta_per_class", 0, ">= 1"),
    ("data_workers", -1, ">= 0"),
    ("crop_padding", -2, ">= 0"),
    ("collapse_weight", 1.0, r"\[0, 1\)"),
    ("collapse_steps", -1, ">= 0"),
  ],
)
def test_every_range_is_checked_naming_key_value_and_range(key, value, allowed):
  with pytest.raises(ValueError, match=rf"{key}={value!r} is outside .*{allowed}"):
    make_config("digits-lt", **{key: value})


@pytest.mark.parametrize("key", ["lr", "weight_decay", "rho", "ldam_scale"])
def test_infinite_values_are_refused_except_lam(key):
  with pytest.raises(ValueError, match=rf"{key}=inf must be finite"):
    make_config("digits-lt", **{key: float("inf")})
  assert make_config("digits-lt", lam=float("-inf")).weighting.lam == float("-inf")


def test_momentum_and_weight_decay_are_caught_before_any_data(monkeypatch, capsys):
  # momentum=1.5 and weight_decay=-1 are refused before any data is loaded.
  from absgd_jax import data
  from absgd_jax.train import experiment_data

  def no_data(*a, **k):
    raise AssertionError("data was read")

  monkeypatch.setattr(data, "load_digits", no_data)
  monkeypatch.setattr(experiment_data, "build", no_data)
  for item, key in (("momentum=1.5", "momentum=1.5"), ("weight_decay=-1", "weight_decay=-1")):
    with pytest.raises(SystemExit) as e:
      cli.main(["--config", "digits-lt", "--set", item])
    assert e.value.code == 2
    assert key in capsys.readouterr().err


def test_batch_larger_than_the_data_is_refused_before_data_and_at_the_first_step(capsys):
  # batch_size=100000 is an error, not an out-of-memory crash.
  with pytest.raises(SystemExit):
    cli.parse(["--config", "digits-lt", "--set", "batch_size=100000"])
  err = capsys.readouterr().err
  assert "batch_size=100000" in err and str(FACTS["digits"].train_size) in err
  # After imbalance the split is smaller than the data set: checked before the first step.
  cfg = make_config("digits-lt", batch_size=1500)
  with pytest.raises(ValueError, match="batch_size=1500 exceeds the 700 training examples"):
    validate_for_data(cfg, n_train=700, n_devices=1)
  with pytest.raises(ValueError, match="batch_size=64 must be a multiple of the 3 devices"):
    validate_for_data(make_config("digits-lt"), n_train=700, n_devices=3)
  with pytest.raises(ValueError, match="multiple of the 3 processes"):
    validate_for_data(make_config("digits-lt", batch_size=64), 700, n_devices=8, n_processes=3)
  validate_for_data(make_config("digits-lt"), n_train=700, n_devices=8, n_processes=2)


@pytest.mark.parametrize(
  "item, match",
  [
    ("epochs=twenty", "epochs expects an integer; got 'twenty'"),
    ("lr=fast", "lr expects a number; got 'fast'"),
    ("augment=maybe", "augment expects true or false; got 'maybe'"),
    ("lr_decay_epochs=10,x", "lr_decay_epochs expects comma-separated integers"),
    ("lr_decay_epochs=1.5", "lr_decay_epochs expects comma-separated integers"),
    ("nonsense=1", "unknown setting 'nonsense'"),
  ],
)
def test_wrong_type_set_names_the_key(item, match, capsys):
  # A --set value of the wrong type names the key.
  with pytest.raises(SystemExit):
    cli.parse(["--config", "digits-lt", "--set", item])
  assert match in capsys.readouterr().err


def test_wrong_python_types_name_the_key():
  with pytest.raises(ValueError, match="epochs expects an integer; got 2.5"):
    make_config("digits-lt", epochs=2.5)
  with pytest.raises(ValueError, match="augment expects true or false; got 1"):
    make_config("digits-lt", augment=1)
  with pytest.raises(ValueError, match="lr_decay_epochs expects a sequence of integers"):
    make_config("digits-lt", lr_decay_epochs=22)
  with pytest.raises(ValueError, match="lr expects a number; got '0.1'"):
    Config.from_flat({"lr": "0.1"})
  assert make_config("digits-lt", lr_decay_epochs=[10, 20]).schedule.lr_decay_epochs == (10, 20)
  import pathlib

  assert make_config("digits-lt", out_dir=pathlib.Path("/tmp/r")).run.out_dir == "/tmp/r"
  with pytest.raises(ValueError, match="model expects a string; got 32"):
    make_config("digits-lt", model=32)


def test_presets_share_a_base_and_keep_the_paper_numbers():
  lt, st = PRESETS["cifar10-lt"], PRESETS["cifar10-st"]
  assert {k for k in lt.keys() | st.keys() if lt.get(k) != st.get(k)} == {"imbalance"}
  c100 = PRESETS["cifar100-lt"]
  assert {k for k in lt.keys() | c100.keys() if lt.get(k) != c100.get(k)} == {"dataset", "source"}
  # Section 4.1's protocol, as the paper states it.
  cfg = make_config("cifar10-lt")
  assert (
    cfg.model.name,
    cfg.schedule.epochs,
    cfg.optim.lr,
    cfg.schedule.warmup_epochs,
    cfg.schedule.lr_decay_epochs,
    cfg.schedule.lr_decay_factor,
    cfg.optim.batch_size,
    cfg.optim.weight_decay,
    cfg.weighting.stage2_epoch,
  ) == ("resnet32", 200, 0.1, 5, (160, 180), 0.01, 128, 2e-4, 160)


def test_config_reads_the_data_facts():
  for name, f in FACTS.items():
    kw = dict(classes=7) if name == "image-list" else {}
    cfg = Config.from_flat(dict(dataset=name, image_size=0, **kw))
    assert cfg.num_classes == (7 if name == "image-list" else f.num_classes)
    assert cfg.streamed == f.streamed
  with pytest.raises(ValueError, match="noise='asym' has no mapping for dataset='places-lt'"):
    Config.from_flat(dict(dataset="places-lt", noise="asym"))


def test_claim_run_dir_records_and_guards_the_folder(tmp_path):
  cfg = make_config("digits-lt", out_dir=str(tmp_path / "run"))
  assert C.claim_run_dir(cfg, last_epoch=None) is None
  record = json.loads((tmp_path / "run" / "config.json").read_text())
  assert record["fingerprint"] == fingerprint(cfg) and record["config"]["method"] == "absgd"
  assert fingerprint(C.claim_run_dir(cfg, last_epoch=4)) == fingerprint(cfg)
  other = cfg.replace(method="sgd")
  with pytest.raises(RunMismatchError, match="method: 'absgd' in the saved run, 'sgd' now"):
    C.claim_run_dir(other, last_epoch=4)
  saved = lambda: json.loads((tmp_path / "run" / "config.json").read_text())["config"]
  assert saved()["method"] == "absgd"
  C.claim_run_dir(other, last_epoch=4, new_run=True)  # Asked for: the folder is the new run's.
  assert saved()["method"] == "sgd"


def test_without_a_preset_nothing_is_scaled():
  # The bare defaults are no protocol: a run extended from 1 to 2 epochs keeps its settings
  # (and so its fingerprint), as a resume needs.
  a = make_config(dataset="digits", epochs=1)
  b = make_config(dataset="digits", epochs=2)
  assert a.loss.drw_epoch == b.loss.drw_epoch == Config.declared("drw_epoch").default
  assert fingerprint(a) == fingerprint(b)


# Fingerprints of configs as named by earlier versions (computed by the code before the
# config was split into config / presets / run_folder): run folders named by them must keep
# their names, so that those runs resume.
_EARLIER_FINGERPRINTS = {
  ("digits-lt", ()): "18da1761226b1613",
  ("digits-st", ()): "e9058e88703111ee",
  ("digits-noise", ()): "94eff5df0d64a54b",
  ("cifar10-lt", ()): "ffa946f936dd869f",
  ("cifar10-st", ()): "6b5312f34ee0b675",
  ("cifar100-lt", ()): "8173b7b733a4d15a",
  ("cifar100-st", ()): "b71fef3af0e9b358",
  ("cifar10-noise", ()): "0e25ad524c8c15e7",
  ("cifar100-noise", ()): "a17616eda90d5e3b",
  ("imagenet-lt-stage1", ()): "bee17080ff04c3a1",
  ("imagenet-lt-stage2", ()): "7a2b6a17d694d3e3",
  ("places-lt-stage1", ()): "febbe6b408610bb8",
  ("places-lt-stage2", ()): "13d519946105425c",
  ("inat2018-stage1", ()): "796c0a950ee16231",
  ("inat2018-stage2", ()): "b895bd6631da9ca8",
  ("clothing1m", ()): "853a76235a955b37",
  ("digits-lt", (("lam", 2.0), ("lr", 0.05))): "989254782e54cbac",
  ("digits-lt", (("method", "sgd"),)): "06efc9bbfbb40837",
  ("digits-lt", (("kl_budget", 0.01),)): "7a95c557c8780bd9",
  ("cifar10-lt", (("epochs", 20),)): "d2f687b2fd1fa290",
  ("cifar10-noise", (("lam", float("inf")), ("method", "sgd"))): "bb6eb8be276d2721",
  ("digits-lt", (("test_per_class", 20), ("seed", 3))): "162189e6641b1d3a",
  (
    "digits-noise",
    (("lr_schedule", "cosine"), ("lr_decay_epochs", ()), ("epochs", 10)),
  ): "79f8c82943709c57",
  (None, (("dataset", "digits"), ("epochs", 2))): "b9b0b208a9a49c12",
}


@pytest.mark.parametrize("preset, kw", list(_EARLIER_FINGERPRINTS))
def test_fingerprints_keep_the_names_of_existing_run_folders(preset, kw):
  cfg = make_config(preset, **dict(kw))
  want = _EARLIER_FINGERPRINTS[preset, kw]
  assert fingerprint(cfg) == want
  assert resolve_out_dir(cfg).run.out_dir.endswith("-" + want[:8])
  assert cfg.run.out_dir == ""  # building a config names no folder: the run does


def test_every_preset_has_a_pinned_fingerprint():
  assert {p for p, kw in _EARLIER_FINGERPRINTS if not kw} == set(PRESETS)


def test_fields_carry_their_choices_and_ranges():
  # Every field with a fixed set of values or a range says so in its metadata, and the
  # check on construction reads it from there.
  fields = {k: Config.declared(k).metadata for k in Config.settings()}
  assert fields["method"]["choices"] == ("sgd", "absgd", "adam", "abadam", "eg", "l2rw")
  assert fields["momentum"]["range"] == "[0, 1)" and fields["lr"]["range"] == "> 0"
  assert set(fields["momentum_form"]["choices"]) == {"paper", "pytorch"}
  with pytest.raises(ValueError, match=r"momentum_form='torch' is not one of"):
    Config.from_flat({"momentum_form": "torch"})
  assert Config.from_flat({"gamma": 1.0}).weighting.gamma == 1.0  # "(0, 1]" includes 1 ...
  with pytest.raises(ValueError, match=r"gamma=0.0 is outside .* \(0, 1\]"):
    Config.from_flat({"gamma": 0.0})  # ... and excludes 0
  assert Config.from_flat({"val_fraction": 0.0}).data.val_fraction == 0.0  # "[0, 1)" includes 0
