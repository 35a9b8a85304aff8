"""Where an epoch of the training loop goes: training, evaluation, and the records and checkpoints.

On a fast accelerator a CIFAR epoch trains in under a second, and the loop's fixed costs per
epoch (evaluating the test set, writing metrics.jsonl, an orbax checkpoint per member) can
outweigh it. This times each part of the kit's own ``Trainer.fit`` on real data, for one run
and for an M-member sweep (``Sweep`` over seeds, one program), with checkpoints on and off:

    python benchmarks/epoch_overhead.py --data-dir DIR --members 6 --json out.json   # a GPU
    python benchmarks/epoch_overhead.py --data-dir DIR --tiny --json /tmp/e.json      # CPU smoke

Each variant trains ``--epochs`` epochs of the ``--config`` preset (evaluating every epoch, as
the paper tables' runs do) in a fresh folder. The first epoch compiles and is left out; the
medians of the others are reported, in seconds per epoch, and per run-epoch for the sweep.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import statistics
import tempfile
import time

import jax

from absgd_jax.train import Sweep, Trainer, make_config

PARTS = ("train_epoch", "evaluate", "_record")


def _timed(obj, name: str, log: list):
  """Wraps ``obj.name`` so that each call appends (name, seconds) to ``log``."""
  fn = getattr(obj, name)

  @functools.wraps(fn)
  def wrapper(*a, **k):
    t = time.perf_counter()
    try:
      return fn(*a, **k)
    finally:
      log.append((name, time.perf_counter() - t))

  setattr(obj, name, wrapper)


def run_variant(args, members: int, checkpoint: bool) -> dict:
  over = dict(epochs=args.epochs, eval_every=1, checkpoint=checkpoint, data_dir=args.data_dir)
  if args.tiny:
    over.update(model="resnet8", image_size=8, n_max=200, test_per_class=10, batch_size=32)
  with tempfile.TemporaryDirectory() as out:
    cfg = make_config(args.config, out_dir=out, **over)
    if members == 1:
      loop = Trainer(cfg, progress=False, console=False)
    else:  # A Sweep is the Trainer over a member axis: the same methods are timed.
      loop = Sweep(cfg, {"seed": list(range(members))}, progress=False, console=False)
    log: list = []
    for name in PARTS:
      _timed(loop, name, log)
    t0 = time.perf_counter()
    loop.fit()
    wall = time.perf_counter() - t0
  # Per epoch: one train_epoch, one or two evaluate calls, one _record per member.
  per_epoch, epoch = [], None
  for name, s in log:
    if name == "train_epoch":
      epoch = {p: 0.0 for p in PARTS}
      per_epoch.append(epoch)
    epoch[name] += s
  steady = per_epoch[1:] or per_epoch
  med = {p: statistics.median(e[p] for e in steady) for p in PARTS}
  total = sum(med.values())
  return dict(
    members=members,
    checkpoint=checkpoint,
    wall_s=wall,
    epochs=len(per_epoch),
    median_s={"train": med["train_epoch"], "eval": med["evaluate"], "records": med["_record"]},
    epoch_s=total,
    per_run_epoch_s=total / members,
    train_share=med["train_epoch"] / total,
  )


def main():
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--config", default="cifar10-lt")
  ap.add_argument("--data-dir", required=True)
  ap.add_argument("--members", type=int, default=6)
  ap.add_argument("--epochs", type=int, default=5)
  ap.add_argument("--tiny", action="store_true", help="ResNet-8 at 8 px: a CPU smoke run")
  ap.add_argument("--json", default="")
  args = ap.parse_args()
  rows = []
  for members in (1, args.members):
    for checkpoint in (False, True):
      r = run_variant(args, members, checkpoint)
      rows.append(r)
      m = r["median_s"]
      print(
        f"members={members} checkpoint={checkpoint}: {r['epoch_s']:.3f} s an epoch "
        f"(train {m['train']:.3f}, eval {m['eval']:.3f}, records {m['records']:.3f}), "
        f"{r['per_run_epoch_s']:.3f} s a run-epoch, training {100 * r['train_share']:.0f}%",
        flush=True,
      )
  out = dict(
    rows=rows,
    config=vars(args),
    device=str(jax.devices()[0].device_kind),
    env=dict(jax=jax.__version__, python=platform.python_version(), cpus=os.cpu_count()),
  )
  if args.json:
    with open(args.json, "w") as f:
      json.dump(out, f, indent=1)


if __name__ == "__main__":
  main()
