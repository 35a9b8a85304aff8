"""The training kit (``pip install -e ".[train]"``): configs, the train loop, the demo.

The core (:mod:`absgd_jax`) never imports this package.
"""

from absgd_jax.train.config import Config
from absgd_jax.train.presets import PRESETS, make_config
from absgd_jax.train.run_folder import RunMismatchError
from absgd_jax.train.step import TrainState, make_eval_step, make_train_step
from absgd_jax.train.sweep import Sweep
from absgd_jax.train.health import DivergenceError
from absgd_jax.train.trainer import Trainer

__all__ = [
  "PRESETS",
  "Config",
  "DivergenceError",
  "RunMismatchError",
  "Sweep",
  "TrainState",
  "Trainer",
  "make_config",
  "make_eval_step",
  "make_train_step",
]
