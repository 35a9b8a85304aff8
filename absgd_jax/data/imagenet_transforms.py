"""ImageNet-style image transforms, on the host: random-resized crop + flip, resize + center crop.

These run in the input pipeline's worker processes (:mod:`absgd_jax.data.streaming`), one
image at a time, because the images come in all sizes: only the fixed-size crops go to the
accelerator, where they are normalised with :data:`IMAGENET_MEAN` / :data:`IMAGENET_STD`.

The training crop is the standard one: an area fraction drawn from ``scale`` and a log-uniform
aspect ratio from ``ratio``, up to 10 tries, then the largest center crop within ``ratio``;
the crop is resized to ``size x size`` (bilinear) and mirrored with probability 1/2. The test
transform resizes the shorter side to ``resize`` and takes the center ``crop x crop``. PIL
does the crop and the resize in one call (``Image.resize(box=...)``), so the full-size image
is never resized.

Examples:
  >>> import numpy as np
  >>> from PIL import Image
  >>> img = Image.fromarray(np.zeros((300, 400, 3), np.uint8))
  >>> random_resized_crop(img, np.random.default_rng(0), size=224).shape
  (224, 224, 3)
  >>> resize_center_crop(img, resize=256, crop=224).shape
  (224, 224, 3)
"""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


def decode_rgb(data: bytes, source: str = "image") -> Image.Image:
  """Decodes image bytes (JPEG, PNG, ...) to an RGB PIL image.

  Raises:
    ValueError: naming ``source`` when the bytes are not a readable image.
  """
  try:
    img = Image.open(io.BytesIO(data))
    return img.convert("RGB")
  except Exception as e:  # PIL raises several types for damaged files.
    raise ValueError(f"cannot decode {source}: {e}") from e


def crop_box(
  width: int,
  height: int,
  rng: np.random.Generator,
  scale: tuple[float, float] = (0.08, 1.0),
  ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> tuple[int, int, int, int]:
  """The random-resized-crop window ``(left, top, right, bottom)`` of a ``width x height``
  image."""
  area = width * height
  log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
  for _ in range(10):
    target = area * rng.uniform(scale[0], scale[1])
    aspect = math.exp(rng.uniform(log_lo, log_hi))
    w = int(round(math.sqrt(target * aspect)))
    h = int(round(math.sqrt(target / aspect)))
    if 0 < w <= width and 0 < h <= height:
      left = int(rng.integers(0, width - w + 1))
      top = int(rng.integers(0, height - h + 1))
      return left, top, left + w, top + h
  # Fallback: the whole image, trimmed to the nearest allowed aspect ratio, centred.
  in_ratio = width / height
  if in_ratio < ratio[0]:
    w, h = width, int(round(width / ratio[0]))
  elif in_ratio > ratio[1]:
    h, w = height, int(round(height * ratio[1]))
  else:
    w, h = width, height
  left, top = (width - w) // 2, (height - h) // 2
  return left, top, left + w, top + h


def random_resized_crop(
  img: Image.Image,
  rng: np.random.Generator,
  size: int = 224,
  scale: tuple[float, float] = (0.08, 1.0),
  ratio: tuple[float, float] = (3 / 4, 4 / 3),
  flip: bool = True,
) -> np.ndarray:
  """The training transform: ``uint8 [size, size, 3]``."""
  box = crop_box(img.width, img.height, rng, scale, ratio)
  out = img.resize((size, size), Image.BILINEAR, box=box)
  arr = np.asarray(out, dtype=np.uint8)
  if flip and rng.random() < 0.5:
    arr = arr[:, ::-1]
  return np.ascontiguousarray(arr)


def resize_center_crop(img: Image.Image, resize: int = 256, crop: int = 224) -> np.ndarray:
  """The test transform: shorter side to ``resize``, then the center ``crop x crop``."""
  if crop > resize:
    raise ValueError(f"crop={crop} must not exceed resize={resize}.")
  w, h = img.width, img.height
  s = resize / min(w, h)
  # The crop's window in the original image's coordinates, so that one resize does both.
  cw, ch = crop / s, crop / s
  left, top = (w - cw) / 2, (h - ch) / 2
  out = img.resize((crop, crop), Image.BILINEAR, box=(left, top, left + cw, top + ch))
  return np.asarray(out, dtype=np.uint8)
