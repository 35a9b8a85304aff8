"""Models by name: ``create_model("resnet32", num_classes=10, head="cosine")``."""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn

from absgd_jax.models.cnn import cnn4
from absgd_jax.models.mlp import mlp
from absgd_jax.models.resnet import resnet18, resnet34, resnet50, resnet101, resnet152
from absgd_jax.models.resnet_cifar import resnet8, resnet20, resnet32

_FACTORIES: dict[str, Callable[..., nn.Module]] = {
  "resnet8": resnet8,  # CIFAR, 16/32/64 channels, shortcut A by default.
  "resnet20": resnet20,
  "resnet32": resnet32,  # The paper's CIFAR-LT / ST model.
  "resnet18": resnet18,  # ImageNet-style; cifar_stem=True for 32x32 inputs.
  "resnet34": resnet34,
  "resnet50": resnet50,  # ImageNet-LT, Places-LT, iNaturalist.
  "resnet101": resnet101,
  "resnet152": resnet152,
  "cnn4": cnn4,  # The SCE paper's CNN for noisy CIFAR-10.
  "mlp": mlp,  # scikit-learn digits.
}
MODEL_NAMES: tuple[str, ...] = tuple(_FACTORIES)


def create_model(name: str, num_classes: int, **kwargs) -> nn.Module:
  """The model called ``name`` with ``num_classes`` outputs.

  Args:
    name: one of :data:`MODEL_NAMES` (case-insensitive).
    num_classes: number of classes.
    **kwargs: attributes of the model's class, e.g. ``head="cosine"``,
      ``dtype=jnp.bfloat16``, ``axis_name="batch"``, ``shortcut="B"`` (CIFAR ResNets),
      ``cifar_stem=True`` (ImageNet ResNets).

  Returns:
    An unbound Linen module; call ``init``/``apply`` with ``(x, train=...)``.

  Raises:
    ValueError: for an unknown name, listing the valid ones.

  Examples:
    >>> create_model("resnet32", num_classes=10).blocks_per_stage
    5
    >>> create_model("vgg16", num_classes=10)
    Traceback (most recent call last):
    ...
    ValueError: Unknown model 'vgg16'; valid choices: resnet8, resnet20, ...
  """
  factory = _FACTORIES.get(str(name).lower())
  if factory is None:
    raise ValueError(f"Unknown model {name!r}; valid choices: {', '.join(MODEL_NAMES)}.")
  return factory(num_classes, **kwargs)
