"""Run configuration: one frozen dataclass, one preset per paper experiment, checked overrides.

A preset is a starting point; any field can be overridden by name (``--set lr=0.05`` on the
command line, or ``dataclasses.replace``). Every field is validated in one place, and a bad
value is answered with the valid choices.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from typing import Any

DATASETS = ("digits", "cifar10", "cifar100", "imagenet-lt", "places-lt", "inat2018",
            "clothing1m", "image-list")
# Data sets read from image files named by split lists, streamed (absgd_jax.data.streaming).
FILE_DATASETS = {"imagenet-lt": 1000, "places-lt": 365, "inat2018": 8142, "clothing1m": 14,
                 "image-list": 0}
SOURCES = ("zip", "tfds")
IMBALANCES = ("none", "exp", "step")
NOISES = ("none", "sym", "asym")
METHODS = ("sgd", "absgd", "adam", "abadam", "eg", "l2rw")
LOSSES = ("ce", "focal", "ldam", "sce", "gce", "tce")
CLASS_WEIGHTING = ("none", "cb", "drw")
TRAINABLE = ("all", "fc", "fc+lb")
SAMPLERS = ("uniform", "balanced")
MODELS = ("mlp", "cnn4", "resnet8", "resnet20", "resnet32", "resnet18", "resnet34",
          "resnet50", "resnet101", "resnet152")
HEADS = ("linear", "cosine")
MOMENTUM_FORMS = ("paper", "pytorch")
DTYPES = ("float32", "bfloat16")


@dataclasses.dataclass(frozen=True)
class Config:
  """Everything a run depends on. Epoch-valued fields count from 0."""

  # Data.
  dataset: str = "digits"
  source: str = "zip"  # CIFAR: "zip" (an image-folder zip) or "tfds".
  # CIFAR: holds train.zip / test.zip, or tfds data. File-list data sets: the folder the
  # images' relative paths start from (and the lists, when their paths are relative).
  data_dir: str = "../shared/data/cifar10-jpeg"
  # File-list data sets: the training and test split lists, "relative/path label" lines
  # (iNaturalist: its JSON), relative to data_dir unless absolute.
  train_list: str = ""
  test_list: str = ""
  classes: int = 0  # The number of classes of dataset="image-list".
  crop_size: int = 224  # File lists: random-resized crop (train) / center crop (test) side.
  resize_size: int = 256  # File lists: the test images' shorter side before the crop.
  data_workers: int = 8  # File lists: grain worker processes that decode and crop.
  # Shrinks the images to image_size x image_size by area averaging (0 keeps them); it must
  # divide the source's side. A CPU-sized protocol (experiments/cifar_table.py) uses 16.
  image_size: int = 0
  imbalance: str = "none"
  rho: float = 100.0
  # The head class's size before imbalance (0: the smallest class's, 5000 on CIFAR-10). With
  # imbalance="none" a positive n_max keeps n_max images of every class.
  n_max: int = 0
  noise: str = "none"
  noise_rate: float = 0.4
  val_fraction: float = 0.0  # Held out of the training set, per class, for tuning.
  augment: bool = True  # CIFAR crop + flip, on the accelerator inside the step.
  crop_padding: int = 4  # The crop's zero padding, in pixels (4 at 32 px; 2 at 16 px).
  sampler: str = "uniform"
  # Model.
  model: str = "mlp"
  head: str = "linear"
  # Mixed precision: "bfloat16" computes activations in bfloat16; parameters, BatchNorm
  # statistics, the losses, the ABSGD weights and their state stay float32.
  dtype: str = "float32"
  # Start from these weights instead of a random init: an absgd_jax run directory (its latest
  # checkpoint's params and BatchNorm statistics: stage 1 of a two-stage run), or a torchvision
  # / timm ResNet state dict (.pth, .npz). The optimizer, step count and ABSGD state start fresh.
  init_from: str = ""
  # What init_from's classifier does: "keep" it, or "drop" it for a fresh one (other classes).
  init_head: str = "keep"
  # Objective.
  method: str = "absgd"
  loss: str = "ce"
  class_weighting: str = "none"
  cb_beta: float = 0.9999
  drw_epoch: int = 160
  focal_gamma: float = 1.0
  ldam_max_m: float = 0.5
  ldam_scale: float = 30.0
  sce_alpha: float = 0.1
  sce_beta: float = 1.0
  gce_q: float = 0.7
  # Truncated GCE has zero gradient wherever p_y <= tce_k, which from a random start is every
  # sample when C > 2: start it from a model trained with gce.
  tce_k: float = 0.5
  # ABSGD.
  lam: float = 1.0
  gamma: float = 0.9
  # lam = inf (plain SGD) before this epoch, then lam (Section 3.6). For SGD/Adam, which have
  # no lam, it only marks where stage2_trainable starts freezing.
  stage2_epoch: int = 0
  stage2_trainable: str = "all"  # What stage 2 trains: all, the classifier, or it + last block.
  # Learning to reweight (method="l2rw"): a clean, balanced meta set carved from the training
  # data, up to this many per class (at most half of a class).
  meta_per_class: int = 10
  # Optimisation.
  epochs: int = 30
  batch_size: int = 128
  lr: float = 0.1
  momentum: float = 0.9
  # How the learning rate meets the momentum (absgd_jax.absgd): "pytorch" is torch.optim.SGD
  # and optax.sgd, which the authors' code ran; "paper" is Eq. (2) to the letter. They differ
  # only when the rate changes (see absgd's docstring for the measured reason of the default).
  momentum_form: str = "pytorch"
  weight_decay: float = 2e-4
  warmup_epochs: int = 0
  lr_schedule: str = "step"  # "step": lr_decay_epochs; "cosine": to 0 at the last epoch.
  lr_decay_epochs: tuple[int, ...] = ()
  lr_decay_factor: float = 0.1
  # Run.
  seed: int = 0
  eval_every: int = 1
  checkpoint: bool = True
  out_dir: str = "runs/default"

  def __post_init__(self):
    choices = {"dataset": DATASETS, "source": SOURCES, "imbalance": IMBALANCES,
               "noise": NOISES, "method": METHODS, "loss": LOSSES,
               "class_weighting": CLASS_WEIGHTING, "stage2_trainable": TRAINABLE,
               "sampler": SAMPLERS, "model": MODELS, "head": HEADS,
               "momentum_form": MOMENTUM_FORMS, "dtype": DTYPES,
               "init_head": ("keep", "drop"), "lr_schedule": ("step", "cosine")}
    for name, valid in choices.items():
      if getattr(self, name) not in valid:
        raise ValueError(f"{name}={getattr(self, name)!r} is not one of {', '.join(valid)}.")
    if self.rho < 1:
      raise ValueError(f"rho must be >= 1; got {self.rho}.")
    if not 0 <= self.noise_rate < 1:
      raise ValueError(f"noise_rate must lie in [0, 1); got {self.noise_rate}.")
    if not 0 <= self.val_fraction < 1:
      raise ValueError(f"val_fraction must lie in [0, 1); got {self.val_fraction}.")
    if self.lam == 0 or math.isnan(self.lam):
      raise ValueError(f"lam must be nonzero (+-inf for plain SGD); got {self.lam}.")
    if not 0 < self.gamma <= 1:
      raise ValueError(f"gamma must lie in (0, 1]; got {self.gamma}.")
    if self.dataset == "image-list" and self.classes < 1:
      raise ValueError("dataset='image-list' needs classes=<number of classes>.")
    if self.dataset in FILE_DATASETS and self.image_size:
      raise ValueError("image_size downsamples in-memory data; streamed file lists use "
                       "crop_size and resize_size.")
    if self.dataset in FILE_DATASETS and self.method == "l2rw":
      raise ValueError("method='l2rw' needs an in-memory meta set; it is not available for "
                       "streamed file-list data sets.")
    if not 0 < self.crop_size <= self.resize_size:
      raise ValueError(f"need 0 < crop_size <= resize_size; got crop_size={self.crop_size}, "
                       f"resize_size={self.resize_size}.")
    if self.lr_schedule == "cosine" and self.lr_decay_epochs:
      raise ValueError("lr_schedule='cosine' decays to 0 by itself; drop lr_decay_epochs "
                       f"({self.lr_decay_epochs}) or use lr_schedule='step'.")
    for name in ("image_size", "n_max", "crop_padding", "classes", "data_workers"):
      if getattr(self, name) < 0:
        raise ValueError(f"{name} must be >= 0; got {getattr(self, name)}.")
    for name in ("epochs", "batch_size", "eval_every"):
      if getattr(self, name) < 1:
        raise ValueError(f"{name} must be >= 1; got {getattr(self, name)}.")
    if self.lr <= 0:
      raise ValueError(f"lr must be > 0; got {self.lr}.")
    if self.loss == "ldam" and self.head != "cosine":
      raise ValueError("loss='ldam' expects a normalised classifier: set head='cosine'.")

  @property
  def num_classes(self) -> int:
    if self.dataset == "image-list":
      return self.classes
    return {"digits": 10, "cifar10": 10, "cifar100": 100, **FILE_DATASETS}[self.dataset]

  @property
  def streamed(self) -> bool:
    """Whether the data are image files read batch by batch (not held in memory)."""
    return self.dataset in FILE_DATASETS


PRESETS: dict[str, dict[str, Any]] = {
    # The embedded default: scikit-learn digits, an MLP, a minute on a CPU. lr, lam and the
    # stage-2 epoch are ABSGD's choices from experiments/digits_sweep.py (validation split).
    "digits-lt": dict(dataset="digits", imbalance="exp", rho=50, model="mlp", epochs=30,
                      batch_size=64, lr=0.1, weight_decay=5e-4, lam=5.0, gamma=0.9,
                      lr_decay_epochs=(22,), augment=False),
    "digits-st": dict(dataset="digits", imbalance="step", rho=50, model="mlp", epochs=30,
                      batch_size=64, lr=0.1, weight_decay=5e-4, lam=5.0, gamma=0.9,
                      stage2_epoch=22, lr_decay_epochs=(22,), augment=False),
    "digits-noise": dict(dataset="digits", noise="sym", noise_rate=0.4, model="mlp",
                         epochs=30, batch_size=64, lr=0.05, weight_decay=5e-4, lam=-1.0,
                         gamma=0.9, stage2_epoch=22, lr_decay_epochs=(22,), augment=False),
    # Section 4.1: ResNet-32, 200 epochs, lr 0.1 with a 5-epoch warm-up, divided by 100 at
    # epochs 160 and 180, batch 128, weight decay 2e-4; ABSGD's lam switched on at 160.
    "cifar10-lt": dict(dataset="cifar10", imbalance="exp", rho=100, model="resnet32",
                       epochs=200, batch_size=128, lr=0.1, weight_decay=2e-4, warmup_epochs=5,
                       lr_decay_epochs=(160, 180), lr_decay_factor=0.01, lam=5.0, gamma=0.9,
                       stage2_epoch=160, drw_epoch=160),
    "cifar10-st": dict(dataset="cifar10", imbalance="step", rho=100, model="resnet32",
                       epochs=200, batch_size=128, lr=0.1, weight_decay=2e-4, warmup_epochs=5,
                       lr_decay_epochs=(160, 180), lr_decay_factor=0.01, lam=5.0, gamma=0.9,
                       stage2_epoch=160, drw_epoch=160),
    "cifar100-lt": dict(dataset="cifar100", source="tfds", imbalance="exp", rho=100,
                        model="resnet32", epochs=200, batch_size=128, lr=0.1,
                        weight_decay=2e-4, warmup_epochs=5, lr_decay_epochs=(160, 180),
                        lr_decay_factor=0.01, lam=5.0, gamma=0.9, stage2_epoch=160,
                        drw_epoch=160),
    "cifar100-st": dict(dataset="cifar100", source="tfds", imbalance="step", rho=100,
                        model="resnet32", epochs=200, batch_size=128, lr=0.1,
                        weight_decay=2e-4, warmup_epochs=5, lr_decay_epochs=(160, 180),
                        lr_decay_factor=0.01, lam=5.0, gamma=0.9, stage2_epoch=160,
                        drw_epoch=160),
    # Section 5.1: noisy CIFAR-10 with the SCE paper's 4-layer CNN, 120 epochs, lr decayed by
    # 10 at epochs 40 and 80, batch 128; lam < 0.
    "cifar10-noise": dict(dataset="cifar10", noise="sym", noise_rate=0.4, model="cnn4",
                          epochs=120, batch_size=128, lr=0.01, weight_decay=1e-4,
                          lr_decay_epochs=(40, 80), lr_decay_factor=0.1, loss="sce",
                          lam=-1.0, gamma=0.9),
    "cifar100-noise": dict(dataset="cifar100", source="tfds", noise="sym",
                           noise_rate=0.4, model="resnet18", epochs=120, batch_size=128, lr=0.1,
                           weight_decay=5e-4, lr_decay_epochs=(40, 80), lr_decay_factor=0.1,
                           loss="sce", sce_alpha=6.0, sce_beta=0.1, lam=-1.0, gamma=0.9),
}

# Section 4.2 and 5.2 (Tables 3-5 and 7): file lists streamed from disk (docs/large_scale.md
# says where each list comes from). The paper's text gives the models, the epochs of each
# stage, what stage 2 trains, lam's grid {10, 20, 30} and Clothing1M's schedule; its Table 8
# (learning rates) is not in our copy of the paper, so the learning rates, batch sizes and
# cosine schedules of stage 1 are those of Kang et al. 2020 ("Decoupling"), which the paper's
# two-stage baselines come from, and say so here. Stage 2 starts from stage 1's run directory.
_LARGE = dict(model="resnet50", batch_size=512, weight_decay=5e-4,
              lr_schedule="cosine", gamma=0.9, eval_every=5, data_workers=16)
PRESETS.update({
    # ImageNet-LT (Table 3): stage 1, momentum SGD + CE for 90 epochs from scratch.
    "imagenet-lt-stage1": dict(_LARGE, dataset="imagenet-lt", method="sgd", epochs=90, lr=0.2),
    # Stage 2: ABSGD fine-tunes the classifier (FC) for 90 epochs; lam in {10, 20, 30}.
    "imagenet-lt-stage2": dict(_LARGE, dataset="imagenet-lt", method="absgd", lam=10.0,
                               epochs=90, lr=0.2, init_from="runs/imagenet-lt-stage1",
                               stage2_trainable="fc"),
    # Places-LT (Table 4): ResNet-152 from ImageNet weights (init_from: a torchvision or timm
    # file, with a new 365-class head); stage 1 trains FC + the last block for 90 epochs.
    "places-lt-stage1": dict(_LARGE, dataset="places-lt", model="resnet152", method="sgd",
                             epochs=90, lr=0.01, batch_size=256,
                             init_from="resnet152-imagenet.pth", init_head="drop",
                             stage2_trainable="fc+lb"),
    "places-lt-stage2": dict(_LARGE, dataset="places-lt", model="resnet152", method="absgd",
                             lam=10.0, epochs=30, lr=0.01, batch_size=256,
                             init_from="runs/places-lt-stage1", stage2_trainable="fc+lb"),
    # iNaturalist 2018 (Table 5): ResNet-50 (or resnet152) from ImageNet weights, momentum SGD
    # for 200 epochs, then ABSGD with lam = 10 on FC + the last block for 30 epochs.
    "inat2018-stage1": dict(_LARGE, dataset="inat2018", method="sgd", epochs=200, lr=0.2,
                            init_from="resnet50-imagenet.pth", init_head="drop"),
    "inat2018-stage2": dict(_LARGE, dataset="inat2018", method="absgd", lam=10.0, epochs=30,
                            lr=0.2, init_from="runs/inat2018-stage1", stage2_trainable="fc+lb"),
    # Clothing1M (Table 7): ResNet-50 from ImageNet weights, 10 epochs, lr 0.002 divided by 10
    # at epoch 5, weight decay 1e-2; lam in {-1, -5, -10, -15} (min-min, noisy labels).
    "clothing1m": dict(dataset="clothing1m", model="resnet50", method="absgd",
                       lam=-1.0, gamma=0.9, epochs=10, lr=0.002, lr_decay_epochs=(5,),
                       lr_decay_factor=0.1, weight_decay=1e-2, batch_size=256,
                       init_from="resnet50-imagenet.pth", init_head="drop", data_workers=16),
})


def _coerce(field: dataclasses.Field, text: str) -> Any:
  hint = typing.get_type_hints(Config)[field.name]
  if hint is bool:
    if text.lower() in ("1", "true", "yes", "on"):
      return True
    if text.lower() in ("0", "false", "no", "off"):
      return False
    raise ValueError(f"{field.name} expects true or false; got {text!r}.")
  if hint is int:
    return int(text)
  if hint is float:
    return float(text)
  if hint == tuple[int, ...]:
    return tuple(int(x) for x in text.split(",") if x.strip())
  return text


def make_config(preset: str | None = None, overrides: dict[str, Any] | None = None,
                **kwargs: Any) -> Config:
  """A :class:`Config` from a preset plus overrides (strings are parsed to the field's type).

  Examples:
    >>> make_config("digits-lt", {"lam": "2.5"}).lam
    2.5
    >>> make_config("digits-lt", {"lr_decay_epochs": "10,20"}).lr_decay_epochs
    (10, 20)
  """
  values: dict[str, Any] = {}
  if preset is not None:
    if preset not in PRESETS:
      raise ValueError(f"unknown config {preset!r}; choose one of {', '.join(PRESETS)}.")
    values.update(PRESETS[preset])
  fields = {f.name: f for f in dataclasses.fields(Config)}
  for key, value in {**(overrides or {}), **kwargs}.items():
    if key not in fields:
      raise ValueError(f"unknown setting {key!r}; valid settings: {', '.join(fields)}.")
    values[key] = _coerce(fields[key], value) if isinstance(value, str) else value
  return Config(**values)
