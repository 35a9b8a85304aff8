"""Where the CPU time of the ResNet-32 step goes, JAX vs PyTorch: forward, backward, one conv.

    python benchmarks/cpu_gap.py      # needs torch (optional extra); batch 128, medians of 5-20

A diagnosis for issue 6 (absgd_jax is ~3x slower than PyTorch on a 2-core CPU), not a
benchmark of ABSGD: the ABSGD weighting is not involved. ``cpu_conv_variants.py`` goes on
from here, one convolution at a time.
"""

from __future__ import annotations

import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cpu_conv_variants import timed  # noqa: E402
from vs_pytorch import torch_resnet32  # noqa: E402

from absgd_jax.models import create_model  # noqa: E402

B = 128


def torch_median(f, n=5):
  times = []
  for _ in range(n + 1):  # The first call warms up.
    t0 = time.perf_counter()
    f()
    times.append(time.perf_counter() - t0)
  return statistics.median(times[1:])


def main():
  torch.set_num_threads(2)
  x = np.random.default_rng(0).normal(size=(B, 32, 32, 3)).astype(np.float32)
  y = np.random.default_rng(1).integers(0, 10, B)
  model = create_model("resnet32", 10)
  variables = model.init(jax.random.key(0), jnp.asarray(x[:1]), train=False)
  xj, yj = jnp.asarray(x), jnp.asarray(y)

  def loss(params, stats):
    logits, _ = model.apply({"params": params, "batch_stats": stats}, xj, train=True,
                            mutable=["batch_stats"])
    return optax.softmax_cross_entropy_with_integer_labels(logits, yj).mean()

  p, bs = variables["params"], variables["batch_stats"]
  print("jax fwd %.3f fwd+bwd %.3f" % (timed(jax.jit(loss), p, bs, n=5) / 1e3,
                                        timed(jax.jit(jax.grad(loss)), p, bs, n=5) / 1e3))

  net = torch_resnet32(torch).to(memory_format=torch.channels_last)
  xt = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)
  yt = torch.from_numpy(y).long()
  ce = torch.nn.functional.cross_entropy
  print("torch fwd %.3f fwd+bwd %.3f" % (torch_median(lambda: ce(net(xt), yt)),
                                          torch_median(lambda: ce(net(xt), yt).backward())))

  w = jnp.asarray(np.random.default_rng(2).normal(size=(3, 3, 16, 16)).astype(np.float32))
  xin = jnp.asarray(np.random.default_rng(3).normal(size=(B, 32, 32, 16)).astype(np.float32))
  conv = jax.jit(lambda a, b: jax.lax.conv_general_dilated(
      a, b, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")))
  print("jax conv3x3 16ch fwd %.4f" % (timed(conv, xin, w, n=20) / 1e3))
  c = torch.nn.Conv2d(16, 16, 3, padding=1, bias=False).to(memory_format=torch.channels_last)
  xi = torch.randn(B, 16, 32, 32).contiguous(memory_format=torch.channels_last)
  with torch.no_grad():
    print("torch conv3x3 16ch fwd %.4f" % torch_median(lambda: c(xi), n=20))


if __name__ == "__main__":
  main()
