"""Throughput of the CIFAR input pipeline: batches of 128 32x32 images, crop + flip + normalise.

The target: >= 20,000 images/s on 2 CPU cores, so that the input never holds up a train
step. Two figures, each the median of ``--repeats`` timed runs after a warm-up (which
includes the one compilation):

* ``augment``: the jitted augmentation of a batch already on the device, a fresh PRNG key per
  step (folded in from the step number inside the jitted function, as in a train step).
* ``pipeline``: the whole host side as the trainer runs it: an epoch's shuffled index batches
  (:func:`absgd_jax.data.epoch_batches`), the NumPy gather of the uint8 images, the transfer and
  the jitted augmentation.

``--decode`` also times the one-time decode of ``shared/data/cifar10-jpeg/train.zip`` (50,000
JPEGs) and the cache hit that replaces it afterwards; the pipeline then runs on those images.

Usage:
  python benchmarks/data_throughput.py [--decode] [--json results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from absgd_jax import data

DEFAULT_ZIP = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpeg" / "train.zip"


def _median_rate(run, n_images: int, repeats: int) -> tuple[float, list[float]]:
  run()  # Warm-up: compiles, faults pages in.
  seconds = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    run()
    seconds.append(time.perf_counter() - t0)
  return n_images / statistics.median(seconds), seconds


def bench_augment(batch_size: int, steps: int, repeats: int) -> dict:
  images = jnp.asarray(
    np.random.default_rng(0).integers(0, 256, (batch_size, 32, 32, 3), dtype=np.uint8)
  )
  base = jax.random.key(0)
  augment = jax.jit(lambda step, x: data.augment_cifar(jax.random.fold_in(base, step), x))

  def run():
    out = None
    for i in range(steps):
      out = augment(jnp.int32(i), images)
    out.block_until_ready()

  rate, secs = _median_rate(run, steps * batch_size, repeats)
  return {
    "name": "augment",
    "images_per_s": rate,
    "batch_size": batch_size,
    "steps": steps,
    "seconds": secs,
  }


def bench_pipeline(images: np.ndarray, batch_size: int, steps: int, repeats: int) -> dict:
  base = jax.random.key(0)
  augment = jax.jit(lambda step, x: data.augment_cifar(jax.random.fold_in(base, step), x))
  state = {"epoch": 0}

  def run():
    batches = data.epoch_batches(len(images), batch_size, seed=0, epoch=state["epoch"])
    state["epoch"] += 1
    out = None
    for i, batch in zip(range(steps), batches):
      out = augment(jnp.int32(i), images[batch.indices])  # Gather on the host, then transfer.
    out.block_until_ready()

  rate, secs = _median_rate(run, steps * batch_size, repeats)
  return {
    "name": "pipeline",
    "images_per_s": rate,
    "batch_size": batch_size,
    "steps": steps,
    "num_images": len(images),
    "seconds": secs,
  }


def bench_decode(zip_path: Path) -> tuple[dict, np.ndarray]:
  with tempfile.TemporaryDirectory() as cache:
    t0 = time.perf_counter()
    first = data.load_image_folder(zip_path, cache_dir=cache)
    miss_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    hit = data.load_image_folder(zip_path, cache_dir=cache)
    hit_s = time.perf_counter() - t0
    assert hit.meta["cache_hit"] and np.array_equal(hit.images, first.images)
  result = {
    "name": "decode",
    "zip": str(zip_path),
    "num_images": len(first),
    "decode_seconds": first.meta["decode_seconds"],
    "first_load_seconds": miss_s,  # Hash + list + decode + cache write.
    "cache_hit_seconds": hit_s,
    "decode_images_per_s": len(first) / first.meta["decode_seconds"],
  }
  return result, first.images


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--batch-size", type=int, default=128)
  parser.add_argument("--steps", type=int, default=100, help="batches per timed run")
  parser.add_argument("--repeats", type=int, default=7)
  parser.add_argument("--decode", action="store_true", help="also time decoding train.zip")
  parser.add_argument("--zip", type=Path, default=DEFAULT_ZIP)
  parser.add_argument("--json", type=Path, default=None, help="write the results here")
  args = parser.parse_args(argv)

  env = {
    "python": platform.python_version(),
    "jax": jax.__version__,
    "device": str(jax.devices()[0]),
    "cpu_count": os.cpu_count(),
    "machine": platform.machine(),
    "processor": platform.processor(),
    # Other work on the machine slows every figure; record how busy it was.
    "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
  }
  results = [bench_augment(args.batch_size, args.steps, args.repeats)]
  images = None
  if args.decode:
    if not args.zip.exists():
      print(f"--decode: {args.zip} not found; skipping the decode timing.", file=sys.stderr)
    else:
      decode, images = bench_decode(args.zip)
      results.append(decode)
  if images is None:  # Synthetic CIFAR-sized training set.
    images = np.random.default_rng(1).integers(0, 256, (50000, 32, 32, 3), dtype=np.uint8)
  results.append(bench_pipeline(images, args.batch_size, args.steps, args.repeats))

  print(
    f"jax {env['jax']} on {env['device']}, {env['cpu_count']} CPUs; batch "
    f"{args.batch_size}, median of {args.repeats} runs of {args.steps} batches; "
    f"load average at start {env['load_average_1min']}"
  )
  print(f"{'measure':<34}{'value':>14}")
  for r in results:
    if r["name"] == "decode":
      print(
        f"{'decode ' + str(r['num_images']) + ' JPEGs (one-time)':<34}"
        f"{r['decode_seconds']:>12.2f} s"
      )
      print(f"{'  first load (hash+decode+cache)':<34}{r['first_load_seconds']:>12.2f} s")
      print(f"{'  later load (cache hit)':<34}{r['cache_hit_seconds']:>12.2f} s")
    else:
      label = {
        "augment": "augment (crop+flip+normalize, jit)",
        "pipeline": "pipeline (batch+gather+augment)",
      }[r["name"]]
      print(f"{label:<34}{r['images_per_s']:>10,.0f} img/s")
  target = min(r["images_per_s"] for r in results if "images_per_s" in r)
  print(
    f"target >= 20,000 img/s: {'met' if target >= 20000 else 'NOT met'} "
    f"(slowest: {target:,.0f} img/s)"
  )
  if args.json is not None:
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
      json.dumps(
        {"env": env, "args": {k: str(v) for k, v in vars(args).items()}, "results": results},
        indent=1,
      )
    )
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
