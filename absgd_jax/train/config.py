"""Run configuration: a frozen dataclass in sections, each setting declared with its help.

A :class:`Config` holds the run's ``method`` and ``seed`` and one section per concern:
``data``, ``input``, ``model``, ``loss``, ``weighting``, ``optim``, ``schedule`` and ``run``.
Every setting is a field declared with :func:`setting`: its default, one line of help, and
its choices or range, which the section checks on construction. A check that ties two
settings of one section sits in that section's ``check``; one across sections sits in
:meth:`Config.check`. A bad value is answered with its key and what is allowed, before any
data is read.

Every setting also has a key, its name on the command line and in ``config.json``: ``lr`` for
``optim.lr``, ``focal_gamma`` for ``loss.focal.gamma``. The keys are unique, so ``--set
lr=0.1`` and ``--set optim.lr=0.1`` are the same setting (:meth:`Config.path`). What else the
kit does with a config lives beside what it concerns:

- the paper's presets and :func:`~absgd_jax.train.presets.make_config`:
  :mod:`absgd_jax.train.presets`;
- the fingerprint, the run folder's name, ``config.json`` and the resume check:
  :mod:`absgd_jax.train.run_folder` (the run resolves an empty ``out_dir``; a Config does not);
- the checks that need the data (the batch against the training split and the devices):
  :func:`absgd_jax.train.experiment_data.validate_for_data`.

Examples:
  >>> c = Config.from_flat({"dataset": "digits", "lr": 0.05, "focal_gamma": 2.0})
  >>> c.optim.lr, c.loss.focal.gamma
  (0.05, 2.0)
  >>> c.replace(**{"optim.lr": 0.2}).optim.lr
  0.2
  >>> Config.parse_value("lr_decay_epochs", "160,180")
  (160, 180)
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import numbers
import os
import typing
from collections.abc import Iterator, Mapping
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
LOSSES = ("ce", "focal", "ldam", "la", "bs", "sce", "gce", "tce")


def setting(
  default: Any,
  help: str,
  *,
  choices: tuple | None = None,
  range: str | None = None,
  key: str | None = None,
  result: bool = True,
  new: bool = False,
  epoch: bool = False,
) -> Any:
  """A setting's field: its default and one line of help, and what the run does with it.

  Args:
    default: the value when none is given.
    help: one line for ``absgd-train --settings``.
    choices: the values allowed, if a fixed set.
    range: the numbers allowed: "[0, 1)", "(0, 1]", ">= 0" or "> 0".
    key: its name on the command line and in ``config.json``, where it differs from the
      field's name (``lr_decay_epochs`` is its own; ``loss.focal.gamma`` is ``focal_gamma``).
    result: whether it changes what a run computes, so names its folder and must match on
      resume (False for where it writes, how often it evaluates, ...).
    new: left out of the fingerprint while at its default, so that the folders of runs made
      before the setting existed keep their names.
    epoch: an epoch-valued setting, which follows a preset's ``epochs`` when that is
      overridden (:func:`absgd_jax.train.presets.scale_epochs`).
  """
  meta = dict(help=help, result=result, new=new, epoch=epoch)
  if choices is not None:
    meta["choices"] = tuple(choices)
  if range is not None:
    meta["range"] = range
  if key is not None:
    meta["key"] = key
  if isinstance(default, (list, tuple)):
    default = tuple(default)
  return dataclasses.field(default=default, metadata=meta)


def section(cls: type, help: str) -> Any:
  """A section's field in the config that holds it."""
  return dataclasses.field(default_factory=cls, metadata=dict(section=True, help=help))


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


def _check_type(key: str, value: Any, hint: Any) -> Any:
  """``value`` as the setting's type, or a ValueError naming the key."""

  def bad(kind):
    return ValueError(f"{key} expects {kind}; got {value!r} ({type(value).__name__}).")

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


class _Section:
  """A frozen dataclass of settings: each checked against its field's metadata on
  construction, then the section's own cross-setting checks (:meth:`check`)."""

  def __post_init__(self):
    hints = typing.get_type_hints(type(self))
    for f in dataclasses.fields(self):
      if f.metadata.get("section"):
        continue
      key = f.metadata.get("key", f.name)
      value = _check_type(key, getattr(self, f.name), hints[f.name])
      object.__setattr__(self, f.name, value)
      if "choices" in f.metadata and value not in f.metadata["choices"]:
        raise ValueError(f"{key}={value!r} is not one of {', '.join(f.metadata['choices'])}.")
      allowed = f.metadata.get("range")
      if allowed is not None and not _in_range(value, allowed):
        raise ValueError(
          f"{key}={value!r} is outside the allowed range: {key} must "
          f"{'lie in' if allowed[0] in '[(' else 'be'} {allowed}."
        )
      if allowed is not None and isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{key}={value!r} must be finite.")
    self.check()

  def check(self) -> None:
    """The checks that tie this section's settings together (none by default)."""


# --- the sections ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Data(_Section):
  """Which data set, and how it is made imbalanced, noisy, small or split."""

  dataset: str = setting("digits", "the data set", choices=tuple(FACTS))
  source: str = setting(
    "zip", "CIFAR: an image-folder zip, or tensorflow-datasets", choices=("zip", "tfds")
  )
  data_dir: str = setting(
    "",
    "CIFAR: the folder of train.zip/test.zip (or tfds data); file lists: the images' root",
    result=False,
  )
  train_list: str = setting("", "file lists: the training split ('path label' lines, or JSON)")
  test_list: str = setting("", "file lists: the test split")
  classes: int = setting(0, "the number of classes of dataset=image-list", range=">= 0")
  imbalance: str = setting(
    "none", "the imbalance profile of the training set", choices=("none", "exp", "step")
  )
  rho: float = setting(100.0, "the imbalance ratio, largest class over smallest", range=">= 1")
  n_max: int = setting(
    0,
    "the head class's size before imbalance (0: the smallest class's); with imbalance=none, "
    "n_max of every class: makes a run small",
    range=">= 0",
  )
  test_per_class: int = setting(
    0,
    "the first n test images of every class (0: all): makes evaluation small; its accuracies "
    "are not the paper's",
    range=">= 0",
    new=True,
  )
  noise: str = setting("none", "label noise", choices=("none", "sym", "asym"))
  noise_rate: float = setting(0.4, "the fraction of flipped labels", range="[0, 1)")
  val_fraction: float = setting(
    0.0, "held out of training, per class, for tuning (before the noise)", range="[0, 1)"
  )
  sampler: str = setting(
    "uniform", "the order of the training set", choices=("uniform", "balanced")
  )

  def check(self) -> None:
    if self.dataset == "image-list" and self.classes < 1:
      raise ValueError("dataset='image-list' needs classes=<number of classes> (>= 1).")
    if self.noise == "asym" and facts(self.dataset).asym_noise is None:
      with_asym = [n for n, f in FACTS.items() if f.asym_noise is not None]
      raise ValueError(
        f"noise='asym' has no mapping for dataset={self.dataset!r}; it exists "
        f"for {', '.join(with_asym)} (or use noise='sym')."
      )


@dataclasses.dataclass(frozen=True)
class Input(_Section):
  """How images reach the model: their size, the augmentation, the pipeline."""

  image_size: int = setting(
    0,
    "shrink the images to this side by area averaging (0 keeps them; it must divide the "
    "source's side): makes a run small",
    range=">= 0",
  )
  crop_size: int = setting(
    224, "file lists: the training crop / test center crop side", range=">= 1"
  )
  resize_size: int = setting(
    256, "file lists: the test images' shorter side before the crop", range=">= 1"
  )
  augment: bool = setting(True, "CIFAR: random crop and flip, on the device inside the step")
  crop_padding: int = setting(
    4, "CIFAR: the crop's zero padding (4 at 32 px, 2 at 16 px)", range=">= 0"
  )
  workers: int = setting(
    8,
    "file lists: grain processes that decode and crop",
    range=">= 0",
    key="data_workers",
    result=False,
  )
  pipeline: str = setting(
    "auto",
    "host: batches sent per step; device: the training set kept on the device and an epoch "
    "run in one call; auto: device where it fits",
    choices=("host", "device", "auto"),
    key="input_pipeline",
    result=False,
  )

  def check(self) -> None:
    if not self.crop_size <= self.resize_size:
      raise ValueError(
        f"need crop_size <= resize_size; got crop_size={self.crop_size}, "
        f"resize_size={self.resize_size}."
      )


@dataclasses.dataclass(frozen=True)
class Model(_Section):
  """The network, where it starts from, and what trains."""

  name: str = setting("mlp", "the network", choices=MODELS, key="model")
  head: str = setting(
    "linear",
    "the classifier: linear, or cosine (normalised, for LDAM)",
    choices=("linear", "cosine"),
  )
  dtype: str = setting(
    "float32",
    "bfloat16 computes activations in bfloat16; parameters, BatchNorm statistics, losses and "
    "weights stay float32",
    choices=("float32", "bfloat16"),
  )
  init_from: str = setting(
    "",
    "start from an absgd_jax run folder (its latest checkpoint) or a torchvision/timm state "
    "dict (.pth, .npz)",
  )
  init_head: str = setting(
    "keep", "what init_from's classifier does: keep it, or drop it", choices=("keep", "drop")
  )
  stage2_trainable: str = setting(
    "all",
    "what trains from stage2_epoch on: all, the classifier, or it and the last block",
    choices=("all", "fc", "fc+lb"),
  )


@dataclasses.dataclass(frozen=True)
class Focal(_Section):
  """The focal loss (loss=focal)."""

  gamma: float = setting(
    1.0, "focal: the focusing parameter (0 is CE)", range=">= 0", key="focal_gamma"
  )


@dataclasses.dataclass(frozen=True)
class Ldam(_Section):
  """LDAM (loss=ldam, with head=cosine)."""

  max_m: float = setting(0.5, "LDAM: the rarest class's margin", range="> 0", key="ldam_max_m")
  scale: float = setting(30.0, "LDAM: the logit scale s", range="> 0", key="ldam_scale")


@dataclasses.dataclass(frozen=True)
class LogitAdjustment(_Section):
  """Logit-adjusted CE (loss=la)."""

  tau: float = setting(
    1.0, "logit adjustment: the scale of the log prior", range=">= 0", key="la_tau", new=True
  )


@dataclasses.dataclass(frozen=True)
class Sce(_Section):
  """Symmetric cross-entropy (loss=sce)."""

  alpha: float = setting(0.1, "SCE: the weight of the CE term", range=">= 0", key="sce_alpha")
  beta: float = setting(1.0, "SCE: the weight of the reverse CE term", range=">= 0", key="sce_beta")

  def check(self) -> None:
    if self.alpha == 0 and self.beta == 0:
      raise ValueError("sce_alpha=0 and sce_beta=0 make the SCE loss 0: give one > 0.")


@dataclasses.dataclass(frozen=True)
class Gce(_Section):
  """Generalized cross-entropy (loss=gce, and tce's q)."""

  q: float = setting(0.7, "GCE and TCE: q of the Lq loss", range="(0, 1]", key="gce_q")


@dataclasses.dataclass(frozen=True)
class Tce(_Section):
  """Truncated GCE (loss=tce): zero gradient where p_y <= k, so start it from a gce run."""

  k: float = setting(0.5, "TCE: the truncation threshold on p_y", range="(0, 1)", key="tce_k")


@dataclasses.dataclass(frozen=True)
class Loss(_Section):
  """The per-sample loss, its class weights, and each loss's own settings."""

  name: str = setting(
    "ce",
    "the loss: ce, focal, ldam, la (logit-adjusted), bs (balanced softmax), sce, gce, tce",
    choices=LOSSES,
    key="loss",
  )
  class_weighting: str = setting(
    "none",
    "class weights: class-balanced, or class-balanced from drw_epoch on",
    choices=("none", "cb", "drw"),
  )
  cb_beta: float = setting(0.9999, "the class-balanced weights' beta", range="[0, 1)")
  drw_epoch: int = setting(
    160, "DRW: the epoch the class weights switch on", range=">= 0", epoch=True
  )
  focal: Focal = section(Focal, "the focal loss")
  ldam: Ldam = section(Ldam, "LDAM")
  la: LogitAdjustment = section(LogitAdjustment, "logit adjustment")
  sce: Sce = section(Sce, "symmetric cross-entropy")
  gce: Gce = section(Gce, "generalized cross-entropy")
  tce: Tce = section(Tce, "truncated GCE")


@dataclasses.dataclass(frozen=True)
class Weighting(_Section):
  """ABSGD's weights: lam, gamma, the KL budget, when they switch on, the lam < 0 guard."""

  lam: float = setting(1.0, "nonzero: > 0 for imbalance, < 0 for noisy labels, +-inf for plain SGD")
  gamma: float = setting(
    0.9, "the moving average's rate of s (1: the current batch alone)", range="(0, 1]"
  )
  kl_budget: float = setting(
    0.0,
    "> 0: lam is set online so that KL(weights || uniform) stays near this budget (its side "
    "by lam's sign); 0: off",
    range=">= 0",
  )
  kl_guard: str = setting(
    "auto",
    "the KL budget's batch guard: auto (range for lam > 0, kl for lam < 0), range, kl, none",
    choices=("auto", "range", "kl", "none"),
    new=True,
  )
  stage2_epoch: int = setting(
    0,
    "the weights (lam) switch on here, plain SGD before (Section 3.6); for SGD/Adam it only "
    "starts stage2_trainable",
    range=">= 0",
    epoch=True,
  )
  collapse_weight: float = setting(
    0.05, "lam < 0: warn when a class's mean weight stays below this", range="[0, 1)", result=False
  )
  collapse_steps: int = setting(
    50, "lam < 0: ... for this many steps in a row (0: no warning)", range=">= 0", result=False
  )
  meta_per_class: int = setting(
    10, "method=l2rw: the clean, balanced meta set's size per class", range=">= 1"
  )

  def check(self) -> None:
    if math.isnan(self.lam):
      raise ValueError(
        "lam=nan is not a number: give lam a number (> 0 for imbalance, < 0 for noisy "
        "labels, +-inf for plain SGD)."
      )
    if self.lam == 0:
      raise ValueError(
        f"lam={self.lam} is not allowed: lam must be nonzero (> 0 for "
        "imbalance, < 0 for noisy labels, +-inf for plain SGD)."
      )


@dataclasses.dataclass(frozen=True)
class Optim(_Section):
  """The optimizer and the batch."""

  batch_size: int = setting(128, "the global batch", range=">= 1")
  lr: float = setting(0.1, "the learning rate", range="> 0")
  momentum: float = setting(0.9, "the momentum", range="[0, 1)")
  momentum_form: str = setting(
    "pytorch",
    "how the rate meets the momentum: pytorch (torch.optim.SGD, optax.sgd) or paper (Eq. 2)",
    choices=MOMENTUM_FORMS,
  )
  weight_decay: float = setting(2e-4, "L2 on the gradient", range=">= 0")


@dataclasses.dataclass(frozen=True)
class Schedule(_Section):
  """How long the run is, and how the learning rate moves over it."""

  epochs: int = setting(30, "the run's length", range=">= 1")
  warmup_epochs: int = setting(0, "a linear warm-up of the learning rate", range=">= 0", epoch=True)
  lr_schedule: str = setting(
    "step", "step: decays at lr_decay_epochs; cosine: to 0 at the end", choices=("step", "cosine")
  )
  lr_decay_epochs: tuple[int, ...] = setting(
    (), "the epochs the rate is multiplied by lr_decay_factor", epoch=True
  )
  lr_decay_factor: float = setting(0.1, "the step decay's factor", range="(0, 1]")

  def check(self) -> None:
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
    if self.lr_schedule == "cosine" and decays:
      raise ValueError(
        "lr_schedule='cosine' decays to 0 by itself; drop lr_decay_epochs "
        f"({decays}) or use lr_schedule='step'."
      )


@dataclasses.dataclass(frozen=True)
class Run(_Section):
  """Where the run writes, and how often it evaluates and checkpoints."""

  eval_every: int = setting(
    1, "epochs between evaluations (the last is always evaluated)", range=">= 1", result=False
  )
  checkpoint: bool = setting(True, "keep orbax checkpoints, to resume", result=False)
  checkpoint_every: int = setting(
    1, "epochs between checkpoints (the last is always saved)", range=">= 1", result=False
  )
  out_dir: str = setting(
    "",
    "the run's folder ('': one named by the preset, the method, lam and the settings)",
    result=False,
  )
  preset: str = setting("", "the preset the run started from (a label)", result=False)
  on_blow_up: str = setting(
    "warn",
    "a loss several times its recent best, or a collapsed accuracy: warn and go on, or stop "
    "as on a non-finite loss",
    choices=("warn", "stop"),
    result=False,
  )
  tensorboard: bool = setting(
    True, "write TensorBoard event files of the metrics (out_dir/tensorboard/)", result=False
  )


_SECTION_HELP = {
  "data": Data.__doc__,
  "input": Input.__doc__,
  "model": Model.__doc__,
  "loss": Loss.__doc__,
  "weighting": Weighting.__doc__,
  "optim": Optim.__doc__,
  "schedule": Schedule.__doc__,
  "run": Run.__doc__,
}


@dataclasses.dataclass(frozen=True)
class Config(_Section):
  """Everything a run depends on, in sections. Epoch-valued settings count from 0.

  Every value is checked on construction: its type, its choices or range, each section's
  own checks, then the checks across sections (:meth:`check`). A bad value raises
  ``ValueError`` naming the key, the value and what is allowed, before any data is read.

  Examples:
    >>> from absgd_jax.train import Config
    >>> Config.from_flat({"dataset": "digits", "method": "absgd", "lam": -1.0}).weighting.lam
    -1.0
    >>> Config.from_flat({"gamma": 1.5})
    Traceback (most recent call last):
    ...
    ValueError: gamma=1.5 is outside the allowed range: ...
  """

  method: str = setting(
    "absgd", "sgd, absgd (ABSGD), adam, abadam (ABAdam), eg, l2rw", choices=METHODS
  )
  seed: int = setting(
    0, "the init, the batch order, the augmentation and the seeded data", range=">= 0"
  )
  data: Data = section(Data, _SECTION_HELP["data"])
  input: Input = section(Input, _SECTION_HELP["input"])
  model: Model = section(Model, _SECTION_HELP["model"])
  loss: Loss = section(Loss, _SECTION_HELP["loss"])
  weighting: Weighting = section(Weighting, _SECTION_HELP["weighting"])
  optim: Optim = section(Optim, _SECTION_HELP["optim"])
  schedule: Schedule = section(Schedule, _SECTION_HELP["schedule"])
  run: Run = section(Run, _SECTION_HELP["run"])

  # --- checks across sections -----------------------------------------------------------

  def check(self) -> None:
    self._check_method()
    self._check_data_against_model()
    self._check_stages()

  def unused(self, keys) -> list[str]:
    """Which of the settings ``keys`` the data set does not read (``data_dir`` on digits)."""
    dataset = self.data.dataset
    cifar, lists = dataset in ("cifar10", "cifar100"), self.streamed
    used_by = {
      "data_dir": cifar or lists,
      "source": cifar,
      "augment": cifar,
      "crop_padding": cifar,
      "train_list": lists,
      "test_list": lists,
      "crop_size": lists,
      "resize_size": lists,
      "data_workers": lists,
      "classes": dataset == "image-list",
    }
    return [k for k in keys if not used_by.get(k, True)]

  def _check_method(self) -> None:
    """The weights' settings against the method that uses them."""
    w = self.weighting
    if w.kl_budget > 0 and self.method not in ("absgd", "abadam"):
      raise ValueError(
        f"kl_budget={w.kl_budget} sets ABSGD's lam: it needs method='absgd' or "
        f"'abadam', not {self.method!r} (set kl_budget=0)."
      )
    checks.kl_budget(w.kl_budget, self.optim.batch_size)
    if self.streamed and self.method == "l2rw":
      raise ValueError(
        "method='l2rw' needs an in-memory meta set; it is not available for "
        "streamed file-list data sets."
      )

  def _check_data_against_model(self) -> None:
    """The data set against what the input, the loss and the batch make of it."""
    if self.streamed and self.input.image_size:
      raise ValueError(
        f"image_size={self.input.image_size} downsamples in-memory data; streamed "
        "file lists use crop_size and resize_size (set image_size=0)."
      )
    if self.loss.name == "ldam" and self.model.head != "cosine":
      raise ValueError("loss='ldam' expects a normalised classifier: set head='cosine'.")
    # Larger than the whole training split: every step would be one padded batch (and the
    # process may be killed for memory before it says so).
    size, batch = facts(self.data.dataset).train_size, self.optim.batch_size
    if size and batch > size:
      raise ValueError(
        f"batch_size={batch} exceeds the {size} training images of "
        f"{self.data.dataset}: choose batch_size <= {size} (the split after imbalance "
        "is smaller still)."
      )

  def _check_stages(self) -> None:
    """Epoch-valued settings against the run's length: nothing asked for may silently not
    happen."""
    e, stage2 = self.schedule.epochs, self.weighting.stage2_epoch
    if self.method in WEIGHTED_METHODS and stage2 >= e:
      raise ValueError(
        f"stage2_epoch={stage2} must be < epochs={e} with method="
        f"{self.method!r}: its weights (lam={self.weighting.lam:g}) switch on at stage2_epoch, "
        "so this run would be plain momentum SGD. Set stage2_epoch=0 (weights from the first "
        "step), a smaller stage2_epoch, or more epochs."
      )
    if self.model.stage2_trainable != "all" and stage2 >= e:
      raise ValueError(
        f"stage2_epoch={stage2} must be < epochs={e} with "
        f"stage2_trainable={self.model.stage2_trainable!r}: stage 2 would never start."
      )
    if self.loss.class_weighting == "drw" and self.loss.drw_epoch >= e:
      raise ValueError(
        f"drw_epoch={self.loss.drw_epoch} must be < epochs={e} with "
        "class_weighting='drw': the class weights would never switch on."
      )

  # --- what the data set implies ----------------------------------------------------------

  @property
  def num_classes(self) -> int:
    if self.data.dataset == "image-list":
      return self.data.classes
    return facts(self.data.dataset).num_classes

  @property
  def streamed(self) -> bool:
    """Whether the data are image files read batch by batch (not held in memory)."""
    return facts(self.data.dataset).streamed

  # --- settings by key ----------------------------------------------------------------------

  @staticmethod
  def settings() -> dict[str, tuple[str, ...]]:
    """Every setting's key and its path from the config, in the order declared.

    Examples:
      >>> Config.settings()["lr"], Config.settings()["focal_gamma"]
      (('optim', 'lr'), ('loss', 'focal', 'gamma'))
    """
    return dict(_SETTINGS)

  @staticmethod
  def declared(key: str) -> dataclasses.Field:
    """The dataclass field of a setting (its default and metadata), by key or dotted path."""
    path = Config.path(key)
    cls: Any = Config
    for name in path[:-1]:
      cls = typing.get_type_hints(cls)[name]
    return next(f for f in dataclasses.fields(cls) if f.name == path[-1])

  @staticmethod
  def hint(key: str) -> Any:
    """A setting's type, by key or dotted path."""
    path = Config.path(key)
    cls: Any = Config
    for name in path[:-1]:
      cls = typing.get_type_hints(cls)[name]
    return typing.get_type_hints(cls)[path[-1]]

  @staticmethod
  def path(key: str) -> tuple[str, ...]:
    """A setting's path from its key (``lr``) or its dotted path (``optim.lr``).

    Raises:
      ValueError: for an unknown setting, with the closest keys ("did you mean").
    """
    if key in _SETTINGS:
      return _SETTINGS[key]
    dotted = tuple(key.split("."))
    if dotted in _PATHS:
      return dotted
    close = difflib.get_close_matches(key, list(_SETTINGS) + [".".join(p) for p in _PATHS], 3)
    hint = f" Did you mean {' or '.join(close)}?" if close else ""
    raise ValueError(
      f"unknown setting {key!r}.{hint} `absgd-train --settings` lists every setting."
    )

  def get(self, key: str) -> Any:
    """A setting's value, by key or dotted path."""
    value: Any = self
    for name in Config.path(key):
      value = getattr(value, name)
    return value

  def flat(self) -> dict[str, Any]:
    """Every setting by its key, in the order declared."""
    return {key: self.get(key) for key in _SETTINGS}

  @classmethod
  def from_flat(cls, values: Mapping[str, Any]) -> Config:
    """A config from settings by key or dotted path (the rest at their defaults).

    Raises:
      ValueError: for an unknown setting (with "did you mean"), or a value its setting
        refuses.
    """
    tree: dict[str, Any] = {}
    for key, value in values.items():
      *head, leaf = Config.path(key)
      node = tree
      for name in head:
        node = node.setdefault(name, {})
      node[leaf] = value
    return _build(cls, tree)

  def replace(self, **changes: Any) -> Config:
    """This config with some settings changed, by key (``lr=0.2``) or dotted path
    (``**{"optim.lr": 0.2}``); every check runs again."""
    return Config.from_flat({**self.flat(), **changes})

  @staticmethod
  def parse_value(key: str, text: str) -> Any:
    """A ``--set`` string as the setting's type, or a ValueError naming the key."""
    hint = Config.hint(key)
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
      raise ValueError(f"{key} expects {kind}; got {text!r}.") from None
    return text


def _build(cls: type, tree: Mapping[str, Any]) -> Any:
  """``cls`` from a nested dict of its fields, each section built (and checked) first."""
  hints = typing.get_type_hints(cls)
  kwargs = {}
  for f in dataclasses.fields(cls):
    if f.name not in tree:
      continue
    value = tree[f.name]
    kwargs[f.name] = _build(hints[f.name], value) if f.metadata.get("section") else value
  return cls(**kwargs)


def _walk(cls: type, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, tuple[str, ...]]]:
  hints = typing.get_type_hints(cls)
  for f in dataclasses.fields(cls):
    if f.metadata.get("section"):
      yield from _walk(hints[f.name], prefix + (f.name,))
    else:
      yield f.metadata.get("key", f.name), prefix + (f.name,)


def _index() -> dict[str, tuple[str, ...]]:
  out: dict[str, tuple[str, ...]] = {}
  for key, path in _walk(Config):
    if key in out:  # A key names one setting: the command line and config.json rely on it.
      raise TypeError(f"the setting key {key!r} is declared at {out[key]} and at {path}")
    out[key] = path
  return out


_SETTINGS = _index()
_PATHS = frozenset(_SETTINGS.values())


def describe_settings() -> str:
  """Every setting, by section: its key, type, default, choices or range, and its help."""
  lines, section = [], None
  for key, path in _SETTINGS.items():
    where = path[0] if len(path) > 1 else ""
    if where != section:
      section = where
      doc = _SECTION_HELP.get(where, "The run's method and seed.")
      lines += ["", f"[{where or 'top level'}] {doc}"]
    f, hint = Config.declared(key), Config.hint(key)
    kind = getattr(hint, "__name__", "integers, comma-separated")
    allowed = f.metadata.get("choices") or f.metadata.get("range")
    allowed = (
      ""
      if allowed is None
      else f"; {' | '.join(allowed)}"
      if isinstance(allowed, tuple)
      else f"; {allowed}"
    )
    default = ",".join(map(str, f.default)) if isinstance(f.default, tuple) else f.default
    dotted = ".".join(path)
    name = key if dotted == key else f"{key} ({dotted})"
    lines += [f"  {name}: {kind} = {default!r}{allowed}", f"      {f.metadata['help']}"]
  return "\n".join(lines[1:])
