"""Images/s of JPEG decode + ImageNet-style crop at 224 px, per CPU core and streamed.

    python benchmarks/imagenet_pipeline.py [--images 400] [--workers 0 1 2] [--json out.json]

The JPEGs are generated here (no download): ``--images`` files of 500 x 375 pixels, the
median size of ImageNet's training images, at JPEG quality 90, with smooth content plus noise
so that they compress like photographs (about 60-100 KB each, ImageNet's average is ~110 KB).
The script reports:

- per core: one process, one image at a time, decode + random-resized crop + flip (training)
  and decode + resize 256 + center crop 224 (test);
- streamed: :func:`absgd_jax.data.streaming.stream_images` with grain worker processes,
  batches of 64, as the training loop uses it.

Divide an accelerator's images/s by the per-core figure to get the workers it needs.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import numpy as np
from PIL import Image


def make_jpegs(folder: str, n: int, seed: int = 0) -> list[str]:
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[0:375, 0:500].astype(np.float32)
  paths = []
  for i in range(n):
    fx, fy, phase = rng.uniform(5, 60, 2).tolist() + [rng.uniform(0, 6.3)]
    base = 128 + 90 * np.sin(xx / fx + phase)[..., None] * np.cos(yy / fy)[..., None]
    pix = base * rng.uniform(0.3, 1.0, 3) + rng.normal(0, 12, (375, 500, 3))
    path = os.path.join(folder, f"{i:05d}.jpg")
    Image.fromarray(np.clip(pix, 0, 255).astype(np.uint8)).save(path, quality=90)
    paths.append(path)
  return paths


def per_core(paths: list[str], train: bool) -> float:
  from absgd_jax.data.imagenet_transforms import decode_rgb, random_resized_crop, resize_center_crop

  rng = np.random.default_rng(0)
  t0 = time.perf_counter()
  for p in paths:
    with open(p, "rb") as f:
      img = decode_rgb(f.read(), p)
    _ = random_resized_crop(img, rng, 224) if train else resize_center_crop(img, 256, 224)
  return len(paths) / (time.perf_counter() - t0)


def streamed(folder: str, n: int, workers: int) -> float:
  from absgd_jax.data import FileDataset
  from absgd_jax.data.streaming import StreamOptions, stream_images

  ds = FileDataset(folder, np.array([f"{i:05d}.jpg" for i in range(n)]), np.zeros(n, int), 1)
  b = 64
  rows = [np.arange(i, i + b) for i in range(0, n - b + 1, b)]
  pos = rows
  t0 = time.perf_counter()
  count = 0
  for batch in stream_images(
    ds, rows, train=True, seed=0, positions=pos, options=StreamOptions(workers=workers)
  ):
    count += len(batch)
  return count / (time.perf_counter() - t0)


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--images", type=int, default=400)
  ap.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
  ap.add_argument("--json")
  args = ap.parse_args(argv)
  with tempfile.TemporaryDirectory() as folder:
    paths = make_jpegs(folder, args.images)
    kb = np.mean([os.path.getsize(p) for p in paths]) / 1024
    out = {
      "images": args.images,
      "mean_jpeg_kb": kb,
      "cpus": os.cpu_count(),
      "per_core_train": per_core(paths, True),
      "per_core_test": per_core(paths, False),
      "streamed": {},
    }
    print(f"{args.images} JPEGs of 500x375, {kb:.0f} KB on average")
    print(
      f"per core: train {out['per_core_train']:.0f} images/s, "
      f"test {out['per_core_test']:.0f} images/s",
      flush=True,
    )
    for w in args.workers:
      out["streamed"][w] = streamed(folder, args.images, w)
      print(f"streamed, {w} grain workers: {out['streamed'][w]:.0f} images/s", flush=True)
  if args.json:
    with open(args.json, "w") as f:
      json.dump(out, f, indent=1)


if __name__ == "__main__":
  main()
