"""What the honest progress bar costs: an epoch's training with the host waiting on each step's
output ``LAG_STEPS`` steps after sending it, against the host sending every step and waiting
only at the end of the epoch.

    python benchmarks/progress_overhead.py                 # ResNet-8, 16 px CIFAR-like batches
    python benchmarks/progress_overhead.py --tiny          # seconds, for a smoke run

The two ways alternate, epoch after epoch, so that a machine whose load drifts affects both
alike; the JSON (benchmarks/results/progress_overhead_<platform>.json by default) keeps every
epoch's time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from kit_step import make_kit, synthetic_batch  # noqa: E402

from absgd_jax.train import inputs  # noqa: E402

LAG = inputs.LAG_STEPS  # the loop's, before this script changes it


def epoch_time(step, state, batches, lag: int) -> tuple[float, object]:
  inputs.LAG_STEPS = lag
  t0 = time.perf_counter()
  state, _ = inputs.run_steps(step, state, iter(batches), total=len(batches), desc="", show=False)
  jax.block_until_ready(state)
  return time.perf_counter() - t0, state


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--model", default="resnet8")
  ap.add_argument("--image-size", type=int, default=16)
  ap.add_argument("--batch", type=int, default=128)
  ap.add_argument("--steps", type=int, default=40)
  ap.add_argument("--rounds", type=int, default=5)
  ap.add_argument("--tiny", action="store_true")
  ap.add_argument("--out", default=None)
  args = ap.parse_args(argv)
  if args.tiny:
    args.image_size, args.batch, args.steps, args.rounds = 8, 8, 6, 2
  kit = make_kit(args.model, args.batch, args.image_size)
  step = jax.jit(kit.train_step(), donate_argnums=0)
  batches = [synthetic_batch(args.batch, args.image_size, seed=i) for i in range(args.steps)]
  state = jax.tree.map(jnp.copy, kit.state)
  _, state = epoch_time(step, state, batches[:2], args.steps)  # compile
  ways = {"lag": LAG, "end_only": args.steps + 1}
  times = {name: [] for name in ways}
  for _ in range(args.rounds):
    for name, lag in ways.items():
      t, state = epoch_time(step, state, batches, lag)
      times[name].append(t)
  med = {k: statistics.median(v) for k, v in times.items()}
  record = dict(
    platform=jax.default_backend(),
    device=jax.devices()[0].device_kind,
    jax=jax.__version__,
    model=args.model,
    image_size=args.image_size,
    batch=args.batch,
    steps=args.steps,
    lag_steps=ways["lag"],
    epoch_s=times,
    median_s=med,
    overhead=med["lag"] / med["end_only"] - 1,
    spread=[float(np.min(v)) for v in times.values()],
  )
  out = args.out or os.path.join(
    os.path.dirname(os.path.abspath(__file__)),
    "results",
    f"progress_overhead_{record['platform']}.json",
  )
  os.makedirs(os.path.dirname(out), exist_ok=True)
  with open(out, "w") as f:
    json.dump(record, f, indent=1)
  print(
    f"{args.model} {args.image_size}px batch {args.batch}, {args.steps} steps: waiting "
    f"{ways['lag']} steps behind {med['lag']:.3f} s, at the end only {med['end_only']:.3f} s "
    f"(median of {args.rounds}): {100 * record['overhead']:+.1f}%  -> {out}"
  )


if __name__ == "__main__":
  main()
