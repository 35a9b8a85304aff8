"""Run configuration: one frozen dataclass whose fields carry their own choices and ranges.

Each field that has a set of valid values says so where it is declared
(``field(metadata={"choices": ...})`` or ``{"range": "[0, 1)"}``), and :class:`Config` checks
every value on construction: a bad one is answered with its key and what is allowed, before
any data is read. What else the kit does with a config lives beside what it concerns:

- the paper's presets and :func:`~absgd_jax.train.presets.make_config`:
  :mod:`absgd_jax.train.presets`;
- the fingerprint, the run folder's name, ``config.json`` and the resume check:
  :mod:`absgd_jax.train.run_folder` (the run resolves an empty ``out_dir``; a Config does not);
- the checks that need the data (the batch against the training split and the devices):
  :func:`absgd_jax.train.experiment_data.validate_for_data`.

Examples:
  >>> Config.parse_value("lr_decay_epochs", "160,180")
  (160, 180)
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import os
import typing
from typing import Any

from absgd_jax.data.facts import FACTS, facts
from absgd_jax.optimizers import MOMENTUM_FORMS
from absgd_jax.train import checks

METHODS = ("sgd", "absgd", "adam", "abadam", "eg", "l2rw")
# The methods whose per-sample weights switch on at stage2_epoch (lam = inf before it).
WEIGHTED_METHODS = ("absgd", "abadam", "eg")
MODELS = (
  "mlp",
  "cnn4",
  "resnet8",
  "resnet20",
  "resnet32",
  "resnet18",
  "resnet34",
  "resnet50",
  "resnet101",
  "resnet152",
)


def _choice(default: str, choices) -> Any:
  return dataclasses.field(default=default, metadata={"choices": tuple(choices)})


def _within(default: Any, allowed: str) -> Any:
  """A numeric field and its range: "[0, 1)", "(0, 1]", ">= 0" or "> 0"."""
  return dataclasses.field(default=default, metadata={"range": allowed})


def _in_range(x: float, allowed: str) -> bool:
  if math.isnan(x):
    return False
  if allowed.startswith(">"):
    low = float(allowed.lstrip(">=").strip())
    return x >= low if allowed.startswith(">=") else x > low
  low, high = (float(v) for v in allowed[1:-1].split(","))
  return ((x >= low) if allowed[0] == "[" else (x > low)) and (
    (x <= high) if allowed[-1] == "]" else (x < high)
  )


@dataclasses.dataclass(frozen=True)
class Config:
  """Everything a run depends on. Epoch-valued fields count from 0.

  Every value is checked on construction (:meth:`__post_init__`): its type, its choices or
  range (the field's metadata), and the epoch-valued fields against ``epochs``. A bad value
  raises ``ValueError`` naming the key, the value and what is allowed, before any data is read.

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
  dataset: str = _choice("digits", FACTS)
  source: str = _choice("zip", ("zip", "tfds"))  # CIFAR: an image-folder zip, or tfds.
  # CIFAR: holds train.zip / test.zip, or tfds data ("" is tfds' own default). File-list data
  # sets: the folder the images' relative paths start from (and the lists, when relative).
  data_dir: str = ""
  # File-list data sets: the training and test split lists, "relative/path label" lines
  # (iNaturalist: its JSON), relative to data_dir unless absolute.
  train_list: str = ""
  test_list: str = ""
  classes: int = _within(0, ">= 0")  # The number of classes of dataset="image-list".
  # File lists: random-resized crop (train) / center crop (test) side, and the test images'
  # shorter side before the crop.
  crop_size: int = _within(224, ">= 1")
  resize_size: int = _within(256, ">= 1")
  data_workers: int = _within(8, ">= 0")  # File lists: grain processes that decode and crop.
  # Shrinks the images to image_size x image_size by area averaging (0 keeps them); it must
  # divide the source's side. A CPU-sized protocol (experiments/cifar_table.py) uses 16.
  image_size: int = _within(0, ">= 0")
  imbalance: str = _choice("none", ("none", "exp", "step"))
  rho: float = _within(100.0, ">= 1")
  # The head class's size before imbalance (0: the smallest class's, 5000 on CIFAR-10). With
  # imbalance="none" a positive n_max keeps n_max images of every class.
  n_max: int = _within(0, ">= 0")
  # 0 evaluates on the whole test set. n > 0 keeps the first n test images of every class:
  # for smoke runs, where evaluating all 10,000 CIFAR images cost more than training; its
  # accuracies are not the paper's.
  test_per_class: int = _within(0, ">= 0")
  noise: str = _choice("none", ("none", "sym", "asym"))
  noise_rate: float = _within(0.4, "[0, 1)")
  val_fraction: float = _within(0.0, "[0, 1)")  # Held out of training, per class, for tuning.
  augment: bool = True  # CIFAR crop + flip, on the accelerator inside the step.
  crop_padding: int = _within(4, ">= 0")  # The crop's zero padding (4 at 32 px; 2 at 16 px).
  sampler: str = _choice("uniform", ("uniform", "balanced"))
  # Model.
  model: str = _choice("mlp", MODELS)
  head: str = _choice("linear", ("linear", "cosine"))
  # Mixed precision: "bfloat16" computes activations in bfloat16; parameters, BatchNorm
  # statistics, the losses, the ABSGD weights and their state stay float32.
  dtype: str = _choice("float32", ("float32", "bfloat16"))
  # Start from these weights instead of a random init: an absgd_jax run directory (its latest
  # checkpoint's params and BatchNorm statistics: stage 1 of a two-stage run), or a torchvision
  # / timm ResNet state dict (.pth, .npz). The optimizer, step count and ABSGD state start fresh.
  init_from: str = ""
  # What init_from's classifier does: "keep" it, or "drop" it for a fresh one (other classes).
  init_head: str = _choice("keep", ("keep", "drop"))
  # Objective.
  method: str = _choice("absgd", METHODS)
  # la: logit-adjusted CE (tau = la_tau); bs: balanced softmax. Both take the training prior.
  loss: str = _choice("ce", ("ce", "focal", "ldam", "la", "bs", "sce", "gce", "tce"))
  class_weighting: str = _choice("none", ("none", "cb", "drw"))
  cb_beta: float = _within(0.9999, "[0, 1)")
  drw_epoch: int = _within(160, ">= 0")
  focal_gamma: float = _within(1.0, ">= 0")
  ldam_max_m: float = _within(0.5, "> 0")
  ldam_scale: float = _within(30.0, "> 0")
  la_tau: float = _within(1.0, ">= 0")  # Menon et al.'s tau for loss="la" (theirs on CIFAR-LT)
  sce_alpha: float = _within(0.1, ">= 0")
  sce_beta: float = _within(1.0, ">= 0")
  gce_q: float = _within(0.7, "(0, 1]")
  # Truncated GCE has zero gradient wherever p_y <= tce_k, which from a random start is every
  # sample when C > 2: start it from a model trained with gce.
  tce_k: float = _within(0.5, "(0, 1)")
  # ABSGD. lam: nonzero (> 0 for imbalance, < 0 for noisy labels, +-inf for plain SGD).
  lam: float = 1.0
  gamma: float = _within(0.9, "(0, 1]")
  # > 0: lam is not fixed but set online so that KL(weights || uniform) stays near this budget
  # (absgd_jax.kl_absgd_weights; docs/kl_budget.md relates it to the effective sample size).
  # lam's sign picks the side: lam > 0 up-weights hard samples, lam < 0 easy ones (noise).
  # 0.01 held within about a point of the grid-tuned lam on every digits imbalance cell, for
  # CE, focal and CB-LDAM alike (docs/results/kl_budget.md). lam is then unused. 0 = off.
  kl_budget: float = _within(0.0, ">= 0")
  # How the budget's batch guard bounds one batch's KL (absgd_jax.kl_absgd_weights'
  # batch_guard): "auto" is "range" for lam > 0 and "kl" for lam < 0; "none" turns it off.
  kl_guard: str = _choice("auto", ("auto", "range", "kl", "none"))
  # Learning to reweight (method="l2rw"): a clean, balanced meta set carved from the training
  # data, up to this many per class (at most half of a class).
  meta_per_class: int = _within(10, ">= 1")
  # lam = inf (plain SGD) before this epoch, then lam (Section 3.6). For SGD/Adam, which have
  # no lam, it only marks where stage2_trainable starts freezing.
  stage2_epoch: int = _within(0, ">= 0")
  # What stage 2 trains: all, the classifier, or it + the last block.
  stage2_trainable: str = _choice("all", ("all", "fc", "fc+lb"))
  # Optimisation.
  epochs: int = _within(30, ">= 1")
  batch_size: int = _within(128, ">= 1")
  lr: float = _within(0.1, "> 0")
  momentum: float = _within(0.9, "[0, 1)")
  # How the learning rate meets the momentum (absgd_jax.absgd): "pytorch" is torch.optim.SGD
  # and optax.sgd, which the authors' code ran; "paper" is Eq. (2) to the letter. They differ
  # only when the rate changes (see absgd's docstring for the measured reason of the default).
  momentum_form: str = _choice("pytorch", MOMENTUM_FORMS)
  weight_decay: float = _within(2e-4, ">= 0")
  warmup_epochs: int = _within(0, ">= 0")
  # "step": lr_decay_epochs; "cosine": to 0 at the last epoch.
  lr_schedule: str = _choice("step", ("step", "cosine"))
  lr_decay_epochs: tuple[int, ...] = ()
  lr_decay_factor: float = _within(0.1, "(0, 1]")
  # The lam < 0 guard (absgd_jax.train.health.ClassCollapseGuard): warn when a class's mean
  # weight (1 is the batch's mean) stays below collapse_weight for collapse_steps steps in a
  # row while lam < 0, the sign of a class given up. collapse_steps=0 turns the guard off.
  collapse_weight: float = _within(0.05, "[0, 1)")
  collapse_steps: int = _within(50, ">= 0")
  # Run.
  seed: int = _within(0, ">= 0")
  eval_every: int = _within(1, ">= 1")
  checkpoint: bool = True
  # Epochs between checkpoints (the last epoch is always saved). On a fast accelerator an
  # orbax save per epoch can cost as much as a CIFAR epoch's training; a resume then starts
  # from the last saved epoch and trains the rest again, to the same numbers.
  checkpoint_every: int = _within(1, ">= 1")
  # Where the run writes its config, metrics and checkpoints. "": the run names one from the
  # preset, the method, lam and the fingerprint (absgd_jax.train.run_folder.resolve_out_dir),
  # so two settings never share one.
  out_dir: str = ""
  # The preset the run started from (make_config sets it): a label, not a setting.
  preset: str = ""

  def __post_init__(self):
    hints = typing.get_type_hints(Config)
    for f in dataclasses.fields(self):
      value = _check_type(f.name, getattr(self, f.name), hints[f.name])
      object.__setattr__(self, f.name, value)
      if "choices" in f.metadata and value not in f.metadata["choices"]:
        raise ValueError(f"{f.name}={value!r} is not one of {', '.join(f.metadata['choices'])}.")
      allowed = f.metadata.get("range")
      if allowed is not None and not _in_range(value, allowed):
        raise ValueError(
          f"{f.name}={value!r} is outside the allowed range: {f.name} must "
          f"{'lie in' if allowed[0] in '[(' else 'be'} {allowed}."
        )
      if allowed is not None and isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{f.name}={value!r} must be finite.")
    self._check_combinations()
    self._check_epochs()

  def _check_combinations(self) -> None:
    """Settings that are valid alone but not together."""
    if self.lam == 0 or math.isnan(self.lam):
      raise ValueError(
        f"lam={self.lam} is not allowed: lam must be nonzero (> 0 for "
        "imbalance, < 0 for noisy labels, +-inf for plain SGD)."
      )
    if self.kl_budget > 0 and self.method not in ("absgd", "abadam"):
      raise ValueError(
        f"kl_budget={self.kl_budget} sets ABSGD's lam: it needs method='absgd' or "
        f"'abadam', not {self.method!r} (set kl_budget=0)."
      )
    checks.kl_budget(self.kl_budget, self.batch_size)
    if self.sce_alpha == 0 and self.sce_beta == 0:
      raise ValueError("sce_alpha=0 and sce_beta=0 make the SCE loss 0: give one > 0.")
    if self.dataset == "image-list" and self.classes < 1:
      raise ValueError("dataset='image-list' needs classes=<number of classes> (>= 1).")
    if self.streamed and self.image_size:
      raise ValueError(
        f"image_size={self.image_size} downsamples in-memory data; streamed "
        "file lists use crop_size and resize_size (set image_size=0)."
      )
    if self.streamed and self.method == "l2rw":
      raise ValueError(
        "method='l2rw' needs an in-memory meta set; it is not available for "
        "streamed file-list data sets."
      )
    if self.noise == "asym" and facts(self.dataset).asym_noise is None:
      with_asym = [n for n, f in FACTS.items() if f.asym_noise is not None]
      raise ValueError(
        f"noise='asym' has no mapping for dataset={self.dataset!r}; it exists "
        f"for {', '.join(with_asym)} (or use noise='sym')."
      )
    if not self.crop_size <= self.resize_size:
      raise ValueError(
        f"need crop_size <= resize_size; got crop_size={self.crop_size}, "
        f"resize_size={self.resize_size}."
      )
    if self.lr_schedule == "cosine" and self.lr_decay_epochs:
      raise ValueError(
        "lr_schedule='cosine' decays to 0 by itself; drop lr_decay_epochs "
        f"({self.lr_decay_epochs}) or use lr_schedule='step'."
      )
    if self.loss == "ldam" and self.head != "cosine":
      raise ValueError("loss='ldam' expects a normalised classifier: set head='cosine'.")
    # Larger than the whole training split: every step would be one padded batch (and the
    # process may be killed for memory before it says so).
    size = facts(self.dataset).train_size
    if size and self.batch_size > size:
      raise ValueError(
        f"batch_size={self.batch_size} exceeds the {size} training images of "
        f"{self.dataset}: choose batch_size <= {size} (the split after imbalance "
        "is smaller still)."
      )

  def _check_epochs(self) -> None:
    """Epoch-valued fields against the run's length: nothing asked for may silently not happen."""
    e = self.epochs
    if self.warmup_epochs and self.warmup_epochs >= e:
      raise ValueError(
        f"warmup_epochs={self.warmup_epochs} must be < epochs={e}: the learning "
        "rate would never reach lr."
      )
    decays = self.lr_decay_epochs
    if any(b <= a for a, b in zip(decays, decays[1:])):
      raise ValueError(f"lr_decay_epochs={decays} must be strictly increasing.")
    late = [d for d in decays if not 1 <= d < e]
    if late:
      raise ValueError(
        f"lr_decay_epochs={decays} has {late} outside 1..{e - 1} (epochs={e}): "
        "that decay would never happen. Drop it or raise epochs."
      )
    if self.method in WEIGHTED_METHODS and self.stage2_epoch >= e:
      raise ValueError(
        f"stage2_epoch={self.stage2_epoch} must be < epochs={e} with method="
        f"{self.method!r}: its weights (lam={self.lam:g}) switch on at stage2_epoch, so this "
        "run would be plain momentum SGD. Set stage2_epoch=0 (weights from the first step), "
        "a smaller stage2_epoch, or more epochs."
      )
    if self.stage2_trainable != "all" and self.stage2_epoch >= e:
      raise ValueError(
        f"stage2_epoch={self.stage2_epoch} must be < epochs={e} with "
        f"stage2_trainable={self.stage2_trainable!r}: stage 2 would never start."
      )
    if self.class_weighting == "drw" and self.drw_epoch >= e:
      raise ValueError(
        f"drw_epoch={self.drw_epoch} must be < epochs={e} with "
        "class_weighting='drw': the class weights would never switch on."
      )

  @property
  def num_classes(self) -> int:
    if self.dataset == "image-list":
      return self.classes
    return facts(self.dataset).num_classes

  @property
  def streamed(self) -> bool:
    """Whether the data are image files read batch by batch (not held in memory)."""
    return facts(self.dataset).streamed

  @staticmethod
  def parse_value(name: str, text: str) -> Any:
    """A ``--set`` string as field ``name``'s type, or a ValueError naming the key."""
    hint = typing.get_type_hints(Config)[name]
    text = text.strip()
    try:
      if hint is bool:
        if text.lower() in ("1", "true", "yes", "on"):
          return True
        if text.lower() in ("0", "false", "no", "off"):
          return False
        raise ValueError
      if hint in (int, float):
        return hint(text)
      if hint == tuple[int, ...]:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
      kind = {bool: "true or false", int: "an integer", float: "a number"}.get(
        hint, "comma-separated integers (e.g. 160,180)"
      )
      raise ValueError(f"{name} expects {kind}; got {text!r}.") from None
    return text


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


# Names that lived here before the presets and the run folder had their own modules: still
# importable from here (looked up on first use, as those modules import this one).
_MOVED = {
  **dict.fromkeys(("PRESETS", "make_config", "scale_epochs", "EPOCH_FIELDS"), "presets"),
  "validate_for_data": "experiment_data",
  **dict.fromkeys(
    (
      "fingerprint",
      "result_fields",
      "diff_configs",
      "default_out_dir",
      "config_to_dict",
      "config_from_dict",
      "write_run_config",
      "read_run_config",
      "RunMismatchError",
      "check_resume",
      "claim_run_dir",
      "CONFIG_FILE",
      "NON_RESULT_FIELDS",
      "OMITTED_AT_DEFAULT",
    ),
    "run_folder",
  ),
}


def __getattr__(name: str) -> Any:
  if name not in _MOVED:
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
  import importlib

  return getattr(importlib.import_module(f"absgd_jax.train.{_MOVED[name]}"), name)
