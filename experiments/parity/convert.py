"""Weights of the PyTorch reference's CIFAR ResNet (:mod:`torch_reference`) as absgd_jax's.

The reference names its modules as torchvision does (``conv1``, ``bn1``,
``layer{k}.{i}.conv{j}``, ``fc``), so the name map, the layout changes (OIHW -> HWIO, the
linear weight transposed) and the state-dict clean-up are those of
:mod:`absgd_jax.models.pretrained`, reused here. That module's public entry points refuse a
CIFAR stem on purpose (ImageNet weights need the 7x7 one), so this file walks the template
itself: every leaf of ``create_model("resnet8" / "resnet32")``'s variables must find a tensor
of its shape, and every tensor a leaf.

    variables = torch_to_flax(torch_model.state_dict(), template)   # template: model.init(...)
    state_dict = flax_to_torch(variables)                           # numpy arrays, torch names
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from absgd_jax.models import pretrained as tv  # The torchvision converter's helpers.

_COLLECTIONS = ("params", "batch_stats")


def _leaves(variables: Mapping[str, Any]):
  """(flax path with its collection, torch name, template leaf) for every leaf."""
  missing = [c for c in _COLLECTIONS if c not in variables]
  if missing:
    raise ValueError(
      f"Expected {{'params': ..., 'batch_stats': ...}} (model.init's "
      f"variables); {', '.join(missing)} missing."
    )
  for collection in _COLLECTIONS:
    for path, leaf in traverse_util.flatten_dict(variables[collection]).items():
      full = (collection, *map(str, path))
      yield full, tv._torch_key(full), leaf


def torch_to_flax(state_dict: Mapping[str, Any], variables: Mapping[str, Any]) -> dict:
  """The reference's state dict as ``{"params", "batch_stats"}`` shaped like ``variables``.

  Raises:
    ValueError: naming every missing, unexpected or misshapen tensor.
  """
  state = tv._normalise_state_dict(state_dict)
  out, used, missing, misshapen = {}, set(), [], []
  for path, key, leaf in _leaves(variables):
    if key not in state:
      missing.append(key)
      continue
    used.add(key)
    # A copy: numpy views of torch tensors share their memory, which jax may keep aliasing,
    # so the torch model's in-place updates would otherwise change these variables too.
    raw = np.array(tv._to_numpy(state[key]), copy=True)
    value = tv._torch_to_flax_layout(raw, len(leaf.shape))
    if value.shape != tuple(leaf.shape):
      misshapen.append(f"{key} {value.shape} vs {'/'.join(path)} {tuple(leaf.shape)}")
      continue
    out[path] = jnp.asarray(value, dtype=leaf.dtype)
  unexpected = sorted(set(state) - used)
  if missing or misshapen or unexpected:
    raise ValueError(
      tv._mismatch_message(missing, misshapen, unexpected, variables["params"], state)
    )
  return traverse_util.unflatten_dict(out)


def flax_to_torch(variables: Mapping[str, Any]) -> dict[str, np.ndarray]:
  """The inverse: torch name -> numpy array (load with ``torch.from_numpy``)."""
  return {
    key: tv._flax_to_torch_layout(np.array(leaf, dtype=np.float32))
    for _, key, leaf in _leaves(variables)
  }
