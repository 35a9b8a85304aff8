"""A PyTorch reference of the paper's CIFAR recipe, to hold absgd_jax's training kit against.

Written for this project from the descriptions of the LDAM-DRW code (Cao et al. 2019,
kaidic/LDAM-DRW), on which the ABSGD authors' CIFAR code (qiqi-helloworld/ABSGD) is built. What
it does, and where our kit differs on purpose (see docs/results/parity.md):

* **Model**: the CIFAR ResNet of He et al. (6n + 2 layers, 16/32/64 channels), shortcut A
  (subsample, zero-pad the new channels half on each side), every conv and the linear layer
  Kaiming-normal (fan-in), the linear bias left at torch's default U(+-1/sqrt(64)). Module names
  follow torchvision (``conv1``, ``bn1``, ``layer{k}.{i}.conv{j}``, ``fc``), so that
  :mod:`convert` reuses the torchvision converter's name map. Ours zero-initialises the bias.
* **Optimizer**: ``torch.optim.SGD(momentum=0.9, weight_decay=2e-4)`` on every parameter.
* **Schedule**: the learning rate is set once per epoch: ``lr * (e + 1) / warmup`` during the
  warm-up epochs, then divided by ``1 / decay_factor`` at each decay epoch (the paper: 5, then
  x0.01 at 160 and 180 of 200). Ours warms up per step.
* **Data**: the LT subset as LDAM-DRW builds it: ``np.random.seed(subset_seed)``, then for each
  class in label order its indices are shuffled with ``np.random.shuffle`` and the first
  ``n_c`` kept. LDAM-DRW's ``rand_number`` defaults to 0 for every run, so every seed trains on
  the same subset; ours draws a new subset per seed. Shuffled with ``torch.randperm`` each
  epoch, batches of 128, the last partial batch kept (ours pads it with masked repeats).
* **Augmentation**: random crop of the zero-padded image (offsets uniform in ``[0, 2p]``) and
  a horizontal flip with probability 1/2, then ``(x - mean) / std`` with LDAM-DRW's std
  (0.2023, 0.1994, 0.2010); ours uses the true per-pixel std (0.247, 0.243, 0.261).
* **Evaluation**: the whole test set, BatchNorm in eval mode, top-1.

Images come from the project's own loader (:func:`absgd_jax.data.load_image_folder` on the
shared JPEG copy, optionally area-downsampled like the kit's ``image_size``), so both
frameworks see the same pixels. One run::

    python -m experiments.parity.torch_reference --depth 8 --image-size 16 --epochs 60 \\
        --warmup 2 --decay 48 54 --seed 0
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from collections.abc import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# LDAM-DRW's (and the ABSGD code's) CIFAR normalisation: the mean is the training set's, the
# std is a widely copied value (0.2023...) smaller than the per-pixel one our kit uses.
LDAM_MEAN = (0.4914, 0.4822, 0.4465)
LDAM_STD = (0.2023, 0.1994, 0.2010)
# The shared CIFAR-10 JPEG copy beside the checkout (experiments/common.py's DATA_DIR; this
# folder's modules do not import experiments/).
DATA_DIR = os.path.normpath(
  os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "shared", "data", "cifar10-jpeg"
  )
)


# --- model ------------------------------------------------------------------------------------


class BasicBlock(nn.Module):
  """relu(bn2(conv2(relu(bn1(conv1 x)))) + shortcut(x)), shortcut A when the shape changes."""

  def __init__(self, cin: int, cout: int, stride: int):
    super().__init__()
    self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(cout)
    self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(cout)
    self.stride, self.extra = stride, cout - cin

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    out = F.relu(self.bn1(self.conv1(x)))
    out = self.bn2(self.conv2(out))
    short = x
    if self.stride != 1 or self.extra:
      half = self.extra // 2
      short = F.pad(x[:, :, :: self.stride, :: self.stride], (0, 0, 0, 0, half, self.extra - half))
    return F.relu(out + short)


class CifarResNet(nn.Module):
  """ResNet-(6n + 2) for CIFAR; ``depth`` 8 (n = 1), 20 or 32 (n = 5, the paper's)."""

  def __init__(self, depth: int = 32, num_classes: int = 10, widths=(16, 32, 64)):
    super().__init__()
    if (depth - 2) % 6:
      raise ValueError(f"depth must be 6n + 2 (8, 20, 32, ...); got {depth}.")
    n = (depth - 2) // 6
    self.conv1 = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(widths[0])
    cin = widths[0]
    for k, width in enumerate(widths, start=1):
      blocks = []
      for i in range(n):
        blocks.append(BasicBlock(cin, width, 2 if (k > 1 and i == 0) else 1))
        cin = width
      setattr(self, f"layer{k}", nn.Sequential(*blocks))
    self.fc = nn.Linear(cin, num_classes)
    self.num_stages = len(widths)
    for m in self.modules():
      if isinstance(m, (nn.Conv2d, nn.Linear)):
        nn.init.kaiming_normal_(m.weight)  # fan-in, gain sqrt(2); the bias keeps its default.

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    x = F.relu(self.bn1(self.conv1(x)))
    for k in range(1, self.num_stages + 1):
      x = getattr(self, f"layer{k}")(x)
    return self.fc(x.mean((2, 3)))


# --- data -------------------------------------------------------------------------------------


def ldam_subset(labels: np.ndarray, counts: Sequence[int], subset_seed: int) -> np.ndarray:
  """Indices of LDAM-DRW's imbalanced subset: per class, the first n_c of a seeded shuffle.

  The legacy global NumPy generator, seeded once and then shuffled class by class, is what
  LDAM-DRW uses; the indices come out grouped by class, as its ``np.vstack`` of the classes.

  Examples:
    >>> ldam_subset(np.array([0, 1, 0, 1, 0]), [2, 1], 0).shape
    (3,)
  """
  labels = np.asarray(labels)
  state = np.random.get_state()  # Leave the caller's global stream as it was.
  try:
    np.random.seed(subset_seed)
    chosen = []
    for c, n_c in enumerate(counts):
      idx = np.flatnonzero(labels == c)
      if n_c > idx.size:
        raise ValueError(f"class {c} has {idx.size} images; {n_c} were asked for.")
      np.random.shuffle(idx)
      chosen.append(idx[:n_c])
  finally:
    np.random.set_state(state)
  return np.concatenate(chosen)


def load_cifar10(data_dir: str = DATA_DIR, image_size: int = 0):
  """(train, test) ArrayDatasets of the JPEG copy through the kit's loader (uint8 NHWC)."""
  from absgd_jax.data import downsample, load_image_folder

  train = load_image_folder(os.path.join(data_dir, "train.zip"))
  test = load_image_folder(os.path.join(data_dir, "test.zip"))
  if image_size:
    train, test = downsample(train, image_size), downsample(test, image_size)
  return train, test


def lt_counts(rho: float, profile: str = "exp", n_max: int = 5000, num_classes: int = 10):
  """LDAM-DRW's per-class counts (``int`` of the exponential or step profile)."""
  if profile == "exp":
    return [int(n_max * (1.0 / rho) ** (c / (num_classes - 1.0))) for c in range(num_classes)]
  if profile == "step":
    half = num_classes // 2
    return [n_max] * (num_classes - half) + [int(n_max / rho)] * half
  raise ValueError(f"profile must be 'exp' or 'step'; got {profile!r}.")


def lt_subset(train, cfg: "RefConfig") -> np.ndarray:
  """The indices of ``cfg``'s imbalanced subset of the ArrayDataset ``train``."""
  n_max = int(np.bincount(train.labels).min())
  counts = lt_counts(cfg.rho, cfg.profile, n_max, train.num_classes)
  return ldam_subset(train.labels, counts, cfg.subset_seed)


def to_input(images_u8: torch.Tensor, mean=LDAM_MEAN, std=LDAM_STD) -> torch.Tensor:
  """uint8 NHWC -> normalised float32 NCHW (torchvision's ToTensor then Normalize)."""
  x = images_u8.permute(0, 3, 1, 2).float().div_(255.0)
  m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
  s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
  return (x - m) / s


def crop_flip(images_u8: torch.Tensor, padding: int, gen: torch.Generator) -> torch.Tensor:
  """RandomCrop(size, padding) + RandomHorizontalFlip() on a uint8 NHWC batch, per image.

  The zero padding is pixel value 0 before normalisation, as torchvision pads the PIL image.
  """
  b, h, w, _ = images_u8.shape
  if padding == 0:
    out = images_u8
  else:
    padded = F.pad(images_u8.permute(0, 3, 1, 2), (padding,) * 4)  # N C H+2p W+2p
    dy = torch.randint(0, 2 * padding + 1, (b,), generator=gen)
    dx = torch.randint(0, 2 * padding + 1, (b,), generator=gen)
    rows = (dy[:, None] + torch.arange(h))[:, :, None]  # B H 1
    cols = (dx[:, None] + torch.arange(w))[:, None, :]  # B 1 W
    out = padded[torch.arange(b)[:, None, None], :, rows, cols]  # B H W C
  flip = torch.rand(b, generator=gen) < 0.5
  return torch.where(flip[:, None, None, None], out.flip(2), out)


# --- training ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RefConfig:
  """One reference run. Epochs count from 0."""

  depth: int = 32
  image_size: int = 0  # 0 keeps 32 px; 16 averages 2x2 blocks, as the kit's image_size.
  rho: float = 100.0
  profile: str = "exp"
  subset_seed: int = 0  # LDAM-DRW's rand_number: the same subset for every seed.
  epochs: int = 200
  batch_size: int = 128
  lr: float = 0.1
  momentum: float = 0.9
  weight_decay: float = 2e-4
  warmup_epochs: int = 5
  decay_epochs: tuple[int, ...] = (160, 180)
  decay_factor: float = 0.01
  crop_padding: int = 4
  norm: str = "ldam"  # "ldam": LDAM-DRW's std; "kit": absgd_jax's CIFAR10_MEAN / CIFAR10_STD.
  seed: int = 0
  eval_every: int = 1
  threads: int = 1
  # Bisection switches toward our kit's choices: the warm-up per step as
  # absgd_jax's learning_rate_schedule, and the classifier's bias started at 0.
  warmup_per_step: bool = False
  zero_head_bias: bool = False

  def __post_init__(self):
    if self.norm not in ("ldam", "kit"):
      raise ValueError(f"norm must be 'ldam' or 'kit'; got {self.norm!r}.")
    if self.warmup_epochs < 0 or self.epochs < 1 or self.batch_size < 1:
      raise ValueError(
        "need warmup_epochs >= 0, epochs >= 1 and batch_size >= 1; got "
        f"{self.warmup_epochs}, {self.epochs}, {self.batch_size}."
      )


def epoch_lr(cfg: RefConfig, epoch: int) -> float:
  """LDAM-DRW's per-epoch rule: linear warm-up by epochs, then step decays.

  Examples:
    >>> cfg = RefConfig()
    >>> [round(epoch_lr(cfg, e), 4) for e in (0, 4, 5, 159, 160, 180)]
    [0.02, 0.1, 0.1, 0.1, 0.001, 1e-05]
  """
  if epoch < cfg.warmup_epochs:
    return cfg.lr * (epoch + 1) / cfg.warmup_epochs
  return cfg.lr * cfg.decay_factor ** sum(epoch >= e for e in cfg.decay_epochs)


def norm_stats(cfg: RefConfig):
  if cfg.norm == "ldam":
    return LDAM_MEAN, LDAM_STD
  from absgd_jax.data import CIFAR10_MEAN, CIFAR10_STD

  return CIFAR10_MEAN, CIFAR10_STD


def epoch_batches(
  cfg: RefConfig, images: torch.Tensor, labels: torch.Tensor, gen: torch.Generator
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
  """One epoch of the reference's (augmented, normalised NCHW, labels) batches."""
  mean, std = norm_stats(cfg)
  perm = torch.randperm(len(labels), generator=gen)
  for start in range(0, len(labels), cfg.batch_size):
    idx = perm[start : start + cfg.batch_size]
    x = crop_flip(images[idx], cfg.crop_padding, gen)
    yield to_input(x, mean, std), labels[idx]


@torch.no_grad()
def evaluate(
  model: nn.Module, images: torch.Tensor, labels: torch.Tensor, cfg: RefConfig, batch: int = 500
) -> dict[str, float]:
  """Top-1 and per-class accuracy on uint8 NHWC images, BatchNorm in eval mode."""
  model.eval()
  mean, std = norm_stats(cfg)
  pred = torch.cat(
    [
      model(to_input(images[s : s + batch], mean, std)).argmax(1)
      for s in range(0, len(labels), batch)
    ]
  )
  model.train()
  correct = (pred == labels).float()
  classes = int(labels.max()) + 1
  per_class = [float(correct[labels == c].mean()) for c in range(classes)]
  return {"test_acc": float(correct.mean()), "test_class_acc": per_class}


def make_model(cfg: RefConfig, num_classes: int = 10) -> nn.Module:
  torch.manual_seed(cfg.seed)
  model = CifarResNet(cfg.depth, num_classes)
  if cfg.zero_head_bias:
    nn.init.zeros_(model.fc.bias)
  return model


def step_lr(cfg: RefConfig, epoch: int, step: int, steps_per_epoch: int) -> float:
  """The rate of global step ``step``: per epoch (LDAM-DRW), or with ``warmup_per_step`` the
  kit's linear ramp from lr / W to lr over the first W = warmup_epochs * steps_per_epoch."""
  warm = cfg.warmup_epochs * steps_per_epoch
  if cfg.warmup_per_step and step < warm:
    return cfg.lr / warm + (cfg.lr - cfg.lr / warm) * step / max(warm - 1, 1)
  return epoch_lr(cfg, epoch)


def make_optimizer(cfg: RefConfig, model: nn.Module) -> torch.optim.SGD:
  return torch.optim.SGD(
    model.parameters(), cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
  )


def train(cfg: RefConfig, data=None, *, checkpoint: str | None = None, log=print) -> dict:
  """Trains one reference run; returns its history and final metrics.

  ``data`` is ``(train, test)`` ArrayDatasets as :func:`load_cifar10` gives (the LT subset is
  taken here). With ``checkpoint`` (a file path) the run saves its state after every epoch
  and resumes from it, random streams included.
  """
  torch.set_num_threads(cfg.threads)
  train_ds, test_ds = data if data is not None else load_cifar10(image_size=cfg.image_size)
  idx = lt_subset(train_ds, cfg)
  x_train = torch.from_numpy(np.ascontiguousarray(train_ds.images[idx]))
  y_train = torch.from_numpy(train_ds.labels[idx].astype(np.int64))
  x_test = torch.from_numpy(np.ascontiguousarray(test_ds.images))
  y_test = torch.from_numpy(test_ds.labels.astype(np.int64))

  model = make_model(cfg, train_ds.num_classes)
  opt = make_optimizer(cfg, model)
  gen = torch.Generator().manual_seed(cfg.seed)
  history, start = [], 0
  if checkpoint and os.path.exists(checkpoint):
    saved = torch.load(checkpoint, weights_only=False)
    model.load_state_dict(saved["model"])
    opt.load_state_dict(saved["opt"])
    gen.set_state(saved["gen"])
    history, start = saved["history"], saved["epoch"] + 1
  model.train()
  t0 = time.perf_counter()
  for epoch in range(start, cfg.epochs):
    te = time.perf_counter()
    lr = epoch_lr(cfg, epoch)
    for group in opt.param_groups:
      group["lr"] = lr
    loss_sum, correct, count = 0.0, 0, 0
    steps_per_epoch = -(-len(y_train) // cfg.batch_size)
    for i, (x, y) in enumerate(epoch_batches(cfg, x_train, y_train, gen)):
      if cfg.warmup_per_step:
        for group in opt.param_groups:
          group["lr"] = step_lr(cfg, epoch, epoch * steps_per_epoch + i, steps_per_epoch)
      logits = model(x)
      loss = F.cross_entropy(logits, y)
      opt.zero_grad(set_to_none=True)
      loss.backward()
      opt.step()
      loss_sum += loss.item() * len(y)
      correct += int((logits.argmax(1) == y).sum())
      count += len(y)
    rec = {
      "epoch": epoch,
      "lr": lr,
      "train_loss": loss_sum / count,
      "train_acc": correct / count,
      "epoch_time_s": time.perf_counter() - te,
    }
    if (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs:
      rec.update(evaluate(model, x_test, y_test, cfg))
    history.append(rec)
    log(json.dumps({k: v for k, v in rec.items() if k != "test_class_acc"}))
    if checkpoint:
      tmp = checkpoint + ".tmp"
      torch.save(
        {
          "model": model.state_dict(),
          "opt": opt.state_dict(),
          "gen": gen.get_state(),
          "history": history,
          "epoch": epoch,
        },
        tmp,
      )
      os.replace(tmp, checkpoint)
  final = history[-1]
  tested = [h["test_acc"] for h in history if "test_acc" in h]
  return {
    "history": history,
    "test_acc": final.get("test_acc"),
    "best_test_acc": max(tested) if tested else None,
    "train_size": len(y_train),
    "wall_s": time.perf_counter() - t0,
  }


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  fields = {f.name: f for f in dataclasses.fields(RefConfig)}
  for name, f in fields.items():
    flag = "--" + name.replace("_", "-")
    if name == "decay_epochs":
      ap.add_argument("--decay", dest=name, type=int, nargs="*", default=list(f.default))
    elif name == "warmup_epochs":
      ap.add_argument("--warmup", dest=name, type=int, default=f.default)
    else:
      ap.add_argument(flag, dest=name, type=type(f.default), default=f.default)
  ap.add_argument("--checkpoint", default=None)
  args = vars(ap.parse_args(argv))
  checkpoint = args.pop("checkpoint")
  args["decay_epochs"] = tuple(args["decay_epochs"])
  out = train(RefConfig(**args), checkpoint=checkpoint)
  print(f"final test acc {100 * out['test_acc']:.2f}, best {100 * out['best_test_acc']:.2f}")


if __name__ == "__main__":
  main()
