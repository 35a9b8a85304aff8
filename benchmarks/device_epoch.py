"""An epoch fed from the host against the same epoch over resident data, in one call.

The host side is the Trainer's path: each batch gathered in NumPy and sent
(``inputs.train_batches``' way), one jitted step per batch, the metrics fetched at the end.
The device side keeps the images on the device and runs the epoch as one ``lax.scan``
(:mod:`absgd_jax.train.device_epoch`). Both run the kit's ABSGD step on the same batches
(``benchmarks/kit_step.py``), on random uint8 images with CIFAR-LT's class sizes. The first
epoch of each compiles and is timed apart; then ``--rounds`` rounds of one epoch each,
alternating which goes first, and the median of the per-round ratios is reported.

    python benchmarks/device_epoch.py                                  # ResNet-32, CIFAR-10-LT
    python benchmarks/device_epoch.py --model resnet8 --image-size 16 --n-max 500 --json out.json
    python benchmarks/device_epoch.py --loop-conv                      # why the CPU loses

``--loop-conv`` times one convolution's kernel gradient (3x3, 16 -> 16 channels, 16 px,
batch 128) alone and inside a one-step ``lax.scan``: XLA:CPU runs the second far slower,
and every step of a scanned epoch pays that.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from absgd_jax.data import num_batches
from absgd_jax.train import device_epoch as de
from kit_step import host_batch, machine_info, make_kit, synthetic_long_tailed


def loop_conv(rounds: int) -> dict:
  """Seconds for a convolution's kernel gradient (and an update), alone and inside a scan."""
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(128, 16, 16, 16)), jnp.float32)
  w = jnp.asarray(rng.normal(size=(3, 3, 16, 16)), jnp.float32)

  def update(w, _=None):
    def loss(w):
      y = jax.lax.conv_general_dilated(
        x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
      )
      return jnp.sum(jnp.tanh(y))

    return w - 0.01 * jax.grad(loss)(w), None

  fns = {
    "alone": jax.jit(lambda w: update(w)[0]),
    "in_scan": jax.jit(lambda w: jax.lax.scan(update, w, None, length=1)[0]),
  }
  out = {}
  for name, fn in fns.items():
    jax.block_until_ready(fn(w))
    times = []
    for _ in range(rounds):
      t = time.perf_counter()
      jax.block_until_ready(fn(w))
      times.append(time.perf_counter() - t)
    out[name] = statistics.median(times)
  print(
    f"conv kernel gradient alone {1e3 * out['alone']:.1f} ms, inside a scan "
    f"{1e3 * out['in_scan']:.1f} ms ({out['in_scan'] / out['alone']:.0f}x)"
  )
  return out


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--model", default="resnet32")
  ap.add_argument("--batch", type=int, default=128)
  ap.add_argument("--image-size", type=int, default=32)
  ap.add_argument("--n-max", type=int, default=5000, help="largest class (5000: 12,406 images)")
  ap.add_argument("--rho", type=float, default=100.0)
  ap.add_argument("--rounds", type=int, default=5)
  ap.add_argument("--json", default=None)
  ap.add_argument("--loop-conv", action="store_true", help="time a conv gradient in a scan")
  args = ap.parse_args(argv)
  if args.loop_conv:
    result = {"seconds": loop_conv(args.rounds), "rounds": args.rounds, "machine": machine_info()}
    if args.json:
      with open(args.json, "w") as f:
        json.dump(result, f, indent=1)
    return result

  images, labels = synthetic_long_tailed(args.n_max, args.rho, args.image_size)
  n, B = len(labels), args.batch
  spe = num_batches(n, B)
  kit = make_kit(args.model, B, args.image_size, steps_per_epoch=spe)
  mesh = Mesh(np.array(jax.devices()[:1]), ("data",))
  sharding, replicated = NamedSharding(mesh, P("data")), NamedSharding(mesh, P())
  jit = dict(donate_argnums=0, out_shardings=(replicated, replicated))
  step = jax.jit(kit.train_step(), **jit)
  epoch_fn = jax.jit(de.make_train_epoch(kit.train_step()), **jit)
  resident = de.put_resident({"images": images, "labels": labels})
  states = {k: jax.device_put(kit.state, replicated) for k in ("host", "device")}
  states["device"] = jax.tree.map(lambda x: x.copy(), states["device"])
  epochs = {"host": 0, "device": 0}

  def host():
    idx, mask = de.epoch_indices(n, B, 0, epochs["host"])
    state, steps = states["host"], []
    for i, m in zip(idx, mask):
      state, metrics = step(state, host_batch(images, labels, i, m, sharding))
      steps.append(metrics)
    jax.device_get(steps)
    states["host"] = state

  def device():
    idx, mask = de.epoch_indices(n, B, 0, epochs["device"])
    states["device"], metrics = epoch_fn(states["device"], resident, *de.put_indices(idx, mask))
    jax.device_get(metrics)

  runs = {"host": host, "device": device}

  def timed(name):
    t = time.perf_counter()
    runs[name]()
    epochs[name] += 1
    return time.perf_counter() - t

  first = {name: timed(name) for name in runs}  # compiles
  times = {name: [] for name in runs}
  for r in range(args.rounds):
    for name in ("host", "device") if r % 2 == 0 else ("device", "host"):
      times[name].append(timed(name))
  ratios = [h / d for h, d in zip(times["host"], times["device"])]
  med = {k: statistics.median(v) for k, v in times.items()}
  result = {
    "config": vars(args),
    "images": n,
    "steps_per_epoch": spe,
    "epoch_s": times,
    "median_epoch_s": med,
    "first_epoch_s": first,
    "host_over_device_per_round": ratios,
    "host_over_device_median": statistics.median(ratios),
    "images_per_s": {k: n / v for k, v in med.items()},
    "machine": machine_info(),
  }
  print(
    f"{args.model} {args.image_size}px batch {B}, {n} images ({spe} steps) on "
    f"{result['machine']['device']}: host {med['host']:.3f} s an epoch, device "
    f"{med['device']:.3f} s; host / device {result['host_over_device_median']:.2f} "
    f"(per round {', '.join(f'{x:.2f}' for x in ratios)}); first epochs (compile) "
    f"{first['host']:.1f} / {first['device']:.1f} s"
  )
  if args.json:
    with open(args.json, "w") as f:
      json.dump(result, f, indent=1)
  return result


if __name__ == "__main__":
  main()
