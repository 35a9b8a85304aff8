"""ImageNet-style ResNets (He et al. 2016): ResNet-18/34 (basic blocks), -50/101/152 (bottlenecks).

The layout is torchvision's, so parameter counts agree with it (ResNet-50: 25,557,032 for
1000 classes): a stem, four stages of 64, 128, 256, 512 (x4 for bottlenecks) channels whose
first block (from stage 2 on) halves the resolution, global average pooling, the head.
Shortcuts that change the shape are 1x1 conv + BN projections (option B), and the stride of
a bottleneck sits on its 3x3 conv ("ResNet v1.5"). Convs start from Kaiming-normal (fan-out),
the linear head from PyTorch's ``nn.Linear`` default, as torchvision does.

The paper uses ResNet-50/152 for ImageNet-LT, Places-LT and iNaturalist, and ResNet-18/34 for
noisy CIFAR-100. Two stems:

* ``cifar_stem=False``: 7x7 conv, stride 2, + BN + ReLU + 3x3 max-pool, stride 2 (224x224
  inputs -> 56x56).
* ``cifar_stem=True``: 3x3 conv, stride 1, + BN + ReLU, no pooling, so 32x32 images keep
  their resolution in the first stage, as in the usual CIFAR ResNet-18/34.

``zero_init_residual`` starts the last BN scale of every block at 0 (Goyal et al. 2017);
it is off by default, as in torchvision.

Parameter names (top level): ``stem_conv``, ``stem_bn``, ``stage{s}_block{b}`` for
s = 1..4 (b from 1), and ``head``. The last block ("LB") is the last stage's last block,
e.g. ``stage4_block3`` in ResNet-50.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from absgd_jax.models.blocks import BasicBlock, Bottleneck
from absgd_jax.models.heads import classifier_head
from absgd_jax.models.layers import Dtype, batch_norm, conv, global_avg_pool, kaiming_normal_fan_out

BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck}


class ResNet(nn.Module):
  """An ImageNet-style ResNet.

  Attributes:
    num_classes: number of classes.
    stage_sizes: number of blocks in each stage, e.g. (3, 4, 6, 3) for ResNet-50.
    block: "basic" (two 3x3 convs) or "bottleneck" (1x1, 3x3, 1x1 with 4x expansion).
    widths: base channels of the stages (a bottleneck outputs 4x).
    cifar_stem: 3x3/stride-1 stem without max-pool (True) or 7x7/stride-2 + max-pool (False).
    zero_init_residual: start each block's last BN scale at 0.
    head: "linear" or "cosine" (see :mod:`absgd_jax.models.heads`).
    dtype: computation dtype, e.g. ``jnp.bfloat16``; the classifier head computes in float32.
    param_dtype: dtype of the parameters and BatchNorm statistics.
    axis_name: pmap / shard_map axis for global BatchNorm statistics, or None.

  Examples:
    >>> import functools, jax, jax.numpy as jnp
    >>> model = ResNet(num_classes=100, stage_sizes=(2, 2, 2, 2), cifar_stem=True)  # ResNet-18
    >>> x = jnp.zeros((1, 32, 32, 3))
    >>> shapes = jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0), x)
    >>> shapes["params"]["head"]["kernel"].shape
    (512, 100)
  """

  num_classes: int
  stage_sizes: Sequence[int] = (2, 2, 2, 2)
  block: str = "basic"
  widths: Sequence[int] = (64, 128, 256, 512)
  cifar_stem: bool = False
  zero_init_residual: bool = False
  head: str = "linear"
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  axis_name: str | None = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    """Logits (B, num_classes) of NHWC images ``x``; ``train`` selects batch statistics."""
    if self.block not in BLOCKS:
      raise ValueError(f"Unknown block {self.block!r}; valid choices: {', '.join(BLOCKS)}.")
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    if self.cifar_stem:
      x = conv(self.widths[0], 3, kernel_init=kaiming_normal_fan_out, name="stem_conv", **kw)(x)
    else:
      x = conv(self.widths[0], 7, 2, kernel_init=kaiming_normal_fan_out, name="stem_conv", **kw)(x)
    x = nn.relu(batch_norm(train, axis_name=self.axis_name, name="stem_bn", **kw)(x))
    if not self.cifar_stem:
      # PyTorch's MaxPool2d(3, 2, padding=1); flax pads max-pool with -inf, so padding is inert.
      x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    block_cls = BLOCKS[self.block]
    for s, (size, width) in enumerate(zip(self.stage_sizes, self.widths), start=1):
      for b in range(1, size + 1):
        stride = 2 if (s > 1 and b == 1) else 1
        x = block_cls(
          width,
          stride,
          shortcut="B",
          zero_init_residual=self.zero_init_residual,
          axis_name=self.axis_name,
          conv_init=kaiming_normal_fan_out,
          name=f"stage{s}_block{b}",
          **kw,
        )(x, train)
    x = global_avg_pool(x)
    return classifier_head(self.head, self.num_classes, **kw)(x)


def resnet18(num_classes: int, **kwargs) -> ResNet:
  """ResNet-18: basic blocks (2, 2, 2, 2); ``kwargs`` are :class:`ResNet` attributes."""
  return ResNet(num_classes=num_classes, stage_sizes=(2, 2, 2, 2), block="basic", **kwargs)


def resnet34(num_classes: int, **kwargs) -> ResNet:
  """ResNet-34: basic blocks (3, 4, 6, 3)."""
  return ResNet(num_classes=num_classes, stage_sizes=(3, 4, 6, 3), block="basic", **kwargs)


def resnet50(num_classes: int, **kwargs) -> ResNet:
  """ResNet-50: bottlenecks (3, 4, 6, 3); 25,557,032 parameters for 1000 classes."""
  return ResNet(num_classes=num_classes, stage_sizes=(3, 4, 6, 3), block="bottleneck", **kwargs)


def resnet101(num_classes: int, **kwargs) -> ResNet:
  """ResNet-101: bottlenecks (3, 4, 23, 3); 44,549,160 parameters for 1000 classes."""
  return ResNet(num_classes=num_classes, stage_sizes=(3, 4, 23, 3), block="bottleneck", **kwargs)


def resnet152(num_classes: int, **kwargs) -> ResNet:
  """ResNet-152: bottlenecks (3, 8, 36, 3); 60,192,808 parameters for 1000 classes."""
  return ResNet(num_classes=num_classes, stage_sizes=(3, 8, 36, 3), block="bottleneck", **kwargs)
