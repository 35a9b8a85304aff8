"""The training kit (``pip install -e ".[train]"``): configs, the train loop, the demo.

The core (:mod:`absgd_jax`) never imports this package.
"""

from absgd_jax.train.config import PRESETS, Config, make_config
from absgd_jax.train.step import TrainState, make_eval_step, make_train_step
from absgd_jax.train.trainer import DivergenceError, Trainer

__all__ = ["PRESETS", "Config", "DivergenceError", "TrainState", "Trainer", "make_config",
           "make_eval_step", "make_train_step"]
