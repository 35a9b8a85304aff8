"""The CNN of the SCE paper (Wang et al. 2019) for noisy CIFAR-10, which this paper reuses.

The paper (Section 4.2) calls it "a 4-layer CNN proposed in (50)"; the definition used by the
SCE authors' code, and by most noisy-label work since, is three conv blocks and two dense
layers:

====================  =============================================  =============
name                  layers                                          output (32x32)
====================  =============================================  =============
``block1``            [3x3 conv 64 + BN + ReLU] x 2, 2x2 max-pool     16x16x64
``block2``            [3x3 conv 128 + BN + ReLU] x 2, 2x2 max-pool    8x8x128
``block3``            [3x3 conv 196 + BN + ReLU] x 2, 2x2 max-pool    4x4x196
``block4``            flatten, dense 256 + BN + ReLU                  256
``head``              dense (or cosine) -> num_classes                K
====================  =============================================  =============

Choices, where the SCE (Keras) code leaves room:

* The convs and the dense 256 layer have no bias: BatchNorm follows each of them and its shift
  subsumes a bias (Keras' default bias adds 64*2 + 128*2 + 196*2 + 256 = 1,032 inert
  parameters). With ``num_classes=10`` the model has 1,638,762 parameters.
* Kernels start from Keras' ``he_normal`` (truncated normal, variance 2 / fan_in), as there.
* No dropout, as there. The softmax is left to the loss.

The last feature block ("LB") is ``block4``, the dense 256 layer before the classifier.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from absgd_jax.models.heads import classifier_head
from absgd_jax.models.layers import Dtype, batch_norm, conv, keras_he_normal


class ConvBlock(nn.Module):
  """``num_convs`` x [3x3 conv + BN + ReLU], then a 2x2 max-pool with stride 2."""

  features: int
  num_convs: int = 2
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  axis_name: str | None = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    for i in range(1, self.num_convs + 1):
      x = conv(self.features, 3, kernel_init=keras_he_normal, name=f"conv{i}", **kw)(x)
      x = nn.relu(batch_norm(train, axis_name=self.axis_name, name=f"bn{i}", **kw)(x))
    return nn.max_pool(x, (2, 2), strides=(2, 2))


class CNN4(nn.Module):
  """The SCE paper's CNN for CIFAR-10 (see the module docstring for the layout).

  Attributes:
    num_classes: number of classes.
    widths: channels of the conv blocks.
    hidden: width of the dense layer before the head.
    head: "linear" or "cosine" (see :mod:`absgd_jax.models.heads`).
    dtype: computation dtype, e.g. ``jnp.bfloat16``; the classifier head computes in float32.
    param_dtype: dtype of the parameters and BatchNorm statistics.
    axis_name: pmap / shard_map axis for global BatchNorm statistics, or None.

  Examples:
    >>> import functools, jax, jax.numpy as jnp
    >>> model = CNN4(num_classes=10)
    >>> x = jnp.zeros((1, 32, 32, 3))
    >>> shapes = jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0), x)
    >>> shapes["params"]["block4"]["dense"]["kernel"].shape  # flattened 4 * 4 * 196 -> 256
    (3136, 256)
  """

  num_classes: int
  widths: Sequence[int] = (64, 128, 196)
  hidden: int = 256
  head: str = "linear"
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  axis_name: str | None = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    """Logits (B, num_classes) of NHWC images ``x``; ``train`` selects batch statistics."""
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    for i, width in enumerate(self.widths, start=1):
      x = ConvBlock(width, axis_name=self.axis_name, name=f"block{i}", **kw)(x, train)
    x = x.reshape(x.shape[0], -1)
    x = _DenseBNReLU(
      self.hidden, axis_name=self.axis_name, name=f"block{len(self.widths) + 1}", **kw
    )(x, train)
    return classifier_head(self.head, self.num_classes, linear_init=keras_he_normal, **kw)(x)


class _DenseBNReLU(nn.Module):
  """Dense (no bias) + BN + ReLU: the SCE CNN's ``fc1``, a block of its own so that it can be
  selected as the last block."""

  features: int
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  axis_name: str | None = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    x = nn.Dense(
      self.features,
      use_bias=False,
      kernel_init=keras_he_normal,
      dtype=self.dtype,
      param_dtype=self.param_dtype,
      name="dense",
    )(x)
    bn = batch_norm(
      train, dtype=self.dtype, param_dtype=self.param_dtype, axis_name=self.axis_name, name="bn"
    )
    return nn.relu(bn(x))


def cnn4(num_classes: int, **kwargs) -> CNN4:
  """The SCE paper's CNN; ``kwargs`` are :class:`CNN4` attributes."""
  return CNN4(num_classes=num_classes, **kwargs)
