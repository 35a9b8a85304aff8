"""Tolerances for two float32 computations of one result, measured instead of chosen.

Two kinds. A training run: :func:`nudge`, :func:`distance` and :func:`assert_within`. A
computation without chaos (the weights of a batch, a few steps of a linear model):
:func:`assert_float32_paths_agree`, against a float64 reference, with the one-device path's
own error as the yardstick, or :func:`reordered`, the same computation on reordered rows.

Two float32 paths of the same run (1 or 8 devices, 1 or 2 processes) sum in other orders, so
they differ in the last bits; a ReLU pre-activation within that rounding of 0 then falls on
the other side of its kink and moves its channel's gradient discretely, and the steps that
follow amplify the difference. How far this goes depends on the run and on the CPU's code
generator, so a fixed tolerance passes on one machine and fails on another. The yardstick
is measured on the machine itself: the same run on one device with every initial weight
moved by one float32 ulp (a relative 1e-7 perturbation, the size of one rounding, as in
tests/test_parity.py). Two paths that differ by float32 rounding alone stay within a small
multiple of it; a real difference (a wrong shard, a sum over the local batch only) moves the
weights as far as a different run.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def nudge(tree):
  """Every floating leaf of ``tree`` moved by one ulp, toward +inf."""
  return jax.tree.map(
    lambda x: (
      jnp.nextafter(x, jnp.asarray(jnp.inf, x.dtype))
      if jnp.issubdtype(x.dtype, jnp.floating)
      else x
    ),
    tree,
  )


def distance(a, b) -> tuple[float, float]:
  """``(max |a - b|, ||a - b||_2)`` over all leaves of two pytrees of the same structure."""
  pairs = [
    (np.asarray(x, np.float64), np.asarray(y, np.float64))
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
  ]
  return (
    max(float(np.abs(x - y).max()) for x, y in pairs),
    float(np.sqrt(sum(((x - y) ** 2).sum() for x, y in pairs))),
  )


# The yardstick is one sample of a random quantity (which kinks a nudge flips), so a path
# may land a few times as far; 5x, as the parity test allows against its own perturbation.
# Measured on a 2-core AMD EPYC (ResNet-8, one epoch of tests/test_streaming.py's lists):
# the nudge moved the weights by 0.043 (max) and 0.31 (L2); 8 devices by 1e-4 and 5e-4;
# 2 devices by 0.028 and 0.27.
FACTOR = 5.0


def reordered(one, other) -> tuple[float, float]:
  """The yardstick of a computation without chaos: the :func:`distance` between its result
  ``one`` and ``other``, the same computation on the batch's rows in another order (its sums
  then round otherwise, as over other devices), and at least a few ulps of ``one``."""
  leaves = [np.asarray(x, np.float64) for x in jax.tree.leaves(one)]
  floor = _FLOOR * max(float(np.abs(x).max()) for x in leaves if x.size)
  l2_floor = _FLOOR * float(np.sqrt(sum((x**2).sum() for x in leaves)))
  d = distance(one, other)
  return max(d[0], floor), max(d[1], l2_floor)


def assert_within(got, want, yardstick: tuple[float, float], what: str) -> None:
  """``got`` is as close to ``want`` as float32 rounding allows, by both of distance's norms."""
  assert yardstick[1] > 0, "the nudged run is the same as the original: no yardstick"
  d = distance(got, want)
  assert d[0] <= FACTOR * yardstick[0] and d[1] <= FACTOR * yardstick[1], (
    f"{what}: max |diff| {d[0]:.3g}, L2 {d[1]:.3g}; the yardstick (float32 rounding "
    f"alone) is {yardstick[0]:.3g} and {yardstick[1]:.3g} (allowed: {FACTOR:g}x)"
  )


# The least error counted as float32's: a few ulps, so that a path that happens to round
# almost exactly does not make the other's ordinary rounding look like a fault.
_FLOOR = 4 * float(np.finfo(np.float32).eps)


def normwise_error(a, ref) -> float:
  """``max |a - ref| / max |ref|``, in float64 (the error relative to the largest entry)."""
  a, ref = np.asarray(a, np.float64), np.asarray(ref, np.float64)
  return float(np.max(np.abs(a - ref)) / max(np.max(np.abs(ref)), 1e-300))


def assert_float32_paths_agree(got, single, ref, what: str) -> None:
  """Two float32 paths of one computation (``got``: 8 devices, say; ``single``: one) against
  its float64 reference ``ref``: ``got`` is no farther from ``ref`` than FACTOR times the
  error that float32 rounding gives ``single`` on this machine (at least a few ulps)."""
  err_single = normwise_error(single, ref)
  err_got = normwise_error(got, ref)
  allowed = FACTOR * max(err_single, _FLOOR)
  assert err_got <= allowed, (
    f"{what}: {err_got:.3g} from the float64 reference, where the one-device float32 path "
    f"is {err_single:.3g} from it (allowed: {allowed:.3g})"
  )
