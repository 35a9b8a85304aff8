"""A small MLP for scikit-learn's digits (8x8 grey images, 10 classes): the offline demo's model.

Layout: flatten, then ``block1`` = dense 128 + ReLU, ``block2`` = dense 64 + ReLU, then
``head``. With 10 classes that is 64*128 + 128 + 128*64 + 64 + 64*10 + 10 = 17,226
parameters: trains in seconds on a CPU. No BatchNorm (so no ``batch_stats`` collection);
``train`` and ``axis_name`` are accepted so that every model has the same interface.
The last block ("LB") is the last hidden layer, ``block2`` by default.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from absgd_jax.models.heads import classifier_head
from absgd_jax.models.layers import Dtype, kaiming_normal_fan_in


class MLP(nn.Module):
  """Flatten + ``len(hidden)`` dense ReLU layers + a classifier head.

  Attributes:
    num_classes: number of classes.
    hidden: widths of the hidden layers.
    head: "linear" or "cosine" (see :mod:`absgd_jax.models.heads`).
    dtype: computation dtype, e.g. ``jnp.bfloat16``; the classifier head computes in float32.
    param_dtype: dtype of the parameters.
    axis_name: unused (no BatchNorm); kept for a uniform model interface.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> model = MLP(num_classes=10)
    >>> x = jnp.zeros((4, 8, 8))  # digits images; (4, 64) or (4, 8, 8, 1) work as well
    >>> variables = model.init(jax.random.key(0), x, train=False)
    >>> model.apply(variables, x, train=False).shape
    (4, 10)
  """

  num_classes: int
  hidden: Sequence[int] = (128, 64)
  head: str = "linear"
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  axis_name: str | None = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    """Logits (B, num_classes) of inputs with a leading batch axis; ``train`` is unused."""
    del train  # No dropout or BatchNorm: training and evaluation compute the same function.
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    x = x.reshape(x.shape[0], -1)
    for i, width in enumerate(self.hidden, start=1):
      x = nn.relu(nn.Dense(width, kernel_init=kaiming_normal_fan_in, name=f"block{i}", **kw)(x))
    return classifier_head(self.head, self.num_classes, **kw)(x)


def mlp(num_classes: int, **kwargs) -> MLP:
  """The digits MLP; ``kwargs`` are :class:`MLP` attributes."""
  return MLP(num_classes=num_classes, **kwargs)
