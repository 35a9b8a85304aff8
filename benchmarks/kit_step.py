"""The training kit's ABSGD step on synthetic CIFAR-shaped data: what the step benchmarks time.

The step is the kit's own (:func:`absgd_jax.train.step.make_train_step`), built from the
pieces a ``cifar10-lt`` run builds (:mod:`absgd_jax.train.setup`): ABSGD's weights from the
first step (``stage2_epoch=0``, lam 5, gamma 0.9), the kit's momentum SGD with its schedule,
per-sample cross-entropy, and the on-device CIFAR crop + flip. The images are uint8, as the
kit keeps CIFAR, so the step's own preprocessing converts them.

Imported by the scripts beside it (``python benchmarks/NAME.py`` puts this folder on the path).
"""

from __future__ import annotations

import dataclasses
import os
import platform
import subprocess
import sys
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from absgd_jax.data import imbalanced_counts
from absgd_jax.models import create_model
from absgd_jax.train import batch_weigher, inputs, make_config, setup
from absgd_jax.train.step import make_train_step

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


@dataclasses.dataclass(frozen=True)
class Kit:
  """A run's pieces and its step-0 state (float32 parameters and statistics, whatever the
  computation dtype)."""

  config: Any
  model: Any
  tx: Any
  loss_fn: Any
  weigher: Any
  preprocess: Any
  state: Any
  classes: int
  steps_per_epoch: int = 100

  def train_step(self):
    """``train_step(state, batch) -> (state, metrics)``, not jitted."""
    return make_train_step(
      self.model, self.tx, self.loss_fn, self.weigher, self.preprocess, num_classes=self.classes
    )

  def with_dtype(self, dtype: str) -> "Kit":
    """The same run computing in ``dtype``, from the same state: parameters, optimizer state,
    BatchNorm statistics and the loss stay float32 under ``"bfloat16"``."""
    model = create_model(self.config.model.name, self.classes, dtype=DTYPES[dtype])
    return dataclasses.replace(self, model=model)


def make_kit(
  model: str = "resnet32",
  batch: int = 128,
  image_size: int = 32,
  *,
  classes: int = 10,
  augment: bool = True,
  dtype: str = "float32",
  steps_per_epoch: int = 100,
  seed: int = 0,
) -> Kit:
  """The kit's ABSGD run of ``model`` at ``batch`` x ``image_size`` px.

  ``steps_per_epoch`` only places the schedule's (unreached) boundaries.
  """
  cfg = make_config(
    "cifar10-lt",
    model=model,
    batch_size=batch,
    stage2_epoch=0,
    augment=augment,
    crop_padding=4 if image_size >= 32 else 2,
    epochs=200,
    seed=seed,
  )
  net = create_model(cfg.model.name, classes, dtype=DTYPES[dtype])
  variables = setup.init_variables(cfg, net, np.zeros((1, image_size, image_size, 3), np.float32))
  tx, _ = setup.make_optimizer(cfg, steps_per_epoch, variables["params"])
  loss_fn = setup.make_loss_fn(cfg, np.full(classes, 500), steps_per_epoch)
  weigher = batch_weigher.absgd(cfg.weighting.lam, cfg.weighting.gamma)
  state = setup.init_state(cfg, variables, tx, weigher)
  preprocess = setup.make_preprocess(cfg)
  return Kit(cfg, net, tx, loss_fn, weigher, preprocess, state, classes, steps_per_epoch)


def synthetic_batch(batch: int, image_size: int, classes: int = 10, seed: int = 0) -> dict:
  """One batch of random uint8 images and labels, every row real."""
  rng = np.random.default_rng(seed)
  return {
    "images": jnp.asarray(rng.integers(0, 256, (batch, image_size, image_size, 3), dtype=np.uint8)),
    "labels": jnp.asarray(rng.integers(0, classes, batch).astype(np.int32)),
    "mask": jnp.ones(batch, bool),
  }


def synthetic_long_tailed(
  n_max: int, rho: float, image_size: int, classes: int = 10, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
  """Random uint8 images with CIFAR-LT's class sizes (``n_max=5000, rho=100``: CIFAR-10-LT's
  12,406), the labels shuffled."""
  counts = imbalanced_counts(n_max, classes, rho)
  rng = np.random.default_rng(seed)
  labels = rng.permutation(np.repeat(np.arange(classes, dtype=np.int32), counts))
  images = rng.integers(0, 256, (len(labels), image_size, image_size, 3), dtype=np.uint8)
  return images, labels


def host_batch(images, labels, idx, mask, sharding) -> dict:
  """The batch of rows ``idx``, gathered in NumPy and sent to the devices of ``sharding`` as
  the Trainer's host pipeline (:func:`absgd_jax.train.inputs.train_batches`) sends it."""
  local = {"images": images[idx], "labels": labels[idx], "mask": mask}
  return inputs.to_global(local, sharding)


def machine_info() -> dict:
  """What the numbers were measured on: the device, the versions, the XLA flags."""
  import flax
  import jaxlib
  import optax

  info = {
    "platform": jax.default_backend(),
    "device": str(jax.devices()[0].device_kind),
    "device_count": jax.device_count(),
    "host": platform.node(),
    "cpu_count": os.cpu_count(),
    "versions": {
      "python": sys.version.split()[0],
      "jax": jax.__version__,
      "jaxlib": jaxlib.__version__,
      "flax": flax.__version__,
      "optax": optax.__version__,
      "numpy": np.__version__,
    },
    "xla_flags": os.environ.get("XLA_FLAGS", ""),
  }
  try:  # The card's own account of itself, where nvidia-smi exists.
    query = "name,driver_version,memory.total,compute_mode,clocks.max.sm,power.limit"
    smi = subprocess.run(
      ["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader"],
      capture_output=True,
      text=True,
      timeout=20,
    )
    if smi.returncode == 0:
      info["nvidia_smi"] = {"query": query, "rows": smi.stdout.strip().splitlines()}
  except (OSError, subprocess.SubprocessError):
    pass
  return info
