"""What the learning rate's place in the momentum does at a sharp decay: Eq. (2) vs torch's SGD.

    python -m experiments.momentum_form [--json out.json]

Two runs of momentum SGD that differ only in ``momentum_form`` (see ``absgd_jax.absgd``):
CIFAR-10-LT (rho = 100) at 16 px with ResNet-8, 28 epochs, lr 0.1 divided by 100 at epoch 20
and again at 25. It prints the mean training loss per epoch around the first decay and the
final test accuracy. About 5 minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json

from experiments.common import DATA_DIR


def run(form: str, data_dir: str) -> dict:
  from absgd_jax.train import Trainer, make_config

  cfg = make_config(
    "cifar10-lt",
    image_size=16,
    crop_padding=2,
    model="resnet8",
    epochs=28,
    warmup_epochs=1,
    lr_decay_epochs=(20, 25),
    method="sgd",
    eval_every=4,
    checkpoint=False,
    momentum_form=form,
    data_dir=data_dir,
    out_dir=f"/tmp/absgd-momentum-form-{form}",
  )
  trainer = Trainer(cfg, progress=False, log=False)
  [summary] = trainer.fit()
  return {
    "train_loss": [r["train_loss"] for r in trainer.history],
    "test_acc": summary["final"]["test_acc"],
  }


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--data-dir", default=DATA_DIR)
  ap.add_argument("--json")
  args = ap.parse_args(argv)
  out = {form: run(form, args.data_dir) for form in ("paper", "pytorch")}
  print("epoch  " + "  ".join(f"{form:>8}" for form in out))
  for e in range(17, 25):
    print(f"{e:5d}  " + "  ".join(f"{out[f]['train_loss'][e]:8.4f}" for f in out))
  print("final test accuracy: " + ", ".join(f"{f} {out[f]['test_acc']:.4f}" for f in out))
  if args.json:
    with open(args.json, "w") as f:
      json.dump(out, f, indent=1)


if __name__ == "__main__":
  main()
