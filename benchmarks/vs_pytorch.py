"""absgd_jax vs a PyTorch implementation of the same ABSGD training step, in one process.

Both sides: ResNet-32 for CIFAR (3 stages x 5 basic blocks, 16/32/64 channels, parameter-free
shortcut A), batch 128 at 32x32, per-sample cross-entropy weighted as the authors' PyTorch loss
module does it (``u = (1 - gamma) u + gamma * mean(exp(L / lam))``, ``p = exp(L / lam) / u``,
loss ``mean(p.detach() * L)``), momentum SGD with weight decay. Timed in interleaved rounds,
median images/s reported. PyTorch is optional: without it the benchmark says so and times
only the JAX side.

    python benchmarks/vs_pytorch.py [--rounds 10] [--steps 10] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

# Both frameworks share one GPU: keep XLA from taking 75% of it up front.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import jax
import jax.numpy as jnp
import numpy as np

import absgd_jax
from absgd_jax.models import create_model
from step_time import make_steps  # Beside this script, so on its sys.path.


def torch_resnet32(torch, num_classes=10):
  nn, F = torch.nn, torch.nn.functional

  class Block(nn.Module):
    def __init__(self, cin, cout, stride):
      super().__init__()
      self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
      self.b1 = nn.BatchNorm2d(cout)
      self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
      self.b2 = nn.BatchNorm2d(cout)
      self.pad = cout - cin
      self.stride = stride

    def forward(self, x):
      out = F.relu(self.b1(self.c1(x)))
      out = self.b2(self.c2(out))
      sc = x
      if self.stride != 1 or self.pad:  # option A: subsample and zero-pad channels
        sc = F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))
      return F.relu(out + sc)

  class Net(nn.Module):
    def __init__(self):
      super().__init__()
      self.stem = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
      self.bn = nn.BatchNorm2d(16)
      layers, cin = [], 16
      for cout, stride in ((16, 1), (32, 2), (64, 2)):
        for i in range(5):
          layers.append(Block(cin, cout, stride if i == 0 else 1))
          cin = cout
      self.layers = nn.Sequential(*layers)
      self.fc = nn.Linear(64, num_classes)

    def forward(self, x):
      x = self.layers(F.relu(self.bn(self.stem(x))))
      return self.fc(x.mean((2, 3)))

  return Net()


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--batch", type=int, default=128)
  ap.add_argument("--rounds", type=int, default=10)
  ap.add_argument("--steps", type=int, default=10)
  ap.add_argument("--lam", type=float, default=5.0)
  ap.add_argument("--json", default=None)
  args = ap.parse_args(argv)
  B = args.batch
  rng = np.random.default_rng(0)
  x_np = rng.normal(size=(B, 32, 32, 3)).astype(np.float32)
  y_np = rng.integers(0, 10, size=B).astype(np.int32)

  # --- JAX side: the same jitted step the training kit uses. ---
  model = create_model("resnet32", 10)
  images, labels = jnp.asarray(x_np), jnp.asarray(y_np)
  variables = jax.jit(lambda k: model.init(k, images[:1], train=False))(jax.random.key(0))
  opt = absgd_jax.absgd(0.1, momentum=0.9, weight_decay=2e-4)
  weigher = absgd_jax.absgd_weights(args.lam, 0.9, s0=0.0)
  step = jax.jit(make_steps(model, opt, weigher)["absgd"], donate_argnums=(0, 1, 2, 3))
  p = variables["params"]
  jstate = [p, variables["batch_stats"], opt.init(p), weigher.init()]
  t0 = time.perf_counter()
  *jstate, loss = step(*jstate, images, labels)
  jax.block_until_ready(loss)
  jax_compile_s = time.perf_counter() - t0

  def run_jax(n):
    nonlocal jstate
    for _ in range(n):
      *jstate, loss = step(*jstate, images, labels)
    jax.block_until_ready(loss)

  runners = {"absgd_jax": run_jax}
  torch_info = "not installed: PyTorch side skipped"
  try:
    import torch
  except ImportError:
    torch = None
  if torch is not None:
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    torch.backends.cudnn.benchmark = True
    net = torch_resnet32(torch).to(dev).to(memory_format=torch.channels_last)
    topt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=2e-4)
    xt = (
      torch.from_numpy(x_np)
      .permute(0, 3, 1, 2)
      .contiguous()
      .to(dev)
      .to(memory_format=torch.channels_last)
    )
    yt = torch.from_numpy(y_np).long().to(dev)
    u = torch.zeros((), device=dev)

    def run_torch(n):
      nonlocal u
      for _ in range(n):
        losses = torch.nn.functional.cross_entropy(net(xt), yt, reduction="none")
        e = torch.exp(losses.detach() / args.lam)
        u = 0.1 * u + 0.9 * e.mean()
        loss = torch.mean(e / u * losses)
        topt.zero_grad(set_to_none=True)
        loss.backward()
        topt.step()
      if dev == "cuda":
        torch.cuda.synchronize()

    run_torch(3)
    runners["pytorch"] = run_torch
    torch_info = f"torch {torch.__version__} on {dev}"
  for r in runners.values():
    r(2)
  times = {k: [] for k in runners}
  order = list(runners)
  for i in range(args.rounds):
    for k in order if i % 2 == 0 else order[::-1]:
      t0 = time.perf_counter()
      runners[k](args.steps)
      times[k].append((time.perf_counter() - t0) / args.steps)
  result = {
    k: {"median_step_s": statistics.median(v), "images_per_s": B / statistics.median(v)}
    for k, v in times.items()
  }
  result["absgd_jax"]["compile_s"] = jax_compile_s
  result["info"] = {
    "jax": jax.__version__,
    "jax_device": str(jax.devices()[0].device_kind),
    "torch": torch_info,
    "batch": B,
    "rounds": args.rounds,
    "steps": args.steps,
  }
  for k, v in times.items():
    print(
      f"{k:10} {result[k]['median_step_s'] * 1e3:9.2f} ms/step "
      f"{result[k]['images_per_s']:9.0f} images/s"
    )
  if "pytorch" in result:
    print(
      f"absgd_jax / pytorch throughput: "
      f"{result['absgd_jax']['images_per_s'] / result['pytorch']['images_per_s']:.2f}x"
    )
  else:
    print(f"PyTorch: {torch_info}")
  if args.json:
    with open(args.json, "w") as f:
      json.dump(result, f, indent=2)


if __name__ == "__main__":
  main()
