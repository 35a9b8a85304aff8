"""time(M-member lam sweep step) / time(one run's step): the price of a sweep as one program.

The JAX side is the training kit's own step (:func:`absgd_jax.train.step.make_train_step`), on
synthetic CIFAR-shaped data (uint8 images, 10 classes): the single run's step under
``jax.jit``, and :func:`absgd_jax.train.members.make_member_step` (the same step vmapped over M
members, each with its own lam) under one ``jax.jit``. The goal on a GPU: M = 8 for at most
2.5 times one run. Beside it, the same ABSGD step of one ResNet-32 in PyTorch with
``torch.compile`` (mode ``reduce-overhead`` on CUDA: CUDA graphs, the strongest for a
launch-bound step; ``default`` elsewhere), the reference for what one run costs there (a
PyTorch sweep runs its M models one after another). The PyTorch side is ResNet-32 only.

Augmentation is off on both sides by default (the PyTorch step has none); ``--augment`` adds
the kit's on-device crop and flip to the JAX steps. Steps are timed in interleaved rounds;
medians are reported, and the compile times apart.

    python benchmarks/sweep_time.py --members 1,2,4,8 --torch --json out.json   # a GPU
    python benchmarks/sweep_time.py --model resnet8 --image-size 16 --batch 32 \\
        --members 1,4 --modes vmap,map --steps 3 --rounds 3                     # CPU smoke
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # share the GPU with torch

import jax
import jax.numpy as jnp
import numpy as np

from absgd_jax.train.members import make_member_step
from kit_step import make_kit, synthetic_batch

LAMS = (1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 0.5, 100.0)  # member i takes LAMS[i % 8] * (1 + i // 8)


def jax_steps(args, members: list[int]):
  """{name: (run(n), compile_s)} for the single run and each M-member sweep."""
  B, S = args.batch, args.image_size
  # spe = 100 is nominal: it fixes only where the (unreached) schedule boundaries fall.
  kit = make_kit(args.model, B, S, augment=args.augment, steps_per_epoch=100)
  cfg, batch, state0 = kit.config, synthetic_batch(B, S), kit.state
  out = {}

  def timed(name, step, state, *extra):
    t0 = time.perf_counter()
    state, m = step(state, batch, *extra)
    jax.block_until_ready(m)
    compile_s = time.perf_counter() - t0
    holder = [state]

    def run(n):
      s = holder[0]
      for _ in range(n):
        s, m = step(s, batch, *extra)
      jax.block_until_ready(m)
      holder[0] = s

    out[name] = (run, compile_s)

  single = jax.jit(kit.train_step(), donate_argnums=0)
  timed("jax_1_run", single, jax.tree.map(jnp.copy, state0))
  for mode in args.modes.split(","):
    for M in members:
      configs = [cfg.replace(lam=LAMS[i % 8] * (1 + i // 8)) for i in range(M)]
      step = jax.jit(
        make_member_step(
          kit.model,
          kit.tx,
          kit.loss_fn,
          configs,
          kit.steps_per_epoch,
          kit.preprocess,
          num_classes=10,
          mode=mode,
        ),  # fmt: skip
        donate_argnums=0,
      )
      states = jax.tree.map(lambda x: jnp.broadcast_to(x, (M, *jnp.shape(x))), state0)
      timed(f"jax_{mode}_{M}", step, states)
  return out


def torch_step(args):
  """(run(n), compile_s, info) for one ResNet-32 ABSGD step in PyTorch with torch.compile."""
  import torch

  sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
  from vs_pytorch import torch_resnet32  # the same network as benchmarks/vs_pytorch.py

  dev = "cuda" if torch.cuda.is_available() else "cpu"
  torch.backends.cudnn.benchmark = True
  B, S = args.batch, args.image_size
  net = torch_resnet32(torch).to(dev).to(memory_format=torch.channels_last)
  opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=2e-4)
  rng = np.random.default_rng(0)
  x = (
    torch.from_numpy(rng.normal(size=(B, 3, S, S)).astype(np.float32))
    .to(dev)
    .to(memory_format=torch.channels_last)
  )
  y = torch.from_numpy(rng.integers(0, 10, B)).long().to(dev)
  lam, gamma = 5.0, 0.9
  u = torch.ones((), device=dev)

  def forward_backward(u):
    losses = torch.nn.functional.cross_entropy(net(x), y, reduction="none")
    e = torch.exp(losses.detach() / lam)
    u = (1 - gamma) * u + gamma * e.mean()
    loss = torch.mean(e / u * losses)
    loss.backward()
    return u, loss.detach()

  mode = "reduce-overhead" if dev == "cuda" else "default"
  compiled = torch.compile(forward_backward, mode=mode)
  opt_step = torch.compile(opt.step)  # fuses the parameter update (torch >= 2.2)
  state = {"u": u}

  mark_step = getattr(torch.compiler, "cudagraph_mark_step_begin", lambda: None)

  def one():
    mark_step()  # a new iteration: CUDA graphs may reuse the last one's output buffers
    opt.zero_grad(set_to_none=False)
    u, loss = compiled(state["u"])
    state["u"] = u.clone()  # kept across steps, so out of the graph's memory pool
    opt_step()
    return loss

  def sync():
    if dev == "cuda":
      torch.cuda.synchronize()

  t0 = time.perf_counter()
  for _ in range(3):  # reduce-overhead records its CUDA graph on a later call
    one()
  sync()
  compile_s = time.perf_counter() - t0

  def run(n):
    for _ in range(n):
      one()
    sync()

  return run, compile_s, f"torch {torch.__version__} on {dev}, compile mode {mode}"


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--model", default="resnet32")
  ap.add_argument("--image-size", type=int, default=32)
  ap.add_argument("--batch", type=int, default=128)
  ap.add_argument("--members", default="1,2,4,8", help="comma-separated sweep sizes M")
  ap.add_argument(
    "--modes",
    default="vmap",
    help="comma-separated: vmap (members vectorised), map (one after another)",
  )
  ap.add_argument("--steps", type=int, default=20, help="steps per timed round")
  ap.add_argument("--rounds", type=int, default=7)
  ap.add_argument("--augment", action="store_true", help="the kit's crop + flip (JAX side)")
  ap.add_argument("--torch", action="store_true", help="also time PyTorch + torch.compile")
  ap.add_argument("--json", default=None)
  args = ap.parse_args(argv)
  members = [int(m) for m in args.members.split(",") if m.strip()]
  runners = jax_steps(args, members)
  torch_info = "not asked (--torch)"
  if args.torch:
    if args.model != "resnet32":
      torch_info = f"skipped: the PyTorch side is ResNet-32 only (got --model {args.model})"
    else:
      run, compile_s, torch_info = torch_step(args)
      runners["torch_compile_1_run"] = (run, compile_s)
  for run, _ in runners.values():
    run(2)  # warm
  times = {k: [] for k in runners}
  order = list(runners)
  for r in range(args.rounds):
    for k in order if r % 2 == 0 else order[::-1]:
      t0 = time.perf_counter()
      runners[k][0](args.steps)
      times[k].append((time.perf_counter() - t0) / args.steps)
  one = statistics.median(times["jax_1_run"])
  result = {
    k: {"median_step_s": statistics.median(v), "compile_s": runners[k][1], "step_s": v}
    for k, v in times.items()
  }
  for k in result:
    if k.startswith(("jax_vmap_", "jax_map_")):
      result[k]["ratio_to_1_run"] = result[k]["median_step_s"] / one
      # Per round (the runners take turns within a round): steadier on a shared machine.
      result[k]["ratio_per_round_median"] = statistics.median(
        a / b for a, b in zip(times[k], times["jax_1_run"])
      )
  result["info"] = {
    "jax": jax.__version__,
    "jax_device": jax.devices()[0].device_kind,
    "backend": jax.default_backend(),
    "python": platform.python_version(),
    "torch": torch_info,
    "model": args.model,
    "image_size": args.image_size,
    "batch": args.batch,
    "augment": args.augment,
    "steps": args.steps,
    "rounds": args.rounds,
    "modes": args.modes,
    "xla_flags": os.environ.get("XLA_FLAGS", ""),
  }
  print(
    f"{args.model} {args.image_size}px batch {args.batch} on "
    f"{result['info']['jax_device']} ({jax.default_backend()})"
  )
  for k in runners:
    ratio = result[k].get("ratio_to_1_run")
    print(
      f"{k:22} {result[k]['median_step_s'] * 1e3:9.2f} ms/step  compile "
      f"{result[k]['compile_s']:6.1f}s"
      + (
        f"  sweep / 1 run = {ratio:.2f} (per round: {result[k]['ratio_per_round_median']:.2f})"
        if ratio
        else ""
      )
    )
  print(f"PyTorch: {torch_info}")
  if args.json:
    with open(args.json, "w") as f:
      json.dump(result, f, indent=1)
  return result


if __name__ == "__main__":
  main()
