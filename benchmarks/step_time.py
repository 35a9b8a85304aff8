"""Step time of ABSGD vs plain momentum SGD: the same model, the same optimizer, one process.

The two jitted steps differ only in the loss: ``mean(L)`` for SGD, ``mean(w * L)`` with
``absgd_weights`` for ABSGD. They are compiled apart (compile time reported on its own), then
timed in interleaved rounds, alternating which goes first, and the median of the per-round
ratios is reported, so drift in the machine's speed hits both alike.

    python benchmarks/step_time.py                      # ResNet-32, batch 128, 32x32 (CIFAR)
    python benchmarks/step_time.py --model resnet50 --batch 64 --image 224 --classes 1000

Memory: XLA's own accounting of each compiled step (arguments, outputs, temporaries), which
is what the step needs at its peak on any backend.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

import absgd_jax
from absgd_jax.models import create_model


def make_steps(model, opt, weigher):
  def forward(params, batch_stats, images, labels):
    logits, new_vars = model.apply(
      {"params": params, "batch_stats": batch_stats}, images, train=True, mutable=["batch_stats"]
    )
    losses = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)
    return losses, new_vars["batch_stats"]

  def sgd_step(params, batch_stats, opt_state, w_state, images, labels):
    def loss_fn(p):
      losses, bs = forward(p, batch_stats, images, labels)
      return jnp.mean(losses), bs

    (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = opt.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), batch_stats, opt_state, w_state, loss

  def absgd_step(params, batch_stats, opt_state, w_state, images, labels):
    def loss_fn(p):
      losses, bs = forward(p, batch_stats, images, labels)
      w, new_w_state = weigher.update(losses, w_state)
      return jnp.mean(w * losses), (bs, new_w_state)

    (loss, (batch_stats, w_state)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = opt.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), batch_stats, opt_state, w_state, loss

  def l2rw_step(params, batch_stats, opt_state, w_state, images, labels):
    # Learning to reweight: the validation batch here is the training batch itself (only its
    # shape matters for the cost).
    from absgd_jax.train.l2rw import l2rw_weights

    ce = optax.softmax_cross_entropy_with_integer_labels
    w = l2rw_weights(
      model.apply,
      params,
      batch_stats,
      ce,
      images,
      labels,
      jnp.ones(labels.shape, bool),
      images,
      labels,
      0.1,
    )

    def loss_fn(p):
      losses, bs = forward(p, batch_stats, images, labels)
      return jnp.mean(w * losses), bs

    (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = opt.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), batch_stats, opt_state, w_state, loss

  return {"sgd": sgd_step, "absgd": absgd_step, "l2rw": l2rw_step}


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--model", default="resnet32")
  ap.add_argument("--batch", type=int, default=128)
  ap.add_argument("--image", type=int, default=32)
  ap.add_argument("--classes", type=int, default=10)
  ap.add_argument("--rounds", type=int, default=15, help="interleaved timing rounds")
  ap.add_argument("--steps", type=int, default=5, help="steps per variant per round")
  ap.add_argument("--json", default=None, help="write the results here")
  ap.add_argument(
    "--l2rw", action="store_true", help="also time learning to reweight (Ren et al. 2018)"
  )
  ap.add_argument(
    "--shard",
    action="store_true",
    help="shard the batch over every device (e.g. N CPU devices from XLA_FLAGS="
    "--xla_force_host_platform_device_count=N), the state replicated",
  )
  args = ap.parse_args(argv)

  model = create_model(args.model, args.classes)
  rng = np.random.default_rng(0)
  images = jnp.asarray(rng.normal(size=(args.batch, args.image, args.image, 3)), jnp.float32)
  labels = jnp.asarray(rng.integers(0, args.classes, size=args.batch), jnp.int32)
  variables = jax.jit(lambda k: model.init(k, images[:1], train=False))(jax.random.key(0))
  if args.shard:
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    mesh = Mesh(np.array(jax.devices()), ("data",))
    images = jax.device_put(images, NamedSharding(mesh, PartitionSpec("data")))
    labels = jax.device_put(labels, NamedSharding(mesh, PartitionSpec("data")))
    variables = jax.device_put(variables, NamedSharding(mesh, PartitionSpec()))
  opt = absgd_jax.absgd(0.1, momentum=0.9, weight_decay=2e-4)
  weigher = absgd_jax.absgd_weights(lam=5.0, gamma=0.9)
  steps = make_steps(model, opt, weigher)
  if not args.l2rw:
    del steps["l2rw"]

  def fresh_state():
    p = jax.tree.map(jnp.copy, variables["params"])
    return [p, jax.tree.map(jnp.copy, variables["batch_stats"]), opt.init(p), weigher.init()]

  compiled, states, result = {}, {}, {"variants": {}}
  for name, fn in steps.items():
    states[name] = fresh_state()
    t0 = time.perf_counter()
    compiled[name] = (
      jax.jit(fn, donate_argnums=(0, 1, 2, 3)).lower(*states[name], images, labels).compile()
    )
    compile_s = time.perf_counter() - t0
    mem = compiled[name].memory_analysis()
    peak = None
    if mem is not None:
      peak = (
        mem.argument_size_in_bytes
        + mem.output_size_in_bytes
        + mem.temp_size_in_bytes
        - getattr(mem, "alias_size_in_bytes", 0)
      )
    result["variants"][name] = {
      "compile_s": compile_s,
      "peak_bytes": peak,
      "temp_bytes": None if mem is None else mem.temp_size_in_bytes,
    }

  def run(name, n):
    st = states[name]
    for _ in range(n):
      *st, loss = compiled[name](*st, images, labels)
    jax.block_until_ready(loss)
    states[name] = st

  for name in steps:  # Warm-up: first executions, allocator growth.
    run(name, 2)
  times = {name: [] for name in steps}
  order = list(steps)
  for r in range(args.rounds):
    for name in order if r % 2 == 0 else order[::-1]:
      t0 = time.perf_counter()
      run(name, args.steps)
      times[name].append((time.perf_counter() - t0) / args.steps)
  ratios = [a / s for a, s in zip(times["absgd"], times["sgd"])]
  if "l2rw" in times:
    result["l2rw_over_absgd_median"] = statistics.median(
      [m / a for m, a in zip(times["l2rw"], times["absgd"])]
    )
  for name in steps:
    result["variants"][name]["median_step_s"] = statistics.median(times[name])
    result["variants"][name]["images_per_s"] = args.batch / statistics.median(times[name])
  result.update(
    ratio_median=statistics.median(ratios),
    ratio_of_medians=(statistics.median(times["absgd"]) / statistics.median(times["sgd"])),
    config=vars(args),
    device=str(jax.devices()[0].device_kind),
    platform=jax.default_backend(),
    device_count=jax.device_count(),
    host=platform.node(),
    cpu_count=os.cpu_count(),
    versions={
      "python": sys.version.split()[0],
      "jax": jax.__version__,
      "optax": optax.__version__,
      "flax": flax.__version__,
    },
  )
  v = result["variants"]
  print(
    f"{args.model} batch {args.batch} at {args.image}px on {result['device']} "
    f"({result['platform']}), {args.rounds} rounds x {args.steps} steps"
  )
  print(f"{'':8}{'median step':>14}{'images/s':>12}{'compile':>10}{'peak MiB':>10}")
  for name in steps:
    pk = v[name]["peak_bytes"]
    print(
      f"{name:8}{v[name]['median_step_s'] * 1e3:12.2f}ms{v[name]['images_per_s']:12.0f}"
      f"{v[name]['compile_s']:9.1f}s{(pk or 0) / 2**20:10.1f}"
    )
  print(
    f"ABSGD / SGD step-time ratio: median of rounds {result['ratio_median']:.4f}, "
    f"ratio of medians {result['ratio_of_medians']:.4f}"
  )
  if "l2rw_over_absgd_median" in result:
    print(f"L2RW / ABSGD step-time ratio: {result['l2rw_over_absgd_median']:.3f}")
  if args.json:
    with open(args.json, "w") as f:
      json.dump(result, f, indent=2)
  return result


if __name__ == "__main__":
  main()
