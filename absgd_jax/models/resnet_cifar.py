"""CIFAR ResNets (He et al. 2016, Section 4.2): 6n + 2 layers, 3 stages of 16, 32, 64 channels.

The paper's CIFAR tables use ResNet-32 (n = 5), as does the LDAM code the ABSGD authors build
on. ResNet-20 (n = 3) and ResNet-8 (n = 1) come from the same code as fast variants.

Layout: a 3x3 conv (16 channels) + BN + ReLU on the 32x32 input; three stages of ``n`` basic
blocks, the first block of stages 2 and 3 with stride 2 (32x32 -> 16x16 -> 8x8); global average
pooling; the classifier head. Every conv and the linear head start from Kaiming-normal
(fan-in, untruncated), as PyTorch's ``kaiming_normal_`` in the authors' code.

Shortcut: option **A** by default, the parameter-free identity of He et al.'s CIFAR models and
of the authors' code (subsample by 2, zero-pad the new channels, half on each side), which
gives ResNet-32 its 0.46M parameters (464,154 for 10 classes). ``shortcut="B"`` uses a 1x1
conv + BN projection instead (two more convs and BNs: 466,906 parameters for 10 classes).

Parameter names (top level): ``stem_conv``, ``stem_bn``, ``stage{s}_block{b}`` for
s = 1..3 and b = 1..n, and ``head``. The last block ("LB" in the paper) is
``stage3_block{n}``, e.g. ``stage3_block5`` in ResNet-32.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from absgd_jax.models.blocks import BasicBlock
from absgd_jax.models.heads import classifier_head
from absgd_jax.models.layers import Dtype, batch_norm, conv, global_avg_pool, kaiming_normal_fan_in


class CifarResNet(nn.Module):
  """A CIFAR ResNet with ``6 * blocks_per_stage + 2`` layers.

  Attributes:
    num_classes: number of classes.
    blocks_per_stage: n, the number of basic blocks in each of the 3 stages.
    widths: channels of the 3 stages.
    shortcut: "A" (zero-padding identity, default, as the authors' code) or "B" (1x1 conv + BN).
    head: "linear" or "cosine" (see :mod:`absgd_jax.models.heads`).
    dtype: computation dtype, e.g. ``jnp.bfloat16`` for mixed precision; the head computes
      in float32.
    param_dtype: dtype of the parameters and BatchNorm statistics.
    axis_name: pmap / shard_map axis for global BatchNorm statistics, or None.

  Examples:
    Shapes only (``jax.eval_shape`` traces without computing, so this stays fast):

    >>> import functools, jax, jax.numpy as jnp
    >>> model = CifarResNet(num_classes=10, blocks_per_stage=1)  # ResNet-8
    >>> x = jnp.zeros((1, 32, 32, 3))
    >>> variables = jax.eval_shape(functools.partial(model.init, train=False),
    ...                            jax.random.key(0), x)
    >>> sorted(variables), model.depth
    (['batch_stats', 'params'], 8)
    >>> jax.eval_shape(functools.partial(model.apply, train=False), variables, x).shape
    (1, 10)
  """

  num_classes: int
  blocks_per_stage: int = 5
  widths: tuple[int, ...] = (16, 32, 64)
  shortcut: str = "A"
  head: str = "linear"
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  axis_name: str | None = None

  @property
  def depth(self) -> int:
    """Number of weighted layers, 6n + 2 for 3 stages."""
    return 2 * len(self.widths) * self.blocks_per_stage + 2

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    """Logits (B, num_classes) of NHWC images ``x``; ``train`` selects batch statistics."""
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    x = conv(self.widths[0], 3, kernel_init=kaiming_normal_fan_in, name="stem_conv", **kw)(x)
    x = nn.relu(batch_norm(train, axis_name=self.axis_name, name="stem_bn", **kw)(x))
    for s, width in enumerate(self.widths, start=1):
      for b in range(1, self.blocks_per_stage + 1):
        stride = 2 if (s > 1 and b == 1) else 1
        x = BasicBlock(
          width,
          stride,
          shortcut=self.shortcut,
          axis_name=self.axis_name,
          conv_init=kaiming_normal_fan_in,
          name=f"stage{s}_block{b}",
          **kw,
        )(x, train)
    x = global_avg_pool(x)
    return classifier_head(self.head, self.num_classes, linear_init=kaiming_normal_fan_in, **kw)(x)


def resnet8(num_classes: int, **kwargs) -> CifarResNet:
  """ResNet-8 for CIFAR (n = 1); ``kwargs`` are :class:`CifarResNet` attributes."""
  return CifarResNet(num_classes=num_classes, blocks_per_stage=1, **kwargs)


def resnet20(num_classes: int, **kwargs) -> CifarResNet:
  """ResNet-20 for CIFAR (n = 3), 0.27M parameters with shortcut A."""
  return CifarResNet(num_classes=num_classes, blocks_per_stage=3, **kwargs)


def resnet32(num_classes: int, **kwargs) -> CifarResNet:
  """ResNet-32 for CIFAR (n = 5), the paper's CIFAR model: 0.46M parameters with shortcut A."""
  return CifarResNet(num_classes=num_classes, blocks_per_stage=5, **kwargs)
