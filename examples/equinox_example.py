"""ABSGD with an Equinox model: the README's train step, for Equinox.

An MLP on synthetic two-dimensional data with 30% of the labels flipped at random. lam < 0
(min-min DRO, Eq. 4) gives the samples with the lowest loss the largest weights, so the
flipped labels, which the model fits last, weigh little. The optimizer is ABAdam (Eq. 9).

Run: python examples/equinox_example.py
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

import absgd_jax


def make_train_step(weigher: absgd_jax.Weigher, opt: optax.GradientTransformation):
  """``train_step(model, opt_state, w_state, x, y, mask) -> (model, opt_state, w_state, aux)``."""

  @eqx.filter_jit
  def train_step(model, opt_state, w_state, x, y, mask):
    def loss_fn(model):
      losses = optax.softmax_cross_entropy_with_integer_labels(jax.vmap(model)(x), y)
      loss, (w_state_new, weights) = absgd_jax.weighted_mean(losses, w_state, weigher, where=mask)
      return loss, (w_state_new, weights, losses)

    (loss, (w_state, weights, losses)), grads = eqx.filter_value_and_grad(loss_fn, has_aux=True)(
      model
    )
    updates, opt_state = opt.update(grads, opt_state, eqx.filter(model, eqx.is_array))
    return eqx.apply_updates(model, updates), opt_state, w_state, (loss, weights, losses)

  return train_step


def noisy_blobs(n: int = 256, noise: float = 0.3, seed: int = 0):
  """Two Gaussian blobs; a fraction ``noise`` of the labels flipped. Returns x, y, clean y."""
  rng = np.random.default_rng(seed)
  clean = rng.integers(0, 2, n).astype(np.int32)
  x = (rng.normal(size=(n, 2)) + np.where(clean[:, None] == 1, 1.5, -1.5)).astype(np.float32)
  flip = rng.random(n) < noise
  return x, np.where(flip, 1 - clean, clean).astype(np.int32), clean


def main(steps: int = 200, batch_size: int = 64, lam: float = -1.0, seed: int = 0) -> dict:
  x, y, clean = noisy_blobs(seed=seed)
  model = eqx.nn.MLP(2, 2, width_size=16, depth=2, key=jax.random.key(seed))
  opt = absgd_jax.abadam(1e-2)
  opt_state = opt.init(eqx.filter(model, eqx.is_array))
  weigher = absgd_jax.absgd_weights(lam=lam, gamma=0.9)
  w_state = weigher.init()
  train_step = make_train_step(weigher, opt)
  rng = np.random.default_rng(seed)
  mask = np.ones(batch_size, bool)  # every row is real here
  losses = []
  for step in range(steps):
    idx = rng.choice(len(y), batch_size, replace=False)
    model, opt_state, w_state, (loss, weights, _) = train_step(
      model, opt_state, w_state, x[idx], y[idx], mask
    )
    losses.append(float(loss))
    if step % 50 == 0 or step == steps - 1:
      print(
        f"step {step:3d}  weighted loss {float(loss):.4f}  "
        f"ess {float(absgd_jax.effective_sample_size(weights)):.1f}/{batch_size}"
      )
  pred = np.asarray(jnp.argmax(jax.vmap(model)(x), -1))
  clean_acc = float(np.mean(pred == clean))
  print(f"accuracy against the clean labels: {clean_acc:.3f}")
  return {"losses": losses, "w_state": w_state, "clean_accuracy": clean_acc}


if __name__ == "__main__":
  main()
