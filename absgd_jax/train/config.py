"""Run configuration: one frozen dataclass, one preset per paper experiment, checked overrides.

A preset is a starting point; any field can be overridden by name (``--set lr=0.05`` on the
command line, or ``make_config(preset, lr=0.05)``). Every field is validated in one place
(:meth:`Config.__post_init__`), and a bad value is answered with its key and the valid range.

A run is its settings. :func:`fingerprint` hashes the fields that change what a run computes
(:func:`result_fields`: not ``out_dir``, ``eval_every``, ``checkpoint``, ``data_workers``,
``data_dir``, ``preset``, the collapse guard's thresholds); the default ``out_dir`` carries
it (:func:`default_out_dir`), and a run directory keeps the resolved config
(:func:`write_run_config`), so that a resume with other settings is refused, naming the keys
that differ (:func:`check_resume`).

Schedules follow the run's length. When a preset's ``epochs`` is overridden and one of its
epoch-valued fields (``warmup_epochs``, ``stage2_epoch``, ``drw_epoch``, ``lr_decay_epochs``)
is not, :func:`make_config` scales that field with the run (:func:`scale_epochs` states the
rule). Any
epoch-valued field that the run would never reach is an error when it matters, e.g. a
``stage2_epoch`` at or after ``epochs`` with ``method="absgd"``, whose weights would then never
switch on.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import numbers
import os
import typing
from collections.abc import Mapping
from typing import Any

from absgd_jax.data.facts import FACTS, facts
from absgd_jax.train import checks

DATASETS = tuple(FACTS)
# Data sets read from image files named by split lists, streamed (absgd_jax.data.streaming),
# and their class counts (0: the user's ``classes``). Kept for callers of the old name.
FILE_DATASETS = {name: f.num_classes for name, f in FACTS.items() if f.streamed}
SOURCES = ("zip", "tfds")
IMBALANCES = ("none", "exp", "step")
NOISES = ("none", "sym", "asym")
METHODS = ("sgd", "absgd", "adam", "abadam", "eg", "l2rw")
# The methods whose per-sample weights switch on at stage2_epoch (lam = inf before it).
WEIGHTED_METHODS = ("absgd", "abadam", "eg")
# la: logit-adjusted CE (tau = la_tau); bs: balanced softmax. Both take the training prior.
LOSSES = ("ce", "focal", "ldam", "la", "bs", "sce", "gce", "tce")
CLASS_WEIGHTING = ("none", "cb", "drw")
TRAINABLE = ("all", "fc", "fc+lb")
SAMPLERS = ("uniform", "balanced")
MODELS = ("mlp", "cnn4", "resnet8", "resnet20", "resnet32", "resnet18", "resnet34",
          "resnet50", "resnet101", "resnet152")
HEADS = ("linear", "cosine")
MOMENTUM_FORMS = ("paper", "pytorch")
DTYPES = ("float32", "bfloat16")

_CHOICES = {"dataset": DATASETS, "source": SOURCES, "imbalance": IMBALANCES, "noise": NOISES,
            "method": METHODS, "loss": LOSSES, "class_weighting": CLASS_WEIGHTING,
            "stage2_trainable": TRAINABLE, "sampler": SAMPLERS, "model": MODELS, "head": HEADS,
            "momentum_form": MOMENTUM_FORMS, "dtype": DTYPES, "init_head": ("keep", "drop"),
            "lr_schedule": ("step", "cosine")}

# Numeric ranges: key -> (low, high, low inclusive, high inclusive); None is unbounded.
_RANGES: dict[str, tuple[float | None, float | None, bool, bool]] = {
    "rho": (1, None, True, False),
    "noise_rate": (0, 1, True, False),
    "val_fraction": (0, 1, True, False),
    "gamma": (0, 1, False, True),
    "kl_budget": (0, None, True, False),
    "momentum": (0, 1, True, False),
    "weight_decay": (0, None, True, False),
    "lr": (0, None, False, False),
    "lr_decay_factor": (0, 1, False, True),
    "cb_beta": (0, 1, True, False),
    "focal_gamma": (0, None, True, False),
    "ldam_max_m": (0, None, False, False),
    "ldam_scale": (0, None, False, False),
    "la_tau": (0, None, True, False),
    "sce_alpha": (0, None, True, False),
    "sce_beta": (0, None, True, False),
    "gce_q": (0, 1, False, True),
    "tce_k": (0, 1, False, False),
    "epochs": (1, None, True, False),
    "batch_size": (1, None, True, False),
    "eval_every": (1, None, True, False),
    "meta_per_class": (1, None, True, False),
    "crop_size": (1, None, True, False),
    "resize_size": (1, None, True, False),
    "seed": (0, None, True, False),
    "warmup_epochs": (0, None, True, False),
    "stage2_epoch": (0, None, True, False),
    "drw_epoch": (0, None, True, False),
    "image_size": (0, None, True, False),
    "n_max": (0, None, True, False),
    "test_per_class": (0, None, True, False),
    "crop_padding": (0, None, True, False),
    "classes": (0, None, True, False),
    "data_workers": (0, None, True, False),
    "collapse_weight": (0, 1, True, False),
    "collapse_steps": (0, None, True, False),
}


def _range_text(low, high, low_in, high_in) -> str:
  if high is None:
    return f"be {'>=' if low_in else '>'} {low:g}"
  return f"lie in {'[' if low_in else '('}{low:g}, {high:g}{']' if high_in else ')'}"


def _in_range(x: float, low, high, low_in, high_in) -> bool:
  if math.isnan(x):
    return False
  if low is not None and (x < low or (x == low and not low_in)):
    return False
  return high is None or x < high or (x == high and high_in)


@dataclasses.dataclass(frozen=True)
class Config:
  """Everything a run depends on. Epoch-valued fields count from 0.

  Every value is checked on construction (:meth:`__post_init__`): its type, its range, and
  the epoch-valued fields against ``epochs``. A bad value raises ``ValueError`` naming the
  key, the value and what is allowed, before any data is read.

  Examples:
    >>> from absgd_jax.train import Config
    >>> Config(dataset="digits", method="absgd", lam=-1.0).lam
    -1.0
    >>> Config(gamma=1.5)
    Traceback (most recent call last):
    ...
    ValueError: gamma=1.5 is outside the allowed range: ...
  """

  # Data.
  dataset: str = "digits"
  source: str = "zip"  # CIFAR: "zip" (an image-folder zip) or "tfds".
  # CIFAR: holds train.zip / test.zip, or tfds data ("" is tfds' own default). File-list data
  # sets: the folder the images' relative paths start from (and the lists, when relative).
  data_dir: str = ""
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
  # 0 evaluates on the whole test set. n > 0 keeps the first n test images of every class:
  # for smoke runs, where evaluating all 10,000 CIFAR images cost more than training; its
  # accuracies are not the paper's.
  test_per_class: int = 0
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
  la_tau: float = 1.0  # Menon et al.'s tau for loss="la"; 1 is theirs on CIFAR-LT.
  sce_alpha: float = 0.1
  sce_beta: float = 1.0
  gce_q: float = 0.7
  # Truncated GCE has zero gradient wherever p_y <= tce_k, which from a random start is every
  # sample when C > 2: start it from a model trained with gce.
  tce_k: float = 0.5
  # ABSGD.
  lam: float = 1.0
  gamma: float = 0.9
  # > 0: lam is not fixed but set online so that KL(weights || uniform) stays near this budget
  # (absgd_jax.kl_absgd_weights; docs/kl_budget.md relates it to the effective sample size).
  # lam's sign picks the side: lam > 0 up-weights hard samples, lam < 0 easy ones (noise).
  # 0.01 held within about a point of the grid-tuned lam on every digits imbalance cell, for
  # CE, focal and CB-LDAM alike (docs/results/kl_budget.md). lam is then unused. 0 = off.
  kl_budget: float = 0.0
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
  # The lam < 0 guard (absgd_jax.train.health.ClassCollapseGuard): warn when a class's mean
  # weight (1 is the batch's mean) stays below collapse_weight for collapse_steps steps in a
  # row while lam < 0, the sign of a class given up. collapse_steps=0 turns the guard off.
  collapse_weight: float = 0.05
  collapse_steps: int = 50
  # Run.
  seed: int = 0
  eval_every: int = 1
  checkpoint: bool = True
  # Where the run writes its config, metrics and checkpoints. "" derives one from the preset,
  # the method, lam and the fingerprint (default_out_dir), so two settings never share one.
  out_dir: str = ""
  # The preset the run started from (make_config sets it): a label, not a setting.
  preset: str = ""

  def __post_init__(self):
    hints = typing.get_type_hints(Config)
    for f in dataclasses.fields(self):
      object.__setattr__(self, f.name, _check_type(f.name, getattr(self, f.name),
                                                   hints[f.name]))
    for name, valid in _CHOICES.items():
      if getattr(self, name) not in valid:
        raise ValueError(f"{name}={getattr(self, name)!r} is not one of {', '.join(valid)}.")
    for name, bounds in _RANGES.items():
      value = getattr(self, name)
      if not _in_range(value, *bounds):
        raise ValueError(f"{name}={value!r} is outside the allowed range: {name} must "
                         f"{_range_text(*bounds)}.")
      if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{name}={value!r} must be finite.")
    if self.lam == 0 or math.isnan(self.lam):
      raise ValueError(f"lam={self.lam} is not allowed: lam must be nonzero (> 0 for "
                       "imbalance, < 0 for noisy labels, +-inf for plain SGD).")
    if self.kl_budget > 0 and self.method not in ("absgd", "abadam"):
      raise ValueError(f"kl_budget={self.kl_budget} sets ABSGD's lam: it needs method='absgd' or "
                       f"'abadam', not {self.method!r} (set kl_budget=0).")
    checks.kl_budget(self.kl_budget, self.batch_size)
    if self.sce_alpha == 0 and self.sce_beta == 0:
      raise ValueError("sce_alpha=0 and sce_beta=0 make the SCE loss 0: give one > 0.")
    if self.dataset == "image-list" and self.classes < 1:
      raise ValueError("dataset='image-list' needs classes=<number of classes> (>= 1).")
    if self.streamed and self.image_size:
      raise ValueError(f"image_size={self.image_size} downsamples in-memory data; streamed "
                       "file lists use crop_size and resize_size (set image_size=0).")
    if self.streamed and self.method == "l2rw":
      raise ValueError("method='l2rw' needs an in-memory meta set; it is not available for "
                       "streamed file-list data sets.")
    if self.noise == "asym" and facts(self.dataset).asym_noise is None:
      with_asym = [n for n, f in FACTS.items() if f.asym_noise is not None]
      raise ValueError(f"noise='asym' has no mapping for dataset={self.dataset!r}; it exists "
                       f"for {', '.join(with_asym)} (or use noise='sym').")
    if not self.crop_size <= self.resize_size:
      raise ValueError(f"need crop_size <= resize_size; got crop_size={self.crop_size}, "
                       f"resize_size={self.resize_size}.")
    if self.lr_schedule == "cosine" and self.lr_decay_epochs:
      raise ValueError("lr_schedule='cosine' decays to 0 by itself; drop lr_decay_epochs "
                       f"({self.lr_decay_epochs}) or use lr_schedule='step'.")
    if self.loss == "ldam" and self.head != "cosine":
      raise ValueError("loss='ldam' expects a normalised classifier: set head='cosine'.")
    self._check_epochs()
    # Larger than the whole training split: every step would be one padded batch (and the
    # process may be killed for memory before it says so).
    size = facts(self.dataset).train_size
    if size and self.batch_size > size:
      raise ValueError(f"batch_size={self.batch_size} exceeds the {size} training images of "
                       f"{self.dataset}: choose batch_size <= {size} (the split after imbalance "
                       "is smaller still).")
    if not self.out_dir:
      object.__setattr__(self, "out_dir", default_out_dir(self))

  def _check_epochs(self) -> None:
    """Epoch-valued fields against the run's length: nothing asked for may silently not happen."""
    e = self.epochs
    if self.warmup_epochs and self.warmup_epochs >= e:
      raise ValueError(f"warmup_epochs={self.warmup_epochs} must be < epochs={e}: the learning "
                       "rate would never reach lr.")
    decays = self.lr_decay_epochs
    if any(b <= a for a, b in zip(decays, decays[1:])):
      raise ValueError(f"lr_decay_epochs={decays} must be strictly increasing.")
    late = [d for d in decays if not 1 <= d < e]
    if late:
      raise ValueError(f"lr_decay_epochs={decays} has {late} outside 1..{e - 1} (epochs={e}): "
                       "that decay would never happen. Drop it or raise epochs.")
    if self.method in WEIGHTED_METHODS and self.stage2_epoch >= e:
      raise ValueError(
          f"stage2_epoch={self.stage2_epoch} must be < epochs={e} with method="
          f"{self.method!r}: its weights (lam={self.lam:g}) switch on at stage2_epoch, so this "
          "run would be plain momentum SGD. Set stage2_epoch=0 (weights from the first step), "
          "a smaller stage2_epoch, or more epochs.")
    if self.stage2_trainable != "all" and self.stage2_epoch >= e:
      raise ValueError(f"stage2_epoch={self.stage2_epoch} must be < epochs={e} with "
                       f"stage2_trainable={self.stage2_trainable!r}: stage 2 would never start.")
    if self.class_weighting == "drw" and self.drw_epoch >= e:
      raise ValueError(f"drw_epoch={self.drw_epoch} must be < epochs={e} with "
                       "class_weighting='drw': the class weights would never switch on.")

  @property
  def num_classes(self) -> int:
    if self.dataset == "image-list":
      return self.classes
    return facts(self.dataset).num_classes

  @property
  def streamed(self) -> bool:
    """Whether the data are image files read batch by batch (not held in memory)."""
    return facts(self.dataset).streamed


def _check_type(name: str, value: Any, hint: Any) -> Any:
  """``value`` as the field's type, or a ValueError naming the key."""
  def bad(kind):
    return ValueError(f"{name} expects {kind}; got {value!r} ({type(value).__name__}).")

  if hint is bool:
    if isinstance(value, bool) or (hasattr(value, "dtype") and value.dtype == bool):
      return bool(value)
    raise bad("true or false")
  if hint is int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
      raise bad("an integer")
    return int(value)
  if hint is float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
      raise bad("a number")
    return float(value)
  if hint is str:
    if isinstance(value, os.PathLike):  # A pathlib.Path for data_dir, out_dir, ...
      value = os.fspath(value)
    if not isinstance(value, str):
      raise bad("a string")
    return value
  if hint == tuple[int, ...]:
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
      raise bad("a sequence of integers (e.g. 160,180)")
    items = tuple(value)
    if any(isinstance(v, bool) or not isinstance(v, numbers.Integral) for v in items):
      raise bad("a sequence of integers (e.g. 160,180)")
    return tuple(int(v) for v in items)
  return value


# --- presets ------------------------------------------------------------------------------

# The embedded default: scikit-learn digits, an MLP, a minute on a CPU. lr, lam and the
# stage-2 epoch are ABSGD's choices from experiments/digits_sweep.py (validation split).
_DIGITS = dict(dataset="digits", model="mlp", epochs=30, batch_size=64, lr=0.1,
               weight_decay=5e-4, lam=5.0, gamma=0.9, lr_decay_epochs=(22,), augment=False)
# Section 4.1: ResNet-32, 200 epochs, lr 0.1 with a 5-epoch warm-up, divided by 100 at
# epochs 160 and 180, batch 128, weight decay 2e-4; ABSGD's lam switched on at 160.
_CIFAR_LT = dict(model="resnet32", rho=100, epochs=200, batch_size=128, lr=0.1,
                 weight_decay=2e-4, warmup_epochs=5, lr_decay_epochs=(160, 180),
                 lr_decay_factor=0.01, lam=5.0, gamma=0.9, stage2_epoch=160, drw_epoch=160)
# Section 5.1: noisy CIFAR with 120 epochs, lr decayed by 10 at epochs 40 and 80, batch 128,
# the SCE loss; lam < 0 from the start.
_CIFAR_NOISE = dict(noise="sym", noise_rate=0.4, epochs=120, batch_size=128,
                    lr_decay_epochs=(40, 80), lr_decay_factor=0.1, loss="sce", lam=-1.0,
                    gamma=0.9)
# CIFAR-100 comes from tensorflow-datasets (the shared copy is CIFAR-10's JPEG zips).
_C10, _C100 = dict(dataset="cifar10"), dict(dataset="cifar100", source="tfds")

#: The presets by name, one per experiment of the paper: each maps setting names to the
#: values that differ from :class:`Config`'s defaults. ``make_config(name, **overrides)`` and
#: ``absgd-train --config NAME`` start from one; ``absgd-train --list`` prints them.
#:
#: Examples:
#:   >>> PRESETS["cifar10-lt"]["model"], PRESETS["cifar10-lt"]["lam"]
#:   ('resnet32', 5.0)
#:   >>> make_config("digits-lt").lam == PRESETS["digits-lt"]["lam"]
#:   True
PRESETS: dict[str, dict[str, Any]] = {
    "digits-lt": dict(_DIGITS, imbalance="exp", rho=50),
    "digits-st": dict(_DIGITS, imbalance="step", rho=50, stage2_epoch=22),
    "digits-noise": dict(_DIGITS, noise="sym", noise_rate=0.4, lr=0.05, lam=-1.0,
                         stage2_epoch=22),
    "cifar10-lt": dict(_CIFAR_LT, **_C10, imbalance="exp"),
    "cifar10-st": dict(_CIFAR_LT, **_C10, imbalance="step"),
    "cifar100-lt": dict(_CIFAR_LT, **_C100, imbalance="exp"),
    "cifar100-st": dict(_CIFAR_LT, **_C100, imbalance="step"),
    # The SCE paper's 4-layer CNN on CIFAR-10; ResNet-18 with its CIFAR-100 SCE weights.
    "cifar10-noise": dict(_CIFAR_NOISE, **_C10, model="cnn4", lr=0.01, weight_decay=1e-4),
    "cifar100-noise": dict(_CIFAR_NOISE, **_C100, model="resnet18", lr=0.1,
                           weight_decay=5e-4, sce_alpha=6.0, sce_beta=0.1),
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


# --- schedules that follow the run's length -----------------------------------------------

EPOCH_FIELDS = ("warmup_epochs", "stage2_epoch", "drw_epoch", "lr_decay_epochs")


def _round_half_up(x: float) -> int:
  return int(math.floor(x + 0.5))


def scale_epochs(values: Mapping[str, Any], base_epochs: int, epochs: int) -> dict[str, Any]:
  """The epoch-valued fields of ``values`` moved from a ``base_epochs`` run to an ``epochs`` run.

  The rule: each keeps its fraction of the run, ``round(old * epochs / base_epochs)`` (halves
  up), and

  - a stage start (``stage2_epoch``, ``drw_epoch``) that was after the first epoch stays in
    ``1 .. epochs - 1``, so a two-stage run keeps an epoch of each stage (a one-epoch run
    cannot, and :class:`Config` refuses it for the methods that need stage 2);
  - a warm-up that was there lasts at least one epoch and ends before the last one;
  - a learning-rate decay is kept only if it falls in ``1 .. epochs - 1``: a one-epoch run has
    no decay.

  Examples:
    >>> scale_epochs({"stage2_epoch": 160, "lr_decay_epochs": (160, 180), "warmup_epochs": 5},
    ...              200, 20)
    {'warmup_epochs': 1, 'stage2_epoch': 16, 'lr_decay_epochs': (16, 18)}
  """
  out: dict[str, Any] = {}
  r = epochs / base_epochs
  for name in EPOCH_FIELDS:
    if name not in values:
      continue
    old = values[name]
    if name == "lr_decay_epochs":
      new = sorted({_round_half_up(d * r) for d in old})
      out[name] = tuple(d for d in new if 1 <= d < epochs)
    elif name == "warmup_epochs":
      out[name] = 0 if old == 0 else max(1, min(_round_half_up(old * r), epochs - 1))
      if epochs == 1:
        out[name] = 0
    else:  # Stage 1 and stage 2 keep at least an epoch each, where the run has two.
      out[name] = 0 if old == 0 else max(1, min(_round_half_up(old * r), epochs - 1))
  return out


# --- making a config -----------------------------------------------------------------------

def _coerce(field: dataclasses.Field, text: str) -> Any:
  """A ``--set`` string as the field's type, or a ValueError naming the key."""
  hint = typing.get_type_hints(Config)[field.name]
  text = text.strip()
  try:
    if hint is bool:
      if text.lower() in ("1", "true", "yes", "on"):
        return True
      if text.lower() in ("0", "false", "no", "off"):
        return False
      raise ValueError
    if hint is int:
      return int(text)
    if hint is float:
      return float(text)
    if hint == tuple[int, ...]:
      return tuple(int(x) for x in text.split(",") if x.strip())
  except ValueError:
    kind = {bool: "true or false", int: "an integer", float: "a number"}.get(
        hint, "comma-separated integers (e.g. 160,180)")
    raise ValueError(f"{field.name} expects {kind}; got {text!r}.") from None
  return text


def make_config(preset: str | None = None, overrides: dict[str, Any] | None = None,
                **kwargs: Any) -> Config:
  """A :class:`Config` from a preset plus overrides (strings are parsed to the field's type).

  When a preset's ``epochs`` is overridden, the preset's epoch-valued fields that are not
  overridden follow it (:func:`scale_epochs`); without a preset nothing is scaled. Without
  ``out_dir``, the run gets :func:`default_out_dir`.

  Examples:
    >>> make_config("digits-lt", {"lam": "2.5"}).lam
    2.5
    >>> make_config("digits-lt", {"lr_decay_epochs": "10,20"}).lr_decay_epochs
    (10, 20)
    >>> c = make_config("cifar10-lt", epochs=20)
    >>> c.stage2_epoch, c.lr_decay_epochs, c.warmup_epochs
    (16, (16, 18), 1)
  """
  values: dict[str, Any] = {}
  if preset is not None:
    if preset not in PRESETS:
      raise ValueError(f"unknown config {preset!r}; choose one of {', '.join(PRESETS)}.")
    values.update(PRESETS[preset])
    values["preset"] = preset
  fields = {f.name: f for f in dataclasses.fields(Config)}
  given: dict[str, Any] = {}
  for key, value in {**(overrides or {}), **kwargs}.items():
    if key not in fields:
      raise ValueError(f"unknown setting {key!r}; valid settings: {', '.join(fields)}.")
    given[key] = _coerce(fields[key], value) if isinstance(value, str) else value
  # A preset is a protocol whose schedule is laid out over its epochs; the bare defaults are
  # not (nothing is scaled without a preset).
  epochs = given.get("epochs")
  if preset is not None and isinstance(epochs, int) and epochs >= 1 \
     and epochs != values.get("epochs", fields["epochs"].default):
    keep = {k: values.get(k, fields[k].default) for k in EPOCH_FIELDS if k not in given}
    values.update(scale_epochs(keep, values.get("epochs", fields["epochs"].default), epochs))
  values.update(given)
  return Config(**values)


# --- a run is its settings -----------------------------------------------------------------

# Fields that do not change what a run computes: where it writes and reads from, how often it
# evaluates or checkpoints, how many processes decode images, when the class-collapse guard
# warns, and the preset's name (the resolved values are what count).
NON_RESULT_FIELDS = frozenset({"out_dir", "eval_every", "checkpoint", "data_workers",
                               "data_dir", "preset", "collapse_weight", "collapse_steps"})
# Result fields added after run folders were named by fingerprint: left out while at their
# default, so that a run started before they existed keeps its folder name and resumes.
OMITTED_AT_DEFAULT = frozenset({"test_per_class", "la_tau"})


def _as_dict(config: Config | Mapping[str, Any]) -> dict[str, Any]:
  if isinstance(config, Config):
    return {f.name: getattr(config, f.name) for f in dataclasses.fields(Config)}
  return dict(config)


def _jsonable(v: Any) -> Any:
  if isinstance(v, (tuple, list)):
    return [_jsonable(x) for x in v]
  if isinstance(v, float) and not math.isfinite(v):
    return str(v)  # "inf", "-inf": standard JSON has no infinities.
  return v


def result_fields(config: Config | Mapping[str, Any]) -> dict[str, Any]:
  """The settings that change what a run computes, JSON-ready (sorted keys).

  ``epochs`` is among them only with ``lr_schedule="cosine"``: with step decays a longer run
  follows a shorter one's trajectory epoch for epoch (a resume may extend a run), whereas a
  cosine schedule's every step depends on the run's length.

  A mapping (a saved ``config.json``) may lack fields added since it was written; they take
  the current defaults.
  """
  d = _as_dict(config)
  defaults = {f.name: f.default for f in dataclasses.fields(Config)}
  out = {}
  for name in sorted(defaults):
    if name in NON_RESULT_FIELDS:
      continue
    if name == "epochs" and d.get("lr_schedule", defaults["lr_schedule"]) != "cosine":
      continue
    value = d.get(name, defaults[name])
    if name in OMITTED_AT_DEFAULT and value == defaults[name]:
      continue
    if isinstance(value, float) or (isinstance(value, int) and not isinstance(value, bool)
                                    and isinstance(defaults[name], float)):
      value = float(value)  # lam=5 and lam=5.0 are one setting.
    if isinstance(value, str) and isinstance(defaults[name], float):
      value = float(value)  # "inf" as written by _jsonable.
    out[name] = _jsonable(value)
  return out


def fingerprint(config: Config | Mapping[str, Any]) -> str:
  """A 16-hex-digit SHA-256 of :func:`result_fields`: equal exactly when they are.

  Examples:
    >>> a = make_config("digits-lt")
    >>> fingerprint(a) == fingerprint(make_config("digits-lt", out_dir="elsewhere"))
    True
    >>> fingerprint(a) == fingerprint(make_config("digits-lt", method="sgd"))
    False
  """
  text = json.dumps(result_fields(config), sort_keys=True, separators=(",", ":"))
  return hashlib.sha256(text.encode()).hexdigest()[:16]


def diff_configs(a: Config | Mapping[str, Any], b: Config | Mapping[str, Any]) -> list[str]:
  """The sorted names of the result fields that differ between ``a`` and ``b``.

  Examples:
    >>> diff_configs(make_config("digits-lt"), make_config("digits-lt", method="sgd", lr=0.5))
    ['lr', 'method']
  """
  ra, rb = result_fields(a), result_fields(b)
  return sorted(k for k in ra.keys() | rb.keys() if ra.get(k) != rb.get(k))


def default_out_dir(config: Config) -> str:
  """``runs/<preset or dataset>/<method>[-lam<lam>]-<fingerprint[:8]>``.

  The method and lam make the folder readable; the fingerprint tells every other setting
  apart, so two commands that compute different things never share a folder.

  Examples:
    >>> default_out_dir(make_config("digits-lt")).startswith("runs/digits-lt/absgd-lam5-")
    True
  """
  label = config.method
  if config.kl_budget > 0:
    label += f"-kl{config.kl_budget:g}"
  elif config.method in WEIGHTED_METHODS:
    label += f"-lam{config.lam:g}"
  return f"runs/{config.preset or config.dataset}/{label}-{fingerprint(config)[:8]}"


def config_to_dict(config: Config) -> dict[str, Any]:
  """Every field, JSON-ready (tuples as lists, infinities as "inf")."""
  return {k: _jsonable(v) for k, v in _as_dict(config).items()}


def config_from_dict(d: Mapping[str, Any]) -> Config:
  """The :class:`Config` of :func:`config_to_dict`'s output (unknown keys are ignored)."""
  fields = {f.name: f for f in dataclasses.fields(Config)}
  hints = typing.get_type_hints(Config)
  values = {}
  for k, v in d.items():
    if k not in fields:
      continue
    if hints[k] == tuple[int, ...]:
      v = tuple(v)
    elif hints[k] is float and isinstance(v, str):
      v = float(v)
    values[k] = v
  return Config(**values)


CONFIG_FILE = "config.json"


def write_run_config(config: Config, out_dir: str | None = None) -> None:
  """Writes ``{"config": <every field>, "fingerprint": ...}`` to ``out_dir/config.json``.

  ``out_dir`` (default ``config.out_dir``) may be a local path or a URL (gs://...).
  """
  from etils import epath
  out = epath.Path(out_dir or config.out_dir)
  out.mkdir(parents=True, exist_ok=True)
  tmp = out / (CONFIG_FILE + ".tmp")
  tmp.write_text(json.dumps({"config": config_to_dict(config),
                             "fingerprint": fingerprint(config)}, indent=1))
  tmp.replace(out / CONFIG_FILE)


def read_run_config(out_dir: str) -> dict[str, Any] | None:
  """The settings saved in ``out_dir/config.json`` (its ``"config"``), or None if none.

  Raises:
    ValueError: for a file that is not JSON, saying what to do.
  """
  from etils import epath
  path = epath.Path(out_dir) / CONFIG_FILE
  if not path.exists():
    return None
  try:
    record = json.loads(path.read_text())
  except json.JSONDecodeError as e:
    raise ValueError(f"{path} is not valid JSON ({e}): restore it, or pass --new-run "
                     "(new_run=True) to start this run again in that folder.") from None
  return record.get("config", record)


class RunMismatchError(ValueError):
  """``out_dir`` holds a run with other settings than the ones asked for."""


def check_resume(saved: Mapping[str, Any] | None, config: Config, *,
                 last_epoch: int | None = None, new_run: bool = False) -> None:
  """Refuses to resume a run whose saved settings differ from ``config``'s.

  Args:
    saved: the run's ``config.json`` (:func:`read_run_config`), or None for a fresh folder.
    config: the settings asked for now.
    last_epoch: the epoch of the newest checkpoint in ``out_dir``, if any.
    new_run: the user asked to start afresh (``--new-run``): nothing is checked.

  Raises:
    RunMismatchError: naming each differing key with its saved and requested values, or a
      checkpoint beyond the requested ``epochs``; the message says how to proceed.
  """
  if new_run:
    return
  if saved is None:
    if last_epoch is not None:
      raise RunMismatchError(
          f"{config.out_dir} holds checkpoints (epoch {last_epoch}) but no {CONFIG_FILE}, so "
          "its settings are unknown. Use another out_dir (--out), or --new-run to start afresh "
          "there.")
    return
  keys = diff_configs(saved, config)
  if keys:
    old, new = result_fields(saved), result_fields(config)
    moved = checks.moved_schedule(config.out_dir, saved.get("epochs"), config.epochs,
                                  {k: (old.get(k), new.get(k)) for k in keys}, EPOCH_FIELDS)
    if moved:
      raise RunMismatchError(moved)
    lines = "; ".join(f"{k}: {old.get(k)!r} in the saved run, {new.get(k)!r} now" for k in keys)
    raise RunMismatchError(
        f"{config.out_dir} holds a run with other settings ({lines}). Resuming would mix two "
        "runs. Use another out_dir (--out, or leave it unset for one per setting), or "
        "--new-run (new_run=True) to start afresh there.")
  if last_epoch is not None and last_epoch + 1 > config.epochs:
    raise RunMismatchError(
        f"{config.out_dir} holds a run already trained to epoch {last_epoch + 1}, past the "
        f"epochs={config.epochs} asked for: its results would not be those of a "
        f"{config.epochs}-epoch run. Use another out_dir, or --new-run to start afresh there.")


def claim_run_dir(config: Config, *, last_epoch: int | None,
                  new_run: bool = False) -> dict[str, Any] | None:
  """Checks ``config.out_dir``'s saved settings against ``config`` and records ``config`` there.

  The loop's one call before it restores anything: :func:`read_run_config`,
  :func:`check_resume`, then :func:`write_run_config`. With ``new_run`` the caller must also
  drop the old checkpoints (:meth:`absgd_jax.train.checkpoint.Checkpointer.delete_all`).

  Returns:
    The settings that were saved there before (None for a fresh folder).

  Raises:
    RunMismatchError: see :func:`check_resume`.
  """
  saved = read_run_config(config.out_dir)
  check_resume(saved, config, last_epoch=last_epoch, new_run=new_run)
  write_run_config(config)
  return saved


def validate_for_data(config: Config, n_train: int, n_devices: int,
                      n_processes: int = 1) -> None:
  """Checks the batch size against the training split and the devices, before the first step.

  Raises:
    ValueError: naming ``batch_size`` and what it must divide or not exceed.
  """
  B = config.batch_size
  if n_train < 1:
    raise ValueError(f"the training split of {config.dataset} is empty (after imbalance, "
                     "validation and meta splits): check n_max, rho and val_fraction.")
  if B > n_train:
    raise ValueError(f"batch_size={B} exceeds the {n_train} training examples of this run "
                     f"({config.dataset} after imbalance and splits): choose batch_size <= "
                     f"{n_train}.")
  if B % n_devices:
    fit = max(n_devices, B - B % n_devices)
    raise ValueError(f"batch_size={B} must be a multiple of the {n_devices} devices, so that "
                     f"the batch splits evenly: e.g. batch_size={fit}.")
  if B % n_processes:
    raise ValueError(f"batch_size={B} must be a multiple of the {n_processes} processes.")
