"""The scales at which the experiments under ``experiments/`` run the paper's presets.

A protocol is a set of overrides laid over a preset: the paper's own scale (``full``), a
smaller one that a 2-core CPU trains in hours (``reduced``), and a seconds-long one that runs
the whole pipeline as a smoke test (``tiny``). Each experiment family names its presets:

- ``cifar-imbalance`` (Tables 1 and 2, Figures 3 and 4): the presets ``cifar10-lt`` and
  ``cifar10-st``. Its ``short`` protocol (20 epochs) is the one of
  ``experiments/cifar_table.py`` and the figure scripts, older than ``reduced`` (60 epochs,
  the one on which the kit matches a PyTorch reference).
- ``cifar-noise`` (Table 6): the preset ``cifar10-noise``. Its ``short`` protocol is the
  noise column of ``experiments/cifar_table.py``, on the ``cifar10-lt`` preset with the
  imbalance off.

Every experiment script reads its protocol here (:func:`protocol`), so that a number of
epochs or a decay epoch is written once.

Examples:
  >>> from absgd_jax.train import make_config
  >>> cfg = make_config("cifar10-lt", protocol("cifar-imbalance", "reduced"))
  >>> cfg.model.name, cfg.schedule.epochs, cfg.weighting.stage2_epoch
  ('resnet8', 60, 48)
  >>> protocol("cifar-noise", "full")["model"]
  'cnn4'
"""

from __future__ import annotations

from typing import Any

# Section 4.1 as the presets hold it (ResNet-32 at 32 px, 200 epochs, decays at 160 and 180).
# On an H200 an epoch of one LT run trains in 0.47 s, an evaluation of the test set takes
# 0.21 s and an orbax checkpoint 0.48 s (benchmarks/epoch_overhead.py): the tables need the
# last epoch's accuracy, and a checkpoint every 10 epochs still lets a stopped run resume.
_IMBALANCE_FULL = dict(
  momentum_form="pytorch",
  stage2_epoch=160,
  drw_epoch=160,
  eval_every=10,
  checkpoint_every=10,
)
# The protocol on which the kit matches a PyTorch reference (experiments/parity/head_to_head.py):
# ResNet-8 at 16 px (area-averaged), 60 epochs, decays at 48 and 54. About 7 CPU core-minutes
# a CIFAR-10-LT run.
_IMBALANCE_REDUCED = dict(
  model="resnet8",
  image_size=16,
  crop_padding=2,
  epochs=60,
  warmup_epochs=2,
  lr_decay_epochs=(48, 54),
  lr_decay_factor=0.01,
  stage2_epoch=48,
  drw_epoch=48,
  eval_every=4,
  momentum_form="pytorch",
)
# The 20-epoch protocol: ResNet-8 at 16 px, lr 0.1 after a 1-epoch warm-up, divided by 100 at
# epochs 16 and 18 (the paper's 160 and 180 of 200). About 3.5 CPU core-minutes an LT run.
_SHORT = dict(
  image_size=16,
  crop_padding=2,
  model="resnet8",
  epochs=20,
  warmup_epochs=1,
  lr=0.1,
  batch_size=128,
  weight_decay=2e-4,
  eval_every=2,
  checkpoint=False,
)
_IMBALANCE_SHORT = dict(
  _SHORT, lr_decay_epochs=(16, 18), lr_decay_factor=0.01, stage2_epoch=16, drw_epoch=16
)
# The whole pipeline in seconds on a CPU: 8 px, a head class of 200 images, 3 epochs.
_IMBALANCE_TINY = dict(
  model="resnet8",
  epochs=3,
  image_size=8,
  n_max=200,
  warmup_epochs=1,
  lr_decay_epochs=(2,),
  stage2_epoch=2,
  drw_epoch=2,
  eval_every=1,
  crop_padding=1,
  test_per_class=10,
  momentum_form="pytorch",
)

# Section 5.1, after the SCE paper (Wang et al. 2019): its 4-layer CNN on 32 x 32 CIFAR-10,
# all 50,000 training images, 120 epochs at batch 128, lr divided by 10 at 40 and 80.
_NOISE_FULL = dict(
  model="cnn4",
  image_size=0,
  augment=True,
  epochs=120,
  batch_size=128,
  lr_decay_epochs=(40, 80),
  lr_decay_factor=0.1,
  weight_decay=1e-4,
  gamma=0.9,
  eval_every=5,
  checkpoint=True,
  checkpoint_every=10,  # A save costs a fair part of a GPU epoch; every 10th still resumes.
  n_max=0,
)
# The CPU protocol, in a regime where SGD (CE) memorises (experiments/table6.py says why each
# choice): 400 images a class at 16 px, ResNet-8, no augmentation, 30 epochs, decays at 6 and
# 24 (the digits noise schedule scaled by 1/5). About 70 CPU core-minutes for the table.
_NOISE_REDUCED = dict(
  model="resnet8",
  image_size=16,
  crop_padding=2,
  n_max=400,
  augment=False,
  noise="sym",
  noise_rate=0.4,
  epochs=30,
  batch_size=128,
  lr_decay_epochs=(6, 24),
  lr_decay_factor=0.1,
  weight_decay=1e-4,
  gamma=0.9,
  eval_every=3,
  checkpoint=False,
)
# The 20-epoch protocol's noise column: a balanced 1000 images a class, 40% symmetric noise,
# lr divided by 10 at epochs 7 and 14 (the paper's 40 and 80 of 120), lam < 0 from the start.
_NOISE_SHORT = dict(
  _SHORT,
  imbalance="none",
  noise="sym",
  noise_rate=0.4,
  n_max=1000,
  lr_decay_epochs=(7, 14),
  lr_decay_factor=0.1,
  stage2_epoch=0,
)
# The full protocol's pipeline in seconds: ResNet-8 at 16 px, 20 images a class, 1 epoch.
_NOISE_TINY = dict(
  _NOISE_FULL,
  model="resnet8",
  image_size=16,
  crop_padding=2,
  n_max=20,
  test_per_class=20,
  epochs=1,
  eval_every=1,
  checkpoint=False,
  lr_decay_epochs=(),
)

#: The protocols by family and name: each maps setting keys to the values laid over the
#: family's presets (:data:`PRESETS_OF`).
#:
#: Examples:
#:   >>> sorted(PROTOCOLS["cifar-imbalance"])
#:   ['full', 'reduced', 'short', 'tiny']
#:   >>> PROTOCOLS["cifar-imbalance"]["reduced"]["epochs"]
#:   60
PROTOCOLS: dict[str, dict[str, dict[str, Any]]] = {
  "cifar-imbalance": {
    "tiny": _IMBALANCE_TINY,
    "short": _IMBALANCE_SHORT,
    "reduced": _IMBALANCE_REDUCED,
    "full": _IMBALANCE_FULL,
  },
  "cifar-noise": {
    "tiny": _NOISE_TINY,
    "short": _NOISE_SHORT,
    "reduced": _NOISE_REDUCED,
    "full": _NOISE_FULL,
  },
}

#: The presets each family's protocols are laid over.
PRESETS_OF: dict[str, tuple[str, ...]] = {
  "cifar-imbalance": ("cifar10-lt", "cifar10-st"),
  "cifar-noise": ("cifar10-noise",),
}


def protocol(family: str, name: str) -> dict[str, Any]:
  """The overrides of protocol ``name`` of ``family`` (a copy: the caller may extend it).

  Raises:
    ValueError: for an unknown family or protocol, naming the ones there are.

  Examples:
    >>> protocol("cifar-imbalance", "short")["lr_decay_epochs"]
    (16, 18)
  """
  if family not in PROTOCOLS:
    raise ValueError(f"unknown protocol family {family!r}; choose one of {', '.join(PROTOCOLS)}.")
  if name not in PROTOCOLS[family]:
    raise ValueError(
      f"{family} has no protocol {name!r}; choose one of {', '.join(PROTOCOLS[family])}."
    )
  return dict(PROTOCOLS[family][name])
