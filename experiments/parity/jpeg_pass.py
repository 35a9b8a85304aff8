"""One more JPEG pass over the shared CIFAR-10 copy, to bound what its own JPEG coding costs.

The shared copy is CIFAR-10 re-encoded as JPEG (quality 75, 4:2:0 chroma). Training on a
copy coded once more, the same way, costs some accuracy; the first coding, applied to clean
images, costs at least about as much (a second pass loses less than the first, since the
first already removed what the quantiser removes). So the drop from one extra pass is a rough
lower bound on the copy's own cost.

The extra pass shifts each image by (3, 5) pixels first (edge pixels repeated), so that its
8x8 blocks (16x16 for chroma) do not line up with the first pass's, encodes it with PIL at
quality 75 (PIL's default 4:2:0 subsampling), decodes it and shifts it back. Without the
shift the second quantisation would fall on the same block grid and change little.
"""

from __future__ import annotations

import dataclasses
import io
import os

import numpy as np
from PIL import Image

SHIFT = (3, 5)  # Rows, columns: not a multiple of 8 (nor of 16 for 4:2:0 chroma).
QUALITY = 75


def recode(image: np.ndarray, shift=SHIFT, quality: int = QUALITY) -> np.ndarray:
  """One shifted JPEG pass over a uint8 HWC RGB image; same shape and dtype.

  Examples:
    >>> x = np.full((32, 32, 3), 128, np.uint8)
    >>> y = recode(x)
    >>> y.shape, y.dtype, int(np.abs(y.astype(int) - 128).max()) <= 2
    ((32, 32, 3), dtype('uint8'), True)
  """
  dy, dx = shift
  padded = np.pad(image, ((dy, 0), (dx, 0), (0, 0)), mode="edge")
  buf = io.BytesIO()
  Image.fromarray(padded).save(buf, format="JPEG", quality=quality)
  decoded = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
  return decoded[dy:, dx:]


def recoded(dataset, cache: str | None = None):
  """The ArrayDataset with every image passed through :func:`recode`, cached as ``.npy``."""
  if cache and os.path.exists(cache):
    images = np.load(cache)
  else:
    images = np.stack([recode(x) for x in dataset.images])
    if cache:
      os.makedirs(os.path.dirname(cache) or ".", exist_ok=True)
      np.save(cache + ".tmp.npy", images)
      os.replace(cache + ".tmp.npy", cache)
  meta = dict(dataset.meta)
  meta["recoded"] = {"quality": QUALITY, "shift": list(SHIFT)}
  return dataclasses.replace(dataset, images=images, meta=meta)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
  """Peak signal-to-noise ratio in dB of two uint8 image stacks."""
  mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
  return float(10 * np.log10(255.0**2 / mse))
