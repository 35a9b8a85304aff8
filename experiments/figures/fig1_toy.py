"""Figure 1: one SGD step vs one ABSGD step on a 2-D imbalanced toy problem.

    python -m experiments.figures.fig1_toy [--out experiments/figures/fig1_toy.png]

A linear binary classifier sign(w . x + b) with the logistic loss, on 190 majority points
(label 0) and 10 minority points (label 1) drawn from two Gaussians. Both methods start from
the same classifier, one that the majority suits (it misclassifies most minority points),
and take one step of ``absgd_jax.absgd`` with the same learning rate on the same mini-batch
of 32 points, 4 of them minority. SGD weights the batch's losses uniformly; ABSGD weights them
by exp(L_i / lam) / s with lam > 0 (``absgd_jax.absgd_weights``, gamma = 1: s is the batch
mean), so the misclassified minority points, whose losses are largest, pull the line harder.
The figure draws the points, the batch, and the start, SGD and ABSGD decision lines, and
prints each step's minority and majority training accuracy.
"""

from __future__ import annotations

import argparse
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax

import absgd_jax

N_MAJ, N_MIN, BATCH, BATCH_MIN = 190, 10, 32, 4
START = (np.array([1.0, 0.4]), -1.6)  # w, b: the line w . x + b = 0.


def make_data(seed: int = 0):
  """``(x [N, 2], y [N])``: majority around (-1, 0), minority around (1.2, 1)."""
  rng = np.random.default_rng(seed)
  x = np.concatenate(
    [rng.normal([-1.0, 0.0], 0.7, size=(N_MAJ, 2)), rng.normal([1.2, 1.0], 0.45, size=(N_MIN, 2))]
  ).astype(np.float32)
  y = np.concatenate([np.zeros(N_MAJ), np.ones(N_MIN)]).astype(np.float32)
  return x, y


def make_batch(y: np.ndarray, seed: int = 0) -> np.ndarray:
  """Indices of a mini-batch of BATCH points with BATCH_MIN minority ones."""
  rng = np.random.default_rng([seed, 1])
  maj, mino = np.flatnonzero(y == 0), np.flatnonzero(y == 1)
  return np.concatenate(
    [rng.choice(maj, BATCH - BATCH_MIN, replace=False), rng.choice(mino, BATCH_MIN, replace=False)]
  )


def losses(params, x, y):
  """Per-sample logistic loss log(1 + exp(-(2y - 1)(w . x + b)))."""
  margin = (2 * y - 1) * (x @ params["w"] + params["b"])
  return jax.nn.softplus(-margin)


def one_step(x, y, idx, lam: float | None, lr: float):
  """The parameters after one absgd step on batch ``idx``; ``lam=None`` is plain SGD.

  Returns ``(params, weights)``: the weights the batch's losses got (all 1 for SGD).
  """
  params = {"w": jnp.asarray(START[0], jnp.float32), "b": jnp.asarray(START[1], jnp.float32)}
  xb, yb = jnp.asarray(x[idx]), jnp.asarray(y[idx])
  per_sample = losses(params, xb, yb)
  if lam is None:
    weights = jnp.ones_like(per_sample)
  else:
    wt = absgd_jax.absgd_weights(lam, gamma=1.0)
    weights, _ = wt.update(per_sample, wt.init())
  grads = jax.grad(lambda p: jnp.mean(weights * losses(p, xb, yb)))(params)
  tx = absgd_jax.absgd(lr)
  updates, _ = tx.update(grads, tx.init(params), params)
  return optax.apply_updates(params, updates), weights


def accuracy(params, x, y) -> tuple[float, float]:
  """(minority, majority) accuracy of ``params`` on all points."""
  pred = (np.asarray(x @ np.asarray(params["w"]) + float(params["b"])) > 0).astype(np.float32)
  return float(np.mean(pred[y == 1] == 1)), float(np.mean(pred[y == 0] == 0))


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument(
    "--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "fig1_toy.png")
  )
  ap.add_argument("--lam", type=float, default=0.5, help="ABSGD's lam (> 0)")
  ap.add_argument("--lr", type=float, default=1.0)
  ap.add_argument("--seed", type=int, default=0)
  args = ap.parse_args(argv)
  if not args.lam > 0:
    raise ValueError(
      f"--lam must be > 0 for the imbalance toy (it up-weights high losses); got {args.lam}."
    )
  x, y = make_data(args.seed)
  idx = make_batch(y, args.seed)
  start = {"w": START[0], "b": START[1]}
  sgd, _ = one_step(x, y, idx, None, args.lr)
  ab, weights = one_step(x, y, idx, args.lam, args.lr)
  results = {
    name: accuracy(p, x, y)
    for name, p in (("start", start), ("SGD", sgd), (f"ABSGD (lam={args.lam:g})", ab))
  }
  for name, (mino, maj) in results.items():
    print(f"{name:18} minority accuracy {mino:.2f}, majority accuracy {maj:.2f}")
  is_min = y[idx] == 1
  print(
    f"ABSGD weights on the batch: minority mean {float(np.mean(weights[is_min])):.2f}, "
    f"majority mean {float(np.mean(weights[~is_min])):.2f} (SGD: 1 for all)"
  )

  from absgd_jax.train.plots import _pyplot

  plt = _pyplot()
  fig, ax = plt.subplots(figsize=(5.6, 4.6))
  ax.scatter(*x[y == 0].T, s=12, c="tab:blue", alpha=0.45, label=f"majority ({N_MAJ})")
  ax.scatter(*x[y == 1].T, s=30, c="tab:orange", marker="^", label=f"minority ({N_MIN})")
  ax.scatter(
    *x[idx].T, s=70, facecolors="none", edgecolors="k", linewidths=0.7, label="the mini-batch"
  )
  lo, hi = x.min(0) - 0.5, x.max(0) + 0.5
  xs = np.linspace(lo[0], hi[0], 2)
  for (name, p), style in zip(
    (("start", start), ("SGD, 1 step", sgd), (f"ABSGD (lam={args.lam:g}), 1 step", ab)),
    (dict(c="gray", ls=":"), dict(c="tab:blue"), dict(c="tab:red")),
  ):
    w, b = np.asarray(p["w"]), float(p["b"])
    mino, maj = accuracy(p, x, y)
    ax.plot(xs, -(w[0] * xs + b) / w[1], lw=2, label=f"{name}: minority acc {mino:.2f}", **style)
  ax.set_xlim(lo[0], hi[0]), ax.set_ylim(lo[1], hi[1])
  ax.set_title(f"One step from the same start, same batch, lr {args.lr:g}", fontsize=9)
  ax.legend(fontsize=7, loc="lower left")
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  fig.savefig(args.out, dpi=100)
  plt.close(fig)
  print(f"wrote {args.out}")
  return results


if __name__ == "__main__":
  main()
