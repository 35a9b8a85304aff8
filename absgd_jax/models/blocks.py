"""Residual blocks (He et al. 2016): the basic block and the bottleneck block.

Submodule names inside a block: ``conv1``/``bn1``, ``conv2``/``bn2`` (and ``conv3``/``bn3``
in a bottleneck), plus ``proj_conv``/``proj_bn`` for a projection shortcut.

Shortcuts, for a block that changes the resolution or the width:

* ``"A"``: parameter-free. Subsample with the block's stride and zero-pad the new channels,
  half on each side, as the CIFAR ResNets of He et al. (2016) and of the LDAM / ABSGD authors'
  PyTorch code do.
* ``"B"``: projection, a strided 1x1 conv followed by BatchNorm (torchvision's ResNets).

A block that keeps the shape always uses the identity.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from absgd_jax.models.layers import Dtype, Initializer, batch_norm, conv, kaiming_normal_fan_in

SHORTCUTS = ("A", "B")


def _check_shortcut(shortcut: str) -> None:
  if shortcut not in SHORTCUTS:
    raise ValueError(
      f"Unknown shortcut {shortcut!r}; valid choices: {', '.join(SHORTCUTS)} "
      "(A: zero-padding identity, B: 1x1 conv + BN projection)."
    )


def _pad_shortcut(x: jax.Array, features: int, stride: int) -> jax.Array:
  """Option A: subsample by ``stride`` and zero-pad channels up to ``features`` (NHWC)."""
  extra = features - x.shape[-1]
  if extra < 0:
    raise ValueError(f"Shortcut A cannot reduce channels ({x.shape[-1]} -> {features}).")
  x = x[:, ::stride, ::stride, :]
  # Half the new channels before, half after, as in the authors' F.pad(..., planes // 4 each).
  return jnp.pad(x, ((0, 0), (0, 0), (0, 0), (extra // 2, extra - extra // 2)))


class BasicBlock(nn.Module):
  """Two 3x3 convs with BatchNorm and a residual connection: relu(bn(conv(relu(bn(conv x)))) + x).

  Attributes:
    features: output channels.
    stride: stride of the first conv (2 halves the resolution).
    shortcut: "A" (zero-padding identity) or "B" (1x1 conv + BN projection), used only when
      the block changes the shape.
    zero_init_residual: start the last BN's scale at 0 so the block starts as the identity.
    dtype, param_dtype, axis_name: as in :func:`absgd_jax.models.layers.batch_norm`.
    conv_init: initialiser of the conv kernels.
  """

  features: int
  stride: int = 1
  shortcut: str = "B"
  zero_init_residual: bool = False
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  axis_name: str | None = None
  conv_init: Initializer = kaiming_normal_fan_in

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    _check_shortcut(self.shortcut)
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    bn_kw = dict(kw, axis_name=self.axis_name)
    y = conv(self.features, 3, self.stride, kernel_init=self.conv_init, name="conv1", **kw)(x)
    y = nn.relu(batch_norm(train, name="bn1", **bn_kw)(y))
    y = conv(self.features, 3, kernel_init=self.conv_init, name="conv2", **kw)(y)
    y = batch_norm(train, zero_init=self.zero_init_residual, name="bn2", **bn_kw)(y)
    return nn.relu(y + _shortcut(self, x, train))


class Bottleneck(nn.Module):
  """1x1 reduce, 3x3, 1x1 expand (x4), with BatchNorm and a residual connection.

  The stride sits on the 3x3 conv (torchvision's "ResNet v1.5"), which is what the ImageNet-LT
  / iNaturalist baselines the paper compares against use.

  Attributes:
    features: width of the 3x3 conv; the block outputs ``4 * features`` channels.
    stride, shortcut, zero_init_residual, dtype, param_dtype, axis_name, conv_init:
      as in :class:`BasicBlock`.
  """

  features: int
  stride: int = 1
  shortcut: str = "B"
  zero_init_residual: bool = False
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  axis_name: str | None = None
  conv_init: Initializer = kaiming_normal_fan_in

  expansion = 4  # Output channels per unit of ``features`` (a class constant, not a field).

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    _check_shortcut(self.shortcut)
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    bn_kw = dict(kw, axis_name=self.axis_name)
    out = self.features * self.expansion
    y = conv(self.features, 1, kernel_init=self.conv_init, name="conv1", **kw)(x)
    y = nn.relu(batch_norm(train, name="bn1", **bn_kw)(y))
    y = conv(self.features, 3, self.stride, kernel_init=self.conv_init, name="conv2", **kw)(y)
    y = nn.relu(batch_norm(train, name="bn2", **bn_kw)(y))
    y = conv(out, 1, kernel_init=self.conv_init, name="conv3", **kw)(y)
    y = batch_norm(train, zero_init=self.zero_init_residual, name="bn3", **bn_kw)(y)
    return nn.relu(y + _shortcut(self, x, train, out))


def _shortcut(
  block: BasicBlock | Bottleneck, x: jax.Array, train: bool, features: int | None = None
) -> jax.Array:
  """The block's shortcut branch; called inside the block's compact ``__call__``."""
  features = block.features if features is None else features
  if block.stride == 1 and x.shape[-1] == features:
    return x
  if block.shortcut == "A":
    return _pad_shortcut(x, features, block.stride)
  kw = dict(dtype=block.dtype, param_dtype=block.param_dtype)
  x = conv(features, 1, block.stride, kernel_init=block.conv_init, name="proj_conv", **kw)(x)
  return batch_norm(train, axis_name=block.axis_name, name="proj_bn", **kw)(x)
