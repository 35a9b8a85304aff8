"""Head-to-head: our Trainer and the PyTorch reference train one protocol on the same data.

Each side runs as its users would run it: ours is ``absgd_jax.train.Trainer`` with
``method="sgd"`` (torch's momentum form), the reference is :mod:`torch_reference` (LDAM-DRW's
recipe). Both read the shared JPEG copy through the kit's loader. The default protocol is the
CPU-sized one of docs/results/parity.md: CIFAR-10-LT (rho = 100), 16 px (area-averaged), crop
padding 2, ResNet-8, 60 epochs at batch 128, lr 0.1, weight decay 2e-4, a 2-epoch warm-up
(the paper's 5 of 200, scaled and rounded up), lr x0.01 at epochs 48 and 54 (160 and 180 of
200, scaled).

Sides (``--sides``), for bisecting a gap one difference at a time:

* ``torch``: the reference; LDAM-DRW's subset (``subset_seed`` 0 for every seed).
* ``ours``: the Trainer as configured by a user; its subset is drawn with the run's seed.
* ``ours_ldam_subset``: the Trainer on the reference's subset (the data held equal).
* ``torch_kit_norm``: the reference with our normalisation std.
* ``torch_step_warmup``, ``torch_zero_bias``: the reference with our per-step warm-up, or
  with our zero-initialised classifier bias.
* ``torch_jpeg2``: the reference on the copy coded once more (:mod:`jpeg_pass`), train and
  test, at 32 px before the downsampling: what one more JPEG pass costs.

Every run is resumable (per-epoch checkpoints under ``--work``), a finished run appends one
JSON line to ``--out``, and a run already there is skipped; ``--report`` prints the table from
that file alone. Two processes may share one ``--out`` if they are given different runs
(``--sides`` / ``--seeds``).

    python -m experiments.parity.head_to_head --sides torch ours --seeds 0 1 2
    python -m experiments.parity.head_to_head --report
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import time

# One core per run: two runs share the 2-core machine. Set before jax is imported.
os.environ.setdefault(
  "XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
)

import numpy as np  # noqa: E402

from experiments.parity import torch_reference as ref  # noqa: E402

SIDES = (
  "torch",
  "ours",
  "ours_ldam_subset",
  "torch_kit_norm",
  "torch_step_warmup",
  "torch_zero_bias",
  "torch_jpeg2",
)
OUT = os.path.join(
  os.path.dirname(os.path.abspath(__file__)), "..", "results", "parity_head_to_head.jsonl"
)


@dataclasses.dataclass(frozen=True)
class Protocol:
  depth: int = 8
  image_size: int = 16
  crop_padding: int = 2
  rho: float = 100.0
  epochs: int = 60
  batch_size: int = 128
  lr: float = 0.1
  weight_decay: float = 2e-4
  warmup_epochs: int = 2
  decay_epochs: tuple[int, ...] = (48, 54)
  decay_factor: float = 0.01
  eval_every: int = 4
  data_dir: str = ref.DATA_DIR

  def key(self) -> dict:
    return {
      k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(self).items() if k != "data_dir"
    }


def load_data(p: Protocol, recode: bool = False):
  """(train, test) at the protocol's size; ``recode`` adds one shifted JPEG pass at 32 px
  (before downsampling) to both, cached under runs/parity/."""
  if not recode:
    return ref.load_cifar10(p.data_dir, p.image_size)
  from experiments.parity import jpeg_pass
  from absgd_jax.data import downsample

  train, test = ref.load_cifar10(p.data_dir)
  cache = os.path.join("runs", "parity", "jpeg2_{}.npy")
  train = jpeg_pass.recoded(train, cache.format("train"))
  test = jpeg_pass.recoded(test, cache.format("test"))
  if p.image_size:
    train, test = downsample(train, p.image_size), downsample(test, p.image_size)
  return train, test


def run_torch(
  p: Protocol, seed: int, work: str, norm: str = "ldam", recode: bool = False, **switches
) -> dict:
  import torch  # noqa: F401  (the reference's framework; imported here, not for jax runs)

  cfg = ref.RefConfig(
    depth=p.depth,
    image_size=p.image_size,
    rho=p.rho,
    epochs=p.epochs,
    batch_size=p.batch_size,
    lr=p.lr,
    weight_decay=p.weight_decay,
    warmup_epochs=p.warmup_epochs,
    decay_epochs=p.decay_epochs,
    decay_factor=p.decay_factor,
    crop_padding=p.crop_padding,
    norm=norm,
    seed=seed,
    eval_every=p.eval_every,
    threads=1,
    **switches,
  )
  data = load_data(p, recode)
  out = ref.train(
    cfg, data, checkpoint=os.path.join(work, "torch.pt"), log=lambda line: print(line, flush=True)
  )
  return {
    "test_acc": out["test_acc"],
    "best_test_acc": out["best_test_acc"],
    "train_size": out["train_size"],
    "train_loss": out["history"][-1]["train_loss"],
    "test_class_acc": out["history"][-1].get("test_class_acc"),
    "history": [{k: h.get(k) for k in ("epoch", "train_loss", "test_acc")} for h in out["history"]],
  }


def our_config(p: Protocol, seed: int, work: str):
  from absgd_jax.train import make_config

  return make_config(
    dataset="cifar10",
    data_dir=p.data_dir,
    imbalance="exp",
    rho=p.rho,
    model=f"resnet{p.depth}",
    image_size=p.image_size,
    crop_padding=p.crop_padding,
    epochs=p.epochs,
    batch_size=p.batch_size,
    lr=p.lr,
    weight_decay=p.weight_decay,
    warmup_epochs=p.warmup_epochs,
    lr_decay_epochs=p.decay_epochs,
    lr_decay_factor=p.decay_factor,
    method="sgd",
    momentum_form="pytorch",
    seed=seed,
    eval_every=p.eval_every,
    checkpoint=True,
    out_dir=work,
  )


def ldam_subset_data(config):
  """Our ExperimentData with the reference's LT subset (LDAM-DRW's draw) as training set."""
  from absgd_jax.train import experiment_data

  full = experiment_data.build(config.replace(imbalance="none"))
  cfg = ref.RefConfig(rho=config.data.rho)
  train = full.train.subset(ref.lt_subset(full.train, cfg))
  return experiment_data.ExperimentData(
    train=train,
    clean_labels=train.labels.copy(),
    flipped=np.zeros(len(train), bool),
    val=None,
    meta=None,
    test=full.test,
    train_class_counts=np.bincount(train.labels, minlength=config.num_classes),
  )


def run_ours(p: Protocol, seed: int, work: str, ldam_subset: bool = False) -> dict:
  from absgd_jax.train import Trainer

  config = our_config(p, seed, work)
  exp = ldam_subset_data(config) if ldam_subset else None
  trainer = Trainer(config, exp=exp, progress=False, log=True)
  [summary] = trainer.fit()
  tested = [h["test_acc"] for h in trainer.history if h.get("test_acc") is not None]
  final = summary["final"]
  return {
    "test_acc": final.get("test_acc"),
    "best_test_acc": max(tested),
    "train_size": summary["train_size"],
    "train_loss": final.get("train_loss"),
    "test_class_acc": final.get("test_class_acc"),
    "history": [
      {k: h.get(k) for k in ("epoch", "train_loss", "test_acc")} for h in trainer.history
    ],
  }


def done(out: str) -> list[dict]:
  if not os.path.exists(out):
    return []
  with open(out) as f:
    return [json.loads(line) for line in f if line.strip()]


def run(p: Protocol, sides, seeds, out: str, work_root: str) -> None:
  for seed in seeds:
    for side in sides:
      if any(
        r["side"] == side and r["seed"] == seed and r["protocol"] == p.key() for r in done(out)
      ):
        continue
      work = os.path.join(work_root, f"{side}_seed{seed}")
      os.makedirs(work, exist_ok=True)
      t0 = time.time()
      print(f"== {side} seed {seed}", flush=True)
      if side.startswith("torch"):
        rec = run_torch(
          p,
          seed,
          work,
          norm="kit" if side == "torch_kit_norm" else "ldam",
          recode=side == "torch_jpeg2",
          warmup_per_step=side == "torch_step_warmup",
          zero_head_bias=side == "torch_zero_bias",
        )
      else:
        rec = run_ours(p, seed, work, ldam_subset=side == "ours_ldam_subset")
      rec = {"side": side, "seed": seed, "protocol": p.key(), "wall_s": time.time() - t0, **rec}
      os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
      with open(out, "a") as f:  # One short append per finished run.
        f.write(json.dumps(rec) + "\n")
      print(
        f"== {side} seed {seed}: test {100 * rec['test_acc']:.2f} "
        f"(best {100 * rec['best_test_acc']:.2f}), {rec['wall_s']:.0f} s",
        flush=True,
      )


def _cell(values) -> str:
  values = [100 * v for v in values]
  if not values:
    return "-"
  if len(values) == 1:
    return f"{values[0]:.2f} (n=1)"
  return f"{statistics.mean(values):.2f} +- {statistics.stdev(values):.2f} (n={len(values)})"


def report(out: str, p: Protocol | None = None) -> str:
  recs = [r for r in done(out) if p is None or r["protocol"] == p.key()]
  lines = [
    "| side | seeds | final test acc. | best-epoch test acc. | final train loss | "
    "per seed (final) |",
    "| --- | --- | --- | --- | --- | --- |",
  ]
  for side in SIDES:
    mine = sorted((r for r in recs if r["side"] == side), key=lambda r: r["seed"])
    if not mine:
      continue
    losses = ", ".join(f"{r['train_loss']:.3f}" for r in mine)
    per_seed = ", ".join(f"{100 * r['test_acc']:.2f}" for r in mine)
    lines.append(
      f"| {side} | {','.join(str(r['seed']) for r in mine)} | "
      f"{_cell([r['test_acc'] for r in mine])} | "
      f"{_cell([r['best_test_acc'] for r in mine])} | {losses} | {per_seed} |"
    )
  text = "\n".join(lines)
  print(text)
  return text


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--sides", nargs="+", default=["torch", "ours"], choices=SIDES)
  ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
  ap.add_argument("--out", default=OUT)
  ap.add_argument("--work", default="runs/parity", help="checkpoints (not committed)")
  ap.add_argument("--report", action="store_true")
  fields = {f.name: f for f in dataclasses.fields(Protocol)}
  for name, f in fields.items():
    if name == "decay_epochs":
      ap.add_argument("--decay", dest=name, type=int, nargs="*", default=list(f.default))
    else:
      ap.add_argument(
        "--" + name.replace("_", "-"), dest=name, type=type(f.default), default=f.default
      )
  a = vars(ap.parse_args(argv))
  args = {k: a.pop(k) for k in ("sides", "seeds", "out", "work", "report")}
  a["decay_epochs"] = tuple(a["decay_epochs"])
  p = Protocol(**a)
  if not args["report"]:
    run(p, args["sides"], args["seeds"], args["out"], args["work"])
  report(args["out"], p)


if __name__ == "__main__":
  main()
