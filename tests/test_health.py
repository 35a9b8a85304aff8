"""Health that sees a blow-up: ABSGD with lam = 1 from the first step on digits-lt blows up
and is flagged, in the output, in summary.json and in a sweep's status; healthy runs are not."""

import json
import os

import jax
import pytest

from absgd_jax.train import DivergenceError, Sweep, Trainer, cli, health, make_config
from absgd_jax.train.demo import EQUAL_LR_ROW, row_config

ONE = jax.devices()[:1]
RESULTS = os.path.join(os.path.dirname(__file__), "..", "experiments", "results")


def _records(name):
  with open(os.path.join(RESULTS, name)) as f:
    return [json.loads(line) for line in f if line.strip()]


def test_the_lam_1_blow_up_is_flagged_once_per_episode_with_its_cause(tmp_path, recwarn):
  out = tmp_path / "run"
  argv = ["--config", "digits-lt", "--set", "lam=1", "--no-plots", "--no-progress"]
  assert cli.main([*argv, "--out", str(out)]) == 0
  warned = ["warning: " + str(w.message) for w in recwarn if "blew up" in str(w.message)]
  summary = json.loads((out / "summary.json").read_text())
  events = summary["blow_ups"]
  # Test balanced accuracy 0.67 -> 0.10 in epoch 4, the training loss 0.19 -> 3.6 in epoch 5: one
  # episode, reported where it began; the run recovers and blows up again later.
  assert events[0]["epoch"] == 4 and events[0]["step"] == 4 * 6
  assert "test balanced accuracy fell to 0.102 from 0.674" in events[0]["what"]
  assert len(warned) == len(events) >= 1
  assert warned[0].startswith("warning: epoch 4 blew up from step 24: test balanced accuracy")
  assert "a later stage2_epoch (now 0) or a larger lam" in warned[0]
  metrics = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
  assert [r["epoch"] for r in metrics if r.get("blow_up")] == [e["epoch"] for e in events]
  assert metrics[5]["blown_up"] and "blow_up" not in metrics[5]  # the same episode goes on


def test_a_spike_names_the_step_where_the_loss_left_its_level():
  calm = [{"train_loss": 2.0}] + [{"train_loss": 0.5}] * 4
  event = health.blow_up({"epoch": 5, "train_loss": 2.5}, calm, [0.4, 0.6, 3.0, 6.0], 50)
  assert event["step"] == 52 and event["what"][0].startswith("the training loss rose to 2.5")
  assert health.blow_up({"epoch": 5, "train_loss": 1.9}, calm, [0.4, 3.0], 50) is None
  # 34 times a loss near 0 is a rise of a small part of the loss's scale: no blow-up.
  fitted = [{"train_loss": 1.0}] + [{"train_loss": 0.005}] * 4
  assert health.blow_up({"epoch": 5, "train_loss": 0.17}, fitted) is None


def test_a_class_learnt_then_lost_for_two_evaluations_is_flagged():
  history = [{"test_class_acc": [0.9, 0.6, 0.1]}, {"test_class_acc": [0.9, 0.0, 0.0]}]
  event = health.blow_up({"test_class_acc": [0.9, 0.0, 0.0]}, history, class_names="abc")
  # Class 1 had reached 0.6 and is at 0 for the second evaluation running; class 2 never got
  # past 0.1, so its 0 is no loss.
  assert event["what"] == [
    "test accuracy of class 1 (b) has been 0 for 2 evaluations after it was learnt"
  ]
  # One evaluation at 0 is not a loss: a CIFAR-10-LT tail class of about 20 validation
  # images went from 0.52 to 0 and back to 0.39 under plain SGD.
  bounce = [{"val_class_acc": [0.9, 0.3]}, {"val_class_acc": [0.9, 0.52]}]
  assert health.blow_up({"val_class_acc": [0.98, 0.0]}, bounce) is None
  assert (
    health.blow_up({"val_class_acc": [0.9, 0.04]}, [*bounce, {"val_class_acc": [0.98, 0.0]}])
    is None
  )


def test_accuracy_collapse_is_judged_on_balanced_accuracy_where_a_split_has_it():
  # Class-balanced weights on CIFAR-10-ST (validation split of 500 images a head class, 5 a
  # tail class) took the plain accuracy from 0.79 to 0.35 while the balanced rose 0.40 to
  # 0.57: the weights doing their job, not a blow-up.
  before = [{"val_acc": 0.79, "val_balanced_acc": 0.40}]
  assert health.blow_up({"val_acc": 0.35, "val_balanced_acc": 0.57}, before) is None
  event = health.blow_up({"val_acc": 0.75, "val_balanced_acc": 0.15}, before)
  assert event["what"] == ["validation balanced accuracy fell to 0.15 from 0.4"]
  # Without a balanced accuracy the plain one is judged.
  assert health.blow_up({"val_acc": 0.35}, [{"val_acc": 0.79}])["what"] == [
    "validation accuracy fell to 0.35 from 0.79"
  ]


def test_an_episode_goes_on_through_epochs_without_an_evaluation(tmp_path):
  # eval_every=2: the collapsed accuracy is seen only every other epoch, and the epochs
  # between cannot say it came back, so the episode is reported once.
  cfg = make_config(
    "digits-lt", lam=1.0, eval_every=2, checkpoint=False, out_dir=str(tmp_path / "r")
  )
  with pytest.warns(RuntimeWarning, match="blew up"):
    [summary] = Trainer(cfg, progress=False, devices=ONE).fit()
  history = json.loads((tmp_path / "r" / "summary.json").read_text())["blow_ups"]
  assert history == summary["blow_ups"]
  metrics = [json.loads(ln) for ln in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
  carried = [r for p, r in zip(metrics, metrics[1:]) if "test_acc" not in r and p["blown_up"]]
  assert carried and all(r["blown_up"] and "blow_up" not in r for r in carried)
  # Once per episode: between two reports an evaluated epoch was clear.
  reported = [r["epoch"] for r in metrics if "blow_up" in r]
  assert reported == [e["epoch"] for e in history]
  for a, b in zip(reported, reported[1:]):
    assert any("test_acc" in r and not r["blown_up"] for r in metrics[a + 1 : b])


def test_on_blow_up_stop_stops_the_run(tmp_path):
  cfg = make_config(
    "digits-lt", lam=1.0, on_blow_up="stop", checkpoint=False, out_dir=str(tmp_path / "r")
  )
  with pytest.raises(DivergenceError, match=r"epoch 4 blew up .*on_blow_up=stop"):
    Trainer(cfg, progress=False, devices=ONE).fit()


def test_a_sweep_table_says_which_member_blew_up(tmp_path, capsys):
  cfg = make_config("digits-lt", checkpoint=False, out_dir=str(tmp_path / "sweep"))
  sweep = Sweep(cfg, {"lam": [1, 5]}, progress=False, console=True, devices=ONE)
  sweep.fit()
  status = {m["label"]: m["status"] for m in sweep.result["members"]}
  assert status["lam=1"].startswith("ok, blew up in epoch 4") and status["lam=5"] == "ok"
  assert "ok, blew up in epoch 4" in capsys.readouterr().out


@pytest.mark.parametrize(
  "name, overrides",
  [
    ("digits-lt", {}),
    ("digits-st", {}),
    ("digits-noise", {}),
    # SGD at lr 0.05 under 40% noise memorises: its test accuracy falls from its peak, which
    # is the demo's point, not a blow-up.
    ("demo", dict(row=EQUAL_LR_ROW, method="sgd")),
  ],
)
def test_healthy_runs_are_not_flagged(tmp_path, name, overrides):
  if name == "demo":
    cfg = row_config(overrides["row"], overrides["method"], 0, str(tmp_path / "r"))
  else:
    cfg = make_config(name, **overrides, checkpoint=False, out_dir=str(tmp_path / "r"))
  [summary] = Trainer(cfg.replace(checkpoint=False), progress=False, devices=ONE).fit()
  assert summary["blow_ups"] == []


def _flagged(history):
  return [i for i, r in enumerate(history) if health.blow_up(r, history[:i]) is not None]


def test_recorded_runs_are_flagged_where_they_fell_to_chance_and_nowhere_else():
  # The CIFAR noise table (per-epoch test accuracy; SGD's memorisation included) and the
  # digits KL-budget table's runs (per-epoch loss and test accuracy) trained normally; of the
  # budget's validation runs, the ones the results page names (CB-LDAM, which sat near
  # chance for epochs at some rho and seed) are the ones flagged.
  noise = [r["history"] for r in _records("noise_table.jsonl") if r.get("history")]
  digits = [r for r in _records("kl_budget_digits.jsonl") if r.get("history")]
  assert len(noise) > 40 and len(digits) > 80
  assert not any(_flagged(h) for h in noise)
  assert not any(_flagged(r["history"]) for r in digits if r["phase"] == "test")
  flagged = [r for r in digits if _flagged(r["history"])]
  assert flagged and all(r["loss"] == "CB-LDAM" and r["phase"] == "val" for r in flagged)
  for r in flagged:
    first = _flagged(r["history"])[0]
    assert r["history"][first]["test_acc"] < 0.3
