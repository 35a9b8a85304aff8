"""The standard CIFAR augmentation, random crop with 4-pixel padding and horizontal flip, in
jax.numpy so that it runs inside the jitted train step, on the accelerator; then normalisation.

Everything is vectorised over the batch with fixed shapes: the crop offsets and the flips are
drawn for the whole batch from one PRNG key, and the crop and the flip are done together by a
single gather of (row, column) indices. Nothing is padded in memory: a pixel read from the
padding comes out 0 (``mode="constant"``, the standard), or as its mirror or nearest edge
pixel. New keys never recompile.

Examples:
  >>> import jax, jax.numpy as jnp
  >>> images = jnp.zeros((128, 32, 32, 3), jnp.uint8)
  >>> step = jax.jit(lambda key, x: augment_cifar(key, x))
  >>> out = step(jax.random.key(0), images)
  >>> out.shape, out.dtype
  ((128, 32, 32, 3), dtype('float32'))
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp

from absgd_jax.data.cifar import CIFAR10_MEAN, CIFAR10_STD

PAD_MODES = ("constant", "reflect", "edge")


# The public functions are jitted (with the shape-deciding arguments static) so that a call
# outside a jitted step compiles once rather than dispatching op by op; inside a step the
# inner jit is inlined.
def _jit(*static: str):
  return functools.partial(jax.jit, static_argnames=static)


class CropFlipParams(NamedTuple):
  """The random choices of :func:`random_crop_flip` for a batch of ``B`` images."""

  dy: jax.Array  # int32 [B] in [0, 2 * padding]: the window's top row in the padded image.
  dx: jax.Array  # int32 [B] in [0, 2 * padding]: its left column.
  flip: jax.Array  # bool [B]: mirror the window left-right.


@_jit("batch_size", "padding")
def crop_flip_params(key: jax.Array, batch_size: int, padding: int = 4) -> CropFlipParams:
  """Draws offsets uniformly in ``[0, 2 * padding]`` and flips with probability 1/2.

  Examples:
    >>> import jax
    >>> p = crop_flip_params(jax.random.key(0), 5)
    >>> p.dy.shape, bool((p.dx >= 0).all() & (p.dx <= 8).all())
    ((5,), True)
  """
  k_y, k_x, k_f = jax.random.split(key, 3)
  hi = 2 * int(padding) + 1
  return CropFlipParams(
    dy=jax.random.randint(k_y, (batch_size,), 0, hi, dtype=jnp.int32),
    dx=jax.random.randint(k_x, (batch_size,), 0, hi, dtype=jnp.int32),
    flip=jax.random.bernoulli(k_f, 0.5, (batch_size,)),
  )


def _source_index(pos: jax.Array, size: int, mode: str) -> tuple[jax.Array, jax.Array]:
  """Maps positions in the padded axis (shifted to the image's frame) to image indices."""
  inside = (pos >= 0) & (pos < size)
  if mode == "reflect":  # Mirror without repeating the edge pixel: -1 -> 1, size -> size - 2.
    pos = jnp.abs(pos)
    pos = jnp.where(pos >= size, 2 * (size - 1) - pos, pos)
  return jnp.clip(pos, 0, size - 1), inside


@_jit("padding", "mode")
def crop_flip(
  images: jax.Array, params: CropFlipParams, padding: int = 4, mode: str = "constant"
) -> jax.Array:
  """Crops each image's ``H x W`` window at ``(dy, dx)`` of its padded version, then flips it.

  Args:
    images: ``[B, H, W, C]``, any dtype (kept).
    params: the offsets and flips, from :func:`crop_flip_params`.
    padding: the padding on every side (``padding < min(H, W)`` for ``"reflect"``).
    mode: what the padding holds: ``"constant"`` (zeros), ``"reflect"`` or ``"edge"``.

  Returns:
    ``[B, H, W, C]``, the dtype of ``images``.

  Examples:
    >>> import jax.numpy as jnp
    >>> x = jnp.arange(9).reshape(1, 3, 3, 1)
    >>> p = CropFlipParams(dy=jnp.array([2]), dx=jnp.array([1]), flip=jnp.array([True]))
    >>> crop_flip(x, p, padding=1)[0, ..., 0]  # One row down (zeros below), mirrored.
    Array([[5, 4, 3],
           [8, 7, 6],
           [0, 0, 0]], dtype=int32)
  """
  if mode not in PAD_MODES:
    raise ValueError(f"mode must be one of {PAD_MODES}; got {mode!r}.")
  if images.ndim != 4:
    raise ValueError(f"images must be [B, H, W, C]; got shape {images.shape}.")
  b, h, w, _ = images.shape
  if mode == "reflect" and padding >= min(h, w):
    raise ValueError(f"reflect padding needs padding < min(H, W); got {padding} for {h}x{w}.")
  rows = params.dy[:, None] - padding + jnp.arange(h)  # [B, H]
  cols = jnp.arange(w)
  cols = jnp.where(params.flip[:, None], cols[::-1], cols)  # The flip is a column reversal.
  cols = params.dx[:, None] - padding + cols  # [B, W]
  rows, row_in = _source_index(rows, h, mode)
  cols, col_in = _source_index(cols, w, mode)
  out = images[jnp.arange(b)[:, None, None], rows[:, :, None], cols[:, None, :]]
  if mode == "constant":
    inside = row_in[:, :, None] & col_in[:, None, :]
    out = jnp.where(inside[..., None], out, jnp.zeros((), images.dtype))
  return out


@_jit("padding", "mode")
def random_crop_flip(
  key: jax.Array, images: jax.Array, padding: int = 4, mode: str = "constant"
) -> jax.Array:
  """The CIFAR augmentation: a random ``H x W`` crop of the padded image, flipped half the time.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> x = jnp.ones((2, 32, 32, 3), jnp.uint8)
    >>> y = random_crop_flip(jax.random.key(1), x)
    >>> y.shape, y.dtype
    ((2, 32, 32, 3), dtype('uint8'))
  """
  return crop_flip(images, crop_flip_params(key, images.shape[0], padding), padding, mode)


@_jit()
def normalize(
  images: jax.Array, mean: Sequence[float] = CIFAR10_MEAN, std: Sequence[float] = CIFAR10_STD
) -> jax.Array:
  """``(x - mean) / std`` per channel, in float32.

  ``uint8`` images are first scaled to [0, 1] (divided by 255); floating images are taken to be
  in [0, 1] already. ``mean`` and ``std`` are per channel (the last axis).

  Examples:
    >>> import jax.numpy as jnp
    >>> normalize(jnp.full((1, 1, 1, 3), 255, jnp.uint8), mean=(0.5,) * 3, std=(0.5,) * 3)
    Array([[[[1., 1., 1.]]]], dtype=float32)
  """
  x = jnp.asarray(images)
  if jnp.issubdtype(x.dtype, jnp.integer):
    x = x.astype(jnp.float32) * (1.0 / 255.0)
  else:
    x = x.astype(jnp.float32)
  mean = jnp.asarray(mean, jnp.float32)
  inv_std = 1.0 / jnp.asarray(std, jnp.float32)
  return (x - mean) * inv_std


@_jit("padding", "mode")
def augment_cifar(
  key: jax.Array,
  images: jax.Array,
  *,
  padding: int = 4,
  mode: str = "constant",
  mean: Sequence[float] = CIFAR10_MEAN,
  std: Sequence[float] = CIFAR10_STD,
) -> jax.Array:
  """Random crop and flip, then normalisation: the training-time input pipeline for CIFAR.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> augment_cifar(jax.random.key(0), jnp.zeros((4, 32, 32, 3), jnp.uint8)).shape
    (4, 32, 32, 3)
  """
  return normalize(random_crop_flip(key, images, padding, mode), mean, std)
