"""``absgd-train --compare``: the runs under some folders, the settings that differ between
them and their final metrics, checked against the runs' own files."""

import json

import jax
import pytest

from absgd_jax.train import Sweep, Trainer, cli, compare, make_config

ONE = jax.devices()[:1]


def _cfg(out, **kw):
  base = dict(epochs=1, checkpoint=False, out_dir=str(out), batch_size=64, lr_decay_epochs=())
  base.update(kw)
  return make_config("digits-lt", **base)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """A finished two-member sweep (lam 2 and 5) and a run stopped in its second epoch (seed 1,
  a validation split): three runs under one folder, the sweep's own folder not among them."""
  root = tmp_path_factory.mktemp("compare") / "runs"
  Sweep(_cfg(root / "sweep"), {"lam": [2, 5]}, progress=False, devices=ONE).fit()
  cut = Trainer(
    _cfg(root / "digits-lt" / "absgd-lam5-0123abcd", epochs=2, seed=1, val_fraction=0.2),
    progress=False,
    devices=ONE,
  )
  train_epoch = cut.train_epoch

  def stop_in_epoch_1(epoch):
    if epoch == 1:
      raise KeyboardInterrupt
    return train_epoch(epoch)

  cut.train_epoch = stop_in_epoch_1
  with pytest.raises(KeyboardInterrupt):
    cut.fit()
  return root


def _table(text):
  """The table's rows as {column: cell} (no cell holds a space here)."""
  lines = text.splitlines()
  head = lines[1].split()
  rows = [dict(zip(head, line.split(), strict=True)) for line in lines[2:]]
  return lines[0], head, rows


def test_compare_shows_the_settings_that_differ_and_each_runs_final_metrics(runs):
  folders = [
    runs / "digits-lt" / "absgd-lam5-0123abcd",
    runs / "sweep" / "lam=2",
    runs / "sweep" / "lam=5",
  ]
  saved = [json.loads((f / "config.json").read_text())["config"] for f in folders]
  differ = {k for k in saved[0] if k != "out_dir" and len({json.dumps(c[k]) for c in saved}) > 1}
  assert differ == {"seed", "val_fraction", "lam", "epochs"}

  first, head, rows = _table(compare.compare([str(runs)]))
  assert first == "3 runs; settings that differ: seed, val_fraction, lam, epochs"
  metrics = ["test_acc", "test_balanced_acc", "val_balanced_acc"]  # one run has a val split
  assert head == ["run", "seed", "val_fraction", "lam", "epochs", *metrics, "epoch", "state"]
  assert [r["run"] for r in rows] == [str(f) for f in folders]
  for row, folder, config in zip(rows, folders, saved):
    assert [row[k] for k in ("seed", "val_fraction", "lam", "epochs")] == [
      f"{config[k]:g}" for k in ("seed", "val_fraction", "lam", "epochs")
    ]
    if (folder / "summary.json").exists():
      final, state = json.loads((folder / "summary.json").read_text())["final"], "finished"
    else:  # stopped: its last epoch is the last line of its metrics.jsonl
      final = json.loads((folder / "metrics.jsonl").read_text().splitlines()[-1])
      state = "unfinished"
    assert row["state"] == state
    assert row["epoch"] == f"{final['epoch'] + 1}/{config['epochs']}"
    for m in metrics:
      assert row[m] == (f"{final[m]:.4f}" if m in final else "-"), (folder, m)
  assert [r["state"] for r in rows] == ["unfinished", "finished", "finished"]
  assert rows[0]["epoch"] == "1/2" and rows[1]["val_balanced_acc"] == "-"


def test_one_folder_of_runs_alone_has_no_settings_to_tell_apart(runs):
  first, head, rows = _table(compare.compare([str(runs / "sweep" / "lam=2")]))
  assert first == "1 run"
  assert head == ["run", "test_acc", "test_balanced_acc", "epoch", "state"]
  assert [r["run"] for r in rows] == [str(runs / "sweep" / "lam=2")]


def test_the_command_line_prints_the_table_and_needs_no_config(runs, capsys, tmp_path):
  assert cli.main(["--compare", str(runs / "sweep"), str(runs / "digits-lt")]) == 0
  out = capsys.readouterr().out
  assert out.strip() == compare.compare([str(runs / "sweep"), str(runs / "digits-lt")])
  assert out.count("\n") == 5  # a line saying what differs, the head, three runs

  (tmp_path / "empty" / "notes").mkdir(parents=True)
  assert cli.main(["--compare", str(tmp_path / "empty")]) == 2
  err = capsys.readouterr().err.strip()
  assert err.startswith("error: --compare: no run found under ") and "\n" not in err
  assert cli.main(["--compare", str(tmp_path / "nowhere")]) == 2
  assert "no such folder" in capsys.readouterr().err
