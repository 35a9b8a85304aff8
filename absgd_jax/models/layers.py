"""Shared building pieces of the models: BatchNorm with PyTorch's defaults, initialisers.

Every model in :mod:`absgd_jax.models` builds its BatchNorm layers through :func:`batch_norm`,
so that all of them agree on three things:

* PyTorch's defaults. PyTorch's ``momentum=0.1`` weighs the *new* batch; flax's ``momentum``
  weighs the *old* running value, so the same update is ``momentum=0.9`` here.
  ``epsilon=1e-5`` is the same in both. (One small difference remains: PyTorch stores the
  unbiased batch variance in its running variance, flax the biased one. With batches of 128
  the two differ by under 1%, and only in the running statistics used at test time.)
* ``use_running_average=not train``: batch statistics in training, running ones in evaluation.
  The running statistics live in the ``"batch_stats"`` collection, beside ``"params"``; a train
  step applies the model with ``mutable=["batch_stats"]`` and stores the result in its state.
* ``axis_name``: under ``pmap`` or ``shard_map`` each device sees only its shard of the batch;
  naming the mapped axis makes BatchNorm average its statistics over all devices, so they are
  those of the global batch. Under plain ``jax.jit`` with a sharded batch no name is needed:
  the compiler already sees the whole batch.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any  # jax.typing.DTypeLike, kept loose for dataclass fields.
Initializer = jax.nn.initializers.Initializer

# PyTorch's BatchNorm2d(momentum=0.1, eps=1e-5), in flax's convention (see the module docstring).
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5

# kaiming_normal_(w) in PyTorch: N(0, 2 / fan_in), untruncated. This is what the LDAM / ABSGD
# authors' CIFAR ResNet uses for every conv and linear layer.
kaiming_normal_fan_in: Initializer = nn.initializers.variance_scaling(2.0, "fan_in", "normal")
# kaiming_normal_(w, mode="fan_out", nonlinearity="relu"): torchvision's ResNet convs.
kaiming_normal_fan_out: Initializer = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
# PyTorch's nn.Linear default, U(-1/sqrt(fan_in), 1/sqrt(fan_in)): variance 1 / (3 fan_in).
torch_linear_default: Initializer = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")
# Keras' he_normal (truncated at 2 std, rescaled to keep variance 2 / fan_in): the SCE code's CNN.
keras_he_normal: Initializer = nn.initializers.he_normal()


def batch_norm(
  train: bool,
  *,
  dtype: Dtype = jnp.float32,
  param_dtype: Dtype = jnp.float32,
  axis_name: str | None = None,
  zero_init: bool = False,
  name: str | None = None,
) -> nn.BatchNorm:
  """A BatchNorm layer with PyTorch's defaults (see the module docstring).

  Args:
    train: batch statistics (and a running-average update) if True, running statistics if not.
    dtype: computation dtype of the output; the statistics themselves are reduced in float32.
    param_dtype: dtype of scale, bias and the running statistics.
    axis_name: the pmap / shard_map axis to average batch statistics over, or None.
    zero_init: start the scale (gamma) at 0 instead of 1, so that a residual branch ending in
      this layer starts as the identity (Goyal et al. 2017).
    name: the submodule's name.

  Returns:
    An unbound ``flax.linen.BatchNorm`` to call on NHWC (or NC) inputs.
  """
  return nn.BatchNorm(
    use_running_average=not train,
    momentum=BN_MOMENTUM,
    epsilon=BN_EPSILON,
    dtype=dtype,
    param_dtype=param_dtype,
    axis_name=axis_name,
    scale_init=nn.initializers.zeros if zero_init else nn.initializers.ones,
    name=name,
  )


def conv(
  features: int,
  kernel: int,
  stride: int = 1,
  *,
  dtype: Dtype = jnp.float32,
  param_dtype: Dtype = jnp.float32,
  kernel_init: Initializer = kaiming_normal_fan_in,
  use_bias: bool = False,
  name: str | None = None,
) -> nn.Conv:
  """A square conv with PyTorch's symmetric padding ``kernel // 2``.

  Flax's ``"SAME"`` pads a stride-2 conv on an even input by (0, 1), PyTorch by (1, 1); the
  explicit padding keeps the layers (and any ported weights) equivalent. No bias by default:
  every conv here is followed by BatchNorm, whose shift makes a conv bias redundant.
  """
  return nn.Conv(
    features,
    (kernel, kernel),
    strides=(stride, stride),
    padding=kernel // 2,
    use_bias=use_bias,
    dtype=dtype,
    param_dtype=param_dtype,
    kernel_init=kernel_init,
    name=name,
  )


def global_avg_pool(x: jax.Array) -> jax.Array:
  """Mean over the spatial axes of an NHWC tensor, (B, H, W, C) -> (B, C)."""
  return jnp.mean(x, axis=(1, 2))
