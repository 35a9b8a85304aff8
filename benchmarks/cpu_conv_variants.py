"""Issue 6: can the CPU's slow convolution gradients be written faster in JAX itself?

    python benchmarks/cpu_conv_variants.py [--json out.json]
    XLA_FLAGS=--xla_cpu_experimental_onednn_fusion_type=LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION \\
        python benchmarks/cpu_conv_variants.py      # the same under an XLA library-fusion flag

``cpu_gap.py`` found that a ResNet-32 step's backward pass is about 4x PyTorch's on 2 cores.
This script takes the 3x3 convolutions of ResNet-32 (batch 128) apart: the forward, the
input gradient (dx) and the kernel gradient (dw) of ``lax.conv_general_dilated``, against
other ways of computing the same numbers:

- ``im2col``: the 9 shifted windows concatenated, then one matmul;
- ``shifted``: 9 matmuls, one per kernel tap, summed;
- ``dw-swapped``: the kernel gradient as a forward convolution with the batch as the
  contraction axis (``(C, H, W, B) * (H, W, B, O)``), which is what the gradient is.

Each variant is checked against ``lax``'s result. Times are medians of 10 calls, in ms.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

B = 128
SHAPES = [(32, 16, 1), (16, 32, 1), (8, 64, 1), (32, 16, 2)]  # (side, channels, stride)


def timed(f, *args, n=10):
  jax.block_until_ready(f(*args))
  times = []
  for _ in range(n):
    t0 = time.perf_counter()
    jax.block_until_ready(f(*args))
    times.append(time.perf_counter() - t0)
  return 1e3 * statistics.median(times)


def conv_lax(x, w, s):
  return jax.lax.conv_general_dilated(x, w, (s, s), ((1, 1), (1, 1)),
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _windows(x, s, ho, wo):
  xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  return [xp[:, i:i + s * (ho - 1) + 1:s, j:j + s * (wo - 1) + 1:s, :]
          for i in range(3) for j in range(3)]


def conv_im2col(x, w, s):
  ho = wo = x.shape[1] // s
  cols = jnp.concatenate(_windows(x, s, ho, wo), -1).reshape(-1, 9 * x.shape[-1])
  return (cols @ w.reshape(-1, w.shape[-1])).reshape(x.shape[0], ho, wo, w.shape[-1])


def conv_shifted(x, w, s):
  ho = wo = x.shape[1] // s
  taps = _windows(x, s, ho, wo)
  return sum(jnp.einsum("bhwc,co->bhwo", t, w[k // 3, k % 3]) for k, t in enumerate(taps))


def dw_im2col(x, dy, s):
  cols = jnp.concatenate(_windows(x, s, *dy.shape[1:3]), -1).reshape(-1, 9 * x.shape[-1])
  return (cols.T @ dy.reshape(-1, dy.shape[-1])).reshape(3, 3, x.shape[-1], dy.shape[-1])


def dw_swapped(x, dy, s):
  if s != 1:
    return None  # A strided kernel gradient is a dilated convolution; not tried.
  out = jax.lax.conv_general_dilated(jnp.transpose(x, (3, 1, 2, 0)),
                                     jnp.transpose(dy, (1, 2, 0, 3)), (1, 1), ((1, 1), (1, 1)),
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
  return jnp.transpose(out, (1, 2, 0, 3))


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--json")
  args = ap.parse_args(argv)
  rows = []
  for side, c, s in SHAPES:
    rng = np.random.default_rng(0)
    co = 2 * c if s == 2 else c
    x = jnp.asarray(rng.normal(size=(B, side, side, c)).astype(np.float32))
    w = jnp.asarray(0.1 * rng.normal(size=(3, 3, c, co)).astype(np.float32))
    dy = jnp.asarray(rng.normal(size=(B, side // s, side // s, co)).astype(np.float32))
    fwd = jax.jit(lambda x, w: conv_lax(x, w, s))
    dx = jax.jit(lambda x, w, dy: jax.vjp(lambda x: conv_lax(x, w, s), x)[1](dy)[0])
    dw = jax.jit(lambda x, w, dy: jax.vjp(lambda w: conv_lax(x, w, s), w)[1](dy)[0])
    ref_y, ref_dw = fwd(x, w), dw(x, w, dy)
    row = {"shape": f"{side}x{side}x{c}, stride {s}", "lax_fwd": timed(fwd, x, w),
           "lax_dx": timed(dx, x, w, dy), "lax_dw": timed(dw, x, w, dy)}
    for name, f, ref, a in (("im2col_fwd", conv_im2col, ref_y, (x, w)),
                            ("shifted_fwd", conv_shifted, ref_y, (x, w)),
                            ("im2col_dw", dw_im2col, ref_dw, (x, dy)),
                            ("swapped_dw", dw_swapped, ref_dw, (x, dy))):
      jf = jax.jit(lambda a0, a1, f=f: f(a0, a1, s))
      if f(*a, s) is None:
        continue
      err = float(jnp.max(jnp.abs(jf(*a) - ref)) / jnp.max(jnp.abs(ref)))
      assert err < 1e-4, (name, err)
      row[name] = timed(jf, *a)
    rows.append(row)
    print("  ".join(f"{k} {v:.2f}" if isinstance(v, float) else v for k, v in row.items()),
          flush=True)
  if args.json:
    with open(args.json, "w") as f:
      json.dump({"xla_flags": os.environ.get("XLA_FLAGS", ""), "batch": B, "rows": rows}, f,
                indent=1)


if __name__ == "__main__":
  main()
