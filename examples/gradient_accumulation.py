"""Gradient accumulation with ABSGD: k micro-batches that give exactly the big batch's step.

ABSGD's weights normalise each sample by ``s``, a moving average of exp(L / lam) over whole
batches. Accumulating gradients over k micro-batches with ``optax.MultiSteps`` and one
``weighted_mean`` per micro-batch would normalise each micro-batch by its own update of
``s`` and advance the weigher's count k times per optimizer update (see
docs/gradient_accumulation.md for what that changes). The recipe here keeps the big batch's
meaning exactly, for one extra forward pass per micro-batch:

1. forward only: the per-sample losses of all k micro-batches, ``[k, b]``;
2. one ``weigher.update`` on all ``k * b`` of them: the big batch's weights, and one count
   per optimizer update, so lam schedules count updates;
3. per micro-batch, the gradient of ``sum(w * L) / n`` with those weights held fixed and
   ``n`` the real samples of the whole big batch, summed over the micro-batches by a scan;
4. one optimizer update.

Only the activations of one micro-batch are alive at a time in step 3, which is what
accumulation is for. (Layers that use batch statistics, like BatchNorm, still see
micro-batches: that differs from the big batch whatever the weighting.)

Run: python examples/gradient_accumulation.py
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

import absgd_jax

# per_sample_loss(params, x [b, ...], y [b]) -> losses [b]
PerSampleLoss = Callable[[optax.Params, jax.Array, jax.Array], jax.Array]


def make_accumulating_step(
  per_sample_loss: PerSampleLoss,
  weigher: absgd_jax.Weigher,
  opt: optax.GradientTransformation,
):
  """``step(params, opt_state, w_state, x [k, b, ...], y [k, b], mask [k, b])``.

  Returns ``(params, opt_state, w_state, loss, weights [k, b])``: one optimizer update from
  the k micro-batches, equal to one step on the concatenated batch of ``k * b``.
  """

  @jax.jit
  def step(params, opt_state, w_state, x, y, mask):
    k, b = y.shape
    # 1-2: the weights of the whole big batch, from a forward pass without gradients.
    losses = jax.lax.map(lambda xy: per_sample_loss(params, *xy), (x, y))
    weights, w_state = weigher.update(losses.reshape(k * b), w_state, mask=mask.reshape(k * b))
    weights = weights.reshape(k, b)
    n = jnp.maximum(jnp.sum(mask, dtype=jnp.float32), 1.0)

    # 3: each micro-batch's share of the big batch's gradient, weights held fixed.
    def micro(acc, xs):
      xj, yj, wj, mj = xs

      def share(p):
        return jnp.sum(jnp.where(mj, wj * per_sample_loss(p, xj, yj), 0.0)) / n

      loss_j, g_j = jax.value_and_grad(share)(params)
      return (acc[0] + loss_j, jax.tree.map(jnp.add, acc[1], g_j)), None

    zero = (jnp.zeros([], jnp.float32), jax.tree.map(jnp.zeros_like, params))
    (loss, grads), _ = jax.lax.scan(micro, zero, (x, y, weights, mask))
    # 4: one update.
    updates, opt_state = opt.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, w_state, loss, weights

  return step


def _linear_loss(params, x, y):
  logits = x @ params["w"] + params["b"]
  return optax.softmax_cross_entropy_with_integer_labels(logits, y)


def main(updates: int = 50, k: int = 4, micro_batch: int = 16, seed: int = 0) -> dict:
  rng = np.random.default_rng(seed)
  counts = (300, 60, 12)  # long-tailed, three classes
  y_all = np.concatenate([np.full(c, i) for i, c in enumerate(counts)]).astype(np.int32)
  centers = rng.normal(0.0, 2.0, size=(3, 5))
  x_all = (centers[y_all] + rng.normal(size=(len(y_all), 5))).astype(np.float32)
  params = {"w": jnp.zeros((5, 3)), "b": jnp.zeros(3)}
  opt = absgd_jax.absgd(0.1, momentum=0.9)
  weigher = absgd_jax.absgd_weights(lam=1.0, gamma=0.9)
  step = make_accumulating_step(_linear_loss, weigher, opt)
  opt_state, w_state = opt.init(params), weigher.init()
  history = []
  for t in range(updates):
    idx = rng.choice(len(y_all), (k, micro_batch), replace=False)
    mask = np.ones((k, micro_batch), bool)
    params, opt_state, w_state, loss, _ = step(
      params, opt_state, w_state, x_all[idx], y_all[idx], mask
    )
    history.append(float(loss))
    if t % 10 == 0 or t == updates - 1:
      print(f"update {t:3d}  weighted loss {float(loss):.4f}  weigher count {int(w_state.count)}")
  pred = np.argmax(x_all @ np.asarray(params["w"]) + np.asarray(params["b"]), -1)
  per_class = [float(np.mean(pred[y_all == c] == c)) for c in range(3)]
  print("per-class accuracy:", [f"{a:.2f}" for a in per_class])
  return {"losses": history, "w_state": w_state, "per_class_accuracy": per_class}


if __name__ == "__main__":
  main()
