"""The paper's experiments as presets, and :func:`make_config`: a preset plus checked overrides.

A preset is a starting point; any field can be overridden by name (``--set lr=0.05`` on the
command line, or ``make_config(preset, lr=0.05)``).

Schedules follow the run's length. When a preset's ``epochs`` is overridden and one of its
epoch-valued fields (``warmup_epochs``, ``stage2_epoch``, ``drw_epoch``, ``lr_decay_epochs``)
is not, :func:`make_config` scales that field with the run (:func:`scale_epochs` states the
rule). Any epoch-valued field that the run would never reach is an error when it matters,
e.g. a ``stage2_epoch`` at or after ``epochs`` with ``method="absgd"``, whose weights would
then never switch on.
"""

from __future__ import annotations

import difflib
import math
import warnings
from collections.abc import Mapping
from typing import Any

from absgd_jax.train.config import Config

# --- the paper's experiments ---------------------------------------------------------------

# The embedded default: scikit-learn digits, an MLP, a minute on a CPU. lr, lam and the
# stage-2 epoch are ABSGD's choices from experiments/digits_sweep.py (validation split).
_DIGITS = dict(
  dataset="digits",
  model="mlp",
  epochs=30,
  batch_size=64,
  lr=0.1,
  weight_decay=5e-4,
  lam=5.0,
  gamma=0.9,
  lr_decay_epochs=(22,),
  augment=False,
)
# Section 4.1: ResNet-32, 200 epochs, lr 0.1 with a 5-epoch warm-up, divided by 100 at
# epochs 160 and 180, batch 128, weight decay 2e-4; ABSGD's lam switched on at 160.
_CIFAR_LT = dict(
  model="resnet32",
  rho=100,
  epochs=200,
  batch_size=128,
  lr=0.1,
  weight_decay=2e-4,
  warmup_epochs=5,
  lr_decay_epochs=(160, 180),
  lr_decay_factor=0.01,
  lam=5.0,
  gamma=0.9,
  stage2_epoch=160,
  drw_epoch=160,
)
# Section 5.1: noisy CIFAR with 120 epochs, lr decayed by 10 at epochs 40 and 80, batch 128,
# the SCE loss; lam < 0 from the start.
_CIFAR_NOISE = dict(
  noise="sym",
  noise_rate=0.4,
  epochs=120,
  batch_size=128,
  lr_decay_epochs=(40, 80),
  lr_decay_factor=0.1,
  loss="sce",
  lam=-1.0,
  gamma=0.9,
)
# CIFAR-100 comes from tensorflow-datasets (the shared copy is CIFAR-10's JPEG zips).
_C10, _C100 = dict(dataset="cifar10"), dict(dataset="cifar100", source="tfds")

#: The presets by name, one per experiment of the paper: each maps setting names to the
#: values that differ from :class:`Config`'s defaults. ``make_config(name, **overrides)`` and
#: ``absgd-train --config NAME`` start from one; ``absgd-train --list`` prints them.
#:
#: Examples:
#:   >>> PRESETS["cifar10-lt"]["model"], PRESETS["cifar10-lt"]["lam"]
#:   ('resnet32', 5.0)
#:   >>> make_config("digits-lt").weighting.lam == PRESETS["digits-lt"]["lam"]
#:   True
PRESETS: dict[str, dict[str, Any]] = {
  "digits-lt": dict(_DIGITS, imbalance="exp", rho=50),
  "digits-st": dict(_DIGITS, imbalance="step", rho=50, stage2_epoch=22),
  "digits-noise": dict(_DIGITS, noise="sym", noise_rate=0.4, lr=0.05, lam=-1.0, stage2_epoch=22),
  "cifar10-lt": dict(_CIFAR_LT, **_C10, imbalance="exp"),
  "cifar10-st": dict(_CIFAR_LT, **_C10, imbalance="step"),
  "cifar100-lt": dict(_CIFAR_LT, **_C100, imbalance="exp"),
  "cifar100-st": dict(_CIFAR_LT, **_C100, imbalance="step"),
  # The SCE paper's 4-layer CNN on CIFAR-10; ResNet-18 with its CIFAR-100 SCE weights.
  "cifar10-noise": dict(_CIFAR_NOISE, **_C10, model="cnn4", lr=0.01, weight_decay=1e-4),
  "cifar100-noise": dict(
    _CIFAR_NOISE, **_C100, model="resnet18", lr=0.1, weight_decay=5e-4, sce_alpha=6.0, sce_beta=0.1
  ),
}


# Section 4.2 and 5.2 (Tables 3-5 and 7): file lists streamed from disk (docs/large_scale.md
# says where each list comes from). The paper's text gives the models, the epochs of each
# stage, what stage 2 trains, lam's grid {10, 20, 30} and Clothing1M's schedule; its Table 8
# (learning rates) is not in our copy of the paper, so the learning rates, batch sizes and
# cosine schedules of stage 1 are those of Kang et al. 2020 ("Decoupling"), which the paper's
# two-stage baselines come from, and say so here. Stage 2 starts from stage 1's run directory.
_LARGE = dict(
  model="resnet50",
  batch_size=512,
  weight_decay=5e-4,
  lr_schedule="cosine",
  gamma=0.9,
  eval_every=5,
  data_workers=16,
)
PRESETS.update(
  {
    # ImageNet-LT (Table 3): stage 1, momentum SGD + CE for 90 epochs from scratch.
    "imagenet-lt-stage1": dict(_LARGE, dataset="imagenet-lt", method="sgd", epochs=90, lr=0.2),
    # Stage 2: ABSGD fine-tunes the classifier (FC) for 90 epochs; lam in {10, 20, 30}.
    "imagenet-lt-stage2": dict(
      _LARGE,
      dataset="imagenet-lt",
      method="absgd",
      lam=10.0,
      epochs=90,
      lr=0.2,
      init_from="runs/imagenet-lt-stage1",
      stage2_trainable="fc",
    ),
    # Places-LT (Table 4): ResNet-152 from ImageNet weights (init_from: a torchvision or timm
    # file, with a new 365-class head); stage 1 trains FC + the last block for 90 epochs.
    "places-lt-stage1": dict(
      _LARGE,
      dataset="places-lt",
      model="resnet152",
      method="sgd",
      epochs=90,
      lr=0.01,
      batch_size=256,
      init_from="resnet152-imagenet.pth",
      init_head="drop",
      stage2_trainable="fc+lb",
    ),
    "places-lt-stage2": dict(
      _LARGE,
      dataset="places-lt",
      model="resnet152",
      method="absgd",
      lam=10.0,
      epochs=30,
      lr=0.01,
      batch_size=256,
      init_from="runs/places-lt-stage1",
      stage2_trainable="fc+lb",
    ),
    # iNaturalist 2018 (Table 5): ResNet-50 (or resnet152) from ImageNet weights, momentum SGD
    # for 200 epochs, then ABSGD with lam = 10 on FC + the last block for 30 epochs.
    "inat2018-stage1": dict(
      _LARGE,
      dataset="inat2018",
      method="sgd",
      epochs=200,
      lr=0.2,
      init_from="resnet50-imagenet.pth",
      init_head="drop",
    ),
    "inat2018-stage2": dict(
      _LARGE,
      dataset="inat2018",
      method="absgd",
      lam=10.0,
      epochs=30,
      lr=0.2,
      init_from="runs/inat2018-stage1",
      stage2_trainable="fc+lb",
    ),
    # Clothing1M (Table 7): ResNet-50 from ImageNet weights, 10 epochs, lr 0.002 divided by 10
    # at epoch 5, weight decay 1e-2; lam in {-1, -5, -10, -15} (min-min, noisy labels).
    "clothing1m": dict(
      dataset="clothing1m",
      model="resnet50",
      method="absgd",
      lam=-1.0,
      gamma=0.9,
      epochs=10,
      lr=0.002,
      lr_decay_epochs=(5,),
      lr_decay_factor=0.1,
      weight_decay=1e-2,
      batch_size=256,
      init_from="resnet50-imagenet.pth",
      init_head="drop",
      data_workers=16,
    ),
  }
)


# --- schedules that follow the run's length -----------------------------------------------

#: The epoch-valued settings, which follow a preset's ``epochs`` (declared ``epoch=True``).
EPOCH_FIELDS = tuple(k for k in Config.settings() if Config.declared(k).metadata["epoch"])


def _round_half_up(x: float) -> int:
  return int(math.floor(x + 0.5))


def scale_epochs(values: Mapping[str, Any], base_epochs: int, epochs: int) -> dict[str, Any]:
  """The epoch-valued settings of ``values`` moved from a ``base_epochs`` run to an ``epochs`` run.

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
    {'stage2_epoch': 16, 'warmup_epochs': 1, 'lr_decay_epochs': (16, 18)}
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


def _key(name: str) -> str:
  """A setting's key, from its key or its dotted path."""
  path = Config.path(name)
  return next(k for k, p in Config.settings().items() if p == path)


def preset_values(preset: str | None, overrides: Mapping[str, Any]) -> tuple[dict, dict]:
  """The settings of ``preset`` plus ``overrides`` by key, and what the preset's schedule
  became when ``epochs`` was overridden: ``{key: (the preset's value, the scaled value)}``.

  Strings are parsed to the setting's type. Without a preset nothing is scaled.

  Examples:
    >>> values, scaled = preset_values("cifar10-lt", {"epochs": "20"})
    >>> values["epochs"], scaled["stage2_epoch"]
    (20, (160, 16))
  """
  values: dict[str, Any] = {}
  if preset is not None:
    if preset not in PRESETS:
      close = difflib.get_close_matches(preset, PRESETS, 1)
      hint = f" (did you mean {close[0]}?)" if close else ""
      raise ValueError(f"unknown config {preset!r}{hint}; choose one of {', '.join(PRESETS)}.")
    values.update(PRESETS[preset])
    values["preset"] = preset
  given: dict[str, Any] = {}
  for name, value in overrides.items():
    key = _key(name)
    given[key] = Config.parse_value(key, value) if isinstance(value, str) else value
  scaled: dict[str, tuple[Any, Any]] = {}
  epochs = given.get("epochs")
  default_epochs = Config.declared("epochs").default
  # A preset is a protocol whose schedule is laid out over its epochs; the bare defaults are
  # not (nothing is scaled without a preset).
  if (
    preset is not None
    and isinstance(epochs, int)
    and epochs >= 1
    and epochs != values.get("epochs", default_epochs)
  ):
    keep = {k: values.get(k, Config.declared(k).default) for k in EPOCH_FIELDS if k not in given}
    new = scale_epochs(keep, values.get("epochs", default_epochs), epochs)
    scaled = {k: (keep[k], v) for k, v in new.items() if v != keep[k]}
    values.update(new)
  values.update(given)
  return values, scaled


def describe_scaling(scaled: Mapping[str, tuple[Any, Any]], epochs: int) -> str:
  """One line saying which of a preset's epoch settings moved with ``epochs``, and how.

  Examples:
    >>> print(describe_scaling({"stage2_epoch": (160, 2), "lr_decay_epochs": ((160, 180), ())}, 3))
    epochs=3 scaled the preset's schedule: stage2_epoch 160 -> 2, lr_decay_epochs 160,180 ->
    none (a decay outside the run is dropped)
  """
  parts = []
  for k, (old, new) in scaled.items():
    dropped = k == "lr_decay_epochs" and len(new) < len(old)
    note = " (a decay outside the run is dropped)" if dropped else ""
    parts.append(f"{k} {_text(old)} -> {_text(new)}{note}")
  return f"epochs={epochs} scaled the preset's schedule: " + ", ".join(parts)


def make_config(
  preset: str | None = None, overrides: dict[str, Any] | None = None, **kwargs: Any
) -> Config:
  """A :class:`Config` from a preset plus overrides, by key or dotted path (strings are
  parsed to the setting's type).

  When a preset's ``epochs`` is overridden, the preset's epoch-valued settings that are not
  overridden follow it (:func:`scale_epochs`); without a preset nothing is scaled. A setting
  refused because of such a scaled value says so. An empty ``out_dir`` stays empty: the run
  names its folder (:func:`absgd_jax.train.run_folder.resolve_out_dir`).

  Examples:
    >>> make_config("digits-lt", {"lam": "2.5"}).weighting.lam
    2.5
    >>> make_config("digits-lt", {"optim.lr": "0.05"}).optim.lr
    0.05
    >>> c = make_config("cifar10-lt", epochs=20)
    >>> c.weighting.stage2_epoch, c.schedule.lr_decay_epochs, c.schedule.warmup_epochs
    (16, (16, 18), 1)
  """
  given = {**(overrides or {}), **kwargs}
  values, scaled = preset_values(preset, given)
  base, _ = preset_values(preset, {})
  try:
    config = Config.from_flat(values)
  except ValueError as e:
    named = [k for k in scaled if k in str(e)]
    if not named:
      raise
    what = ", ".join(
      f"{k}={_text(new)} is the preset's {_text(old)} scaled with epochs={values['epochs']}"
      for k, (old, new) in scaled.items()
      if k in named
    )
    raise ValueError(f"{e} ({what}; set {named[0]} yourself to choose another.)") from None
  changed = [
    k for k in map(_key, given) if config.get(k) != base.get(k, Config.declared(k).default)
  ]
  for key in config.unused(changed):
    # Accepted and silently ignored would leave a user believing it took effect.
    warnings.warn(
      f"{key}={config.get(key)!r} is not used by dataset={config.data.dataset!r}: it is ignored.",
      UserWarning,
      stacklevel=2,
    )
  return config


def _text(v: Any) -> str:
  if isinstance(v, (tuple, list)):
    return ",".join(map(str, v)) or "none"
  return str(v)


def read_settings_file(path: str) -> tuple[str | None, dict[str, Any]]:
  """The preset a settings file names and its settings by key or dotted path.

  A run's ``config.json`` (its ``"config"`` holds every setting by key), or a TOML or YAML
  file of settings, by key or in sections (``[optim]`` with ``lr = 0.05``). A ``preset`` in
  it is the starting point, as ``--config NAME`` would be.

  Raises:
    ValueError: for a file that does not read, naming it and why.

  Examples:
    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "run.toml")
    >>> with open(path, "w") as f:
    ...   _ = f.write('preset = "digits-lt"\\nepochs = 5\\n[optim]\\nlr = 0.05\\n')
    >>> read_settings_file(path)
    ('digits-lt', {'epochs': 5, 'optim.lr': 0.05})
  """
  import json
  import os

  ext = os.path.splitext(path)[1].lower()
  try:
    with open(path, "rb") as f:
      raw = f.read()
    if ext == ".json":
      tree = json.loads(raw)
      tree = tree.get("config", tree) if isinstance(tree, dict) else tree
    elif ext == ".toml":
      import tomllib

      tree = tomllib.loads(raw.decode())
    elif ext in (".yaml", ".yml"):
      try:
        import yaml
      except ImportError:
        raise ValueError(
          f"{path}: reading YAML needs PyYAML (pip install pyyaml); or write the settings as "
          "TOML or JSON."
        ) from None
      tree = yaml.safe_load(raw)
    else:
      raise ValueError(f"{path}: a settings file is .json, .toml or .yaml; got {ext or 'none'}.")
  except (OSError, ValueError, UnicodeDecodeError) as e:
    if isinstance(e, ValueError) and str(e).startswith(path):
      raise
    raise ValueError(f"{path} does not read as settings: {e}") from None
  if not isinstance(tree, dict):
    raise ValueError(f"{path} holds {type(tree).__name__}, not settings by key.")
  values = dict(_flatten(tree))
  return values.pop("preset", None) or None, values


def _flatten(tree: Mapping[str, Any], prefix: str = ""):
  for key, value in tree.items():
    if isinstance(value, Mapping):
      yield from _flatten(value, f"{prefix}{key}.")
    else:
      yield f"{prefix}{key}", value
