"""The weigher: the object that turns a batch's per-sample losses into ABSGD's weights.

A weigher is a pair of pure functions in the style of an optax transform, ``init() -> state``
and ``update(losses, state, *, mask=None) -> (weights, state)``. It is not an optax
``GradientTransformation``: a transform sees the gradient of the already averaged loss, and
the weights must act on each sample's loss before that average. So a weigher goes where the
losses are reduced, through :func:`absgd_jax.weighted_mean`, and the optimizer alone goes to
optax. :func:`absgd_jax.absgd_weights` and :func:`absgd_jax.kl_absgd_weights` make one.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import Any, NamedTuple, Union

import jax

# The mapped axis (or axes) a batch is split over under pmap or shard_map.
AxisName = Union[Hashable, Sequence[Hashable]]


class Weigher(NamedTuple):
  """A pair of pure functions, ``init() -> state`` and ``update(losses, state) -> (w, state)``.

  Attributes:
    init: ``init() -> state``, the state before the first batch.
    update: ``update(losses, state, *, mask=None) -> (weights, state)``: float32 weights
      ``[B]`` for float losses ``[B]`` (``mask``: optional boolean ``[B]``, False on padding).
    axis_name: the mapped axis the batch is split over, or None; :func:`absgd_jax.weighted_mean`
      takes its denominator over the same global batch as the weights.

  Examples:
    >>> import jax.numpy as jnp, absgd_jax
    >>> weigher = absgd_jax.absgd_weights(lam=-1.0)  # lam < 0: easy samples weigh more
    >>> isinstance(weigher, absgd_jax.Weigher)
    True
    >>> w, state = weigher.update(jnp.log(jnp.array([1.0, 3.0])), weigher.init())
    >>> w  # exp(-L) / mean(exp(-L)) = (1, 1/3) / (2/3)
    Array([1.5, 0.5], dtype=float32)
  """

  init: Callable[[], Any]
  update: Callable[..., tuple[jax.Array, Any]]
  axis_name: AxisName | None = None
