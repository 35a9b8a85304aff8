"""ABSGD with lam set by a KL budget (one rho for every setting and loss) against the
grid-tuned lam, side by side in one run, on the digits imbalance table.

    python -m experiments.kl_budget_digits val       # rho on the validation split (LT rho=50)
    python -m experiments.kl_budget_digits table     # the test table, 3 seeds (resumable)
    python -m experiments.kl_budget_digits report    # the markdown table from the JSONL

A KL row is the tuned row with ``kl_budget=rho`` (the Trainer then weighs with
``kl_absgd_weights(rho, gamma)``; the recorded table was run before that config field existed,
through a stand-in for the trainer's weigher factory that built the same weigher). Every
finished run is one line of
``experiments/results/kl_budget_digits.jsonl``; a re-run skips the lines already there.

The tuned rows reproduce experiments/digits_table.py's ABSGD rows: lr 0.1, lam from the start,
lam = 5 for CE and focal (chosen on LT rho=50's validation split for CE), lam = 100 for CB-LDAM
(its own grid {20, 50, 100}); the settings and epochs are that table's.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import jax
import numpy as np

from absgd_jax.train import Trainer, make_config

OUT = "experiments/results/kl_budget_digits.jsonl"
SETTINGS = {
  "LT rho=10": dict(preset="digits-lt", rho=10),
  "LT rho=50": dict(preset="digits-lt", rho=50),
  "ST rho=10": dict(preset="digits-st", rho=10),
  "ST rho=50": dict(preset="digits-st", rho=50),
}
# experiments/digits_table.py: IMBALANCE_METHODS' ABSGD rows, with CHOSEN and LDAM_CHOSEN.
LOSSES = {
  "CE": dict(),
  "Focal": dict(loss="focal"),
  "CB-LDAM": dict(loss="ldam", head="cosine", class_weighting="cb"),
}
TUNED_LAM = {"CE": 5.0, "Focal": 5.0, "CB-LDAM": 100.0}
COMMON = dict(
  method="absgd", lr=0.1, stage2_epoch=0, epochs=30, lr_decay_epochs=(22,), checkpoint=False
)
DEFAULT_RHO = 0.01  # chosen on LT rho=50 validation (CE and CB-LDAM), see report()


class _Recording(Trainer):
  """A Trainer that also records, per epoch, the lam and KL its weight state holds."""

  def train_epoch(self, epoch):
    [record] = super().train_epoch(epoch)
    ws = jax.device_get(self.member_state(0).w_state)
    if hasattr(ws, "log_abs_lam"):
      record["lam"] = float(np.exp(ws.log_abs_lam))
      record["kl"] = float(ws.kl)
    else:
      record["lam"] = float(ws.lam)
    return [record]


def _done(path):
  if not os.path.exists(path):
    return {}
  with open(path) as f:
    recs = [json.loads(line) for line in f if line.strip()]
  return {r["key"]: r for r in recs}


def run(key: str, fields: dict, config_kw: dict, rho: float | None, path: str = OUT):
  done = _done(path)
  if key in done:
    return done[key]
  kw = dict(config_kw)
  preset = kw.pop("preset")
  if rho is not None:
    kw["kl_budget"] = rho
  config = make_config(preset, **kw, out_dir=os.path.join("/tmp/kl_budget_runs", key))
  t0 = time.time()
  trainer = _Recording(config, progress=False, log=False)
  [summary] = trainer.fit()
  final = summary["final"]
  rec = dict(
    key=key,
    **fields,
    rho_budget=rho,
    wall_s=time.time() - t0,
    config=summary["config"],
    **{
      k: final.get(k) for k in ("test_acc", "test_balanced_acc", "val_balanced_acc", "train_loss")
    },
    history=[
      {
        k: r.get(k)
        for k in ("epoch", "test_acc", "lam", "kl", "ess_mean", "max_weight", "train_loss")
      }
      for r in trainer.history
    ],
  )
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "a") as f:  # One line per finished run: an interrupted run leaves nothing.
    f.write(json.dumps(rec) + "\n")
  print(
    f"{key}: test {rec['test_acc']:.4f} val_bal {rec['val_balanced_acc']} "
    f"lam_end {rec['history'][-1]['lam']:.4g} ({rec['wall_s']:.1f}s)",
    flush=True,
  )
  return rec


def val(seeds, rhos, path=OUT):
  """rho on LT rho=50's validation split (a fifth of each class held out), CE and CB-LDAM."""
  for loss in ("CE", "CB-LDAM"):
    for seed in seeds:
      for rho in rhos:
        kw = dict(
          SETTINGS["LT rho=50"],
          **COMMON,
          **LOSSES[loss],
          lam=TUNED_LAM[loss],
          seed=seed,
          val_fraction=0.2,
        )
        run(
          f"val|LT rho=50|{loss}|kl{rho}|seed{seed}",
          dict(phase="val", setting="LT rho=50", loss=loss, method=f"KL rho={rho}", seed=seed),
          kw,
          rho,
          path,
        )


def table(seeds, rho, path=OUT):
  for setting, spec in SETTINGS.items():
    for loss in LOSSES:
      for seed in seeds:
        kw = dict(spec, **COMMON, **LOSSES[loss], lam=TUNED_LAM[loss], seed=seed)
        fields = dict(phase="test", setting=setting, loss=loss, seed=seed)
        run(
          f"test|{setting}|{loss}|tuned|seed{seed}",
          dict(fields, method=f"tuned lam={TUNED_LAM[loss]:g}"),
          kw,
          None,
          path,
        )
        run(
          f"test|{setting}|{loss}|kl{rho}|seed{seed}",
          dict(fields, method=f"KL rho={rho}"),
          kw,
          rho,
          path,
        )


def _cell(v):
  if not v:
    return "-"
  if len(v) == 1:
    return f"{v[0]:.2f} (n=1)"
  return f"{statistics.mean(v):.2f} +- {statistics.stdev(v):.2f}"


def report(path=OUT):
  recs = list(_done(path).values())
  lines = []
  val_recs = [r for r in recs if r["phase"] == "val"]
  if val_recs:
    lines += [
      "Validation balanced accuracy (%), LT rho=50, mean +- std over seeds:",
      "",
      "| rho | " + " | ".join(sorted({r["loss"] for r in val_recs})) + " |",
      "| --- |" + " --- |" * len({r["loss"] for r in val_recs}),
    ]
    for m in sorted({r["method"] for r in val_recs}, key=lambda m: float(m.split("=")[1])):
      cells = [
        _cell(
          [100 * r["val_balanced_acc"] for r in val_recs if r["method"] == m and r["loss"] == loss]
        )
        for loss in sorted({r["loss"] for r in val_recs})
      ]
      lines.append(f"| {m} | " + " | ".join(cells) + " |")
    lines.append("")
  test = [r for r in recs if r["phase"] == "test"]
  if test:
    lines += [
      "| loss | method | " + " | ".join(SETTINGS) + " |",
      "| --- | --- |" + " --- |" * len(SETTINGS),
    ]
    for loss in LOSSES:
      methods = sorted({r["method"] for r in test if r["loss"] == loss}, reverse=True)
      for m in methods:
        cells = [
          _cell(
            [
              100 * r["test_acc"]
              for r in test
              if r["loss"] == loss and r["method"] == m and r["setting"] == s
            ]
          )
          for s in SETTINGS
        ]
        lines.append(f"| {loss} | {m} | " + " | ".join(cells) + " |")
      diffs = []
      for s in SETTINGS:  # Paired by seed: KL minus tuned.
        by = {}
        for r in test:
          if r["loss"] == loss and r["setting"] == s:
            by.setdefault(r["seed"], {})["kl" if r["method"].startswith("KL") else "t"] = (
              100 * r["test_acc"]
            )
        d = [v["kl"] - v["t"] for v in by.values() if len(v) == 2]
        diffs.append(f"{statistics.mean(d):+.2f} ({min(d):+.1f}..{max(d):+.1f})" if d else "-")
      lines.append(f"| {loss} | KL - tuned, paired | " + " | ".join(diffs) + " |")
    lines += [
      "",
      "lam at the end of training (KL rows; mean over seeds) and mean ESS/B of the last epoch:",
      "",
      "| loss | method | " + " | ".join(SETTINGS) + " |",
      "| --- | --- |" + " --- |" * len(SETTINGS),
    ]
    for loss in LOSSES:
      for m in sorted({r["method"] for r in test if r["loss"] == loss}, reverse=True):
        cells = []
        for s in SETTINGS:
          rs = [r for r in test if r["loss"] == loss and r["method"] == m and r["setting"] == s]
          if not rs:
            cells.append("-")
            continue
          lam = statistics.mean(r["history"][-1]["lam"] for r in rs)
          ess = statistics.mean(r["history"][-1]["ess_mean"] / 64 for r in rs)
          cells.append(f"lam {lam:.3g}, ESS/B {ess:.2f}")
        lines.append(f"| {loss} | {m} | " + " | ".join(cells) + " |")
  text = "\n".join(lines)
  print(text)
  return text


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("what", choices=["val", "table", "report"])
  ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
  ap.add_argument("--rho", type=float, default=DEFAULT_RHO)
  ap.add_argument("--rhos", type=float, nargs="+", default=[0.03, 0.1, 0.3])
  ap.add_argument("--results", default=OUT, help=f"the record file (default {OUT})")
  args = ap.parse_args(argv)
  if args.what == "val":
    val(args.seeds, args.rhos, args.results)
  elif args.what == "table":
    table(args.seeds, args.rho, args.results)
  report(args.results)


if __name__ == "__main__":
  sys.exit(main())
