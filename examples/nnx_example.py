"""ABSGD with a Flax NNX model: the README's train step, for NNX.

A small convolutional net on synthetic 8x8 images of three classes, 80:16:4 (long-tailed),
trained with ABSGD's weights (lam > 0 up-weights the hard, mostly minority, samples) and
Eq. (2)'s momentum SGD. The weigher's state travels beside the model, as the optimizer's does.

Run: python examples/nnx_example.py
"""

from __future__ import annotations

import jax
import numpy as np
import optax
from flax import nnx

import absgd_jax


class Net(nnx.Module):
  def __init__(self, num_classes: int, rngs: nnx.Rngs):
    self.conv = nnx.Conv(1, 8, (3, 3), rngs=rngs)
    self.bn = nnx.BatchNorm(8, momentum=0.9, rngs=rngs)
    self.head = nnx.Linear(8 * 8 * 8, num_classes, rngs=rngs)

  def __call__(self, x):  # x: [B, 8, 8, 1]
    h = nnx.relu(self.bn(self.conv(x)))
    return self.head(h.reshape(h.shape[0], -1))


def make_train_step(weigher: absgd_jax.Weigher):
  """``train_step(model, optimizer, w_state, images, labels, mask)``, updating in place."""

  @nnx.jit
  def train_step(model, optimizer, w_state, images, labels, mask):
    def loss_fn(model):
      losses = optax.softmax_cross_entropy_with_integer_labels(model(images), labels)
      loss, (w_state_new, weights) = absgd_jax.weighted_mean(losses, w_state, weigher, where=mask)
      return loss, (w_state_new, weights, losses)

    (loss, (w_state, weights, losses)), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
    optimizer.update(model, grads)
    return loss, w_state, weights, losses

  return train_step


def synthetic_long_tail(seed: int = 0, counts=(80, 16, 4)):
  """Images whose class shows as a bright quadrant, plus noise; classes sized by ``counts``."""
  rng = np.random.default_rng(seed)
  labels = np.concatenate([np.full(n, c) for c, n in enumerate(counts)]).astype(np.int32)
  images = rng.normal(0.0, 0.7, size=(len(labels), 8, 8, 1)).astype(np.float32)
  for i, c in enumerate(labels):
    r, q = divmod(int(c), 2)
    images[i, 4 * r : 4 * r + 4, 4 * q : 4 * q + 4] += 1.5
  return images, labels


def epoch_batches(n: int, batch_size: int, rng: np.random.Generator):
  """Shuffled index batches of a fixed size; the last one padded, with mask False on padding."""
  order = rng.permutation(n)
  for start in range(0, n, batch_size):
    idx = order[start : start + batch_size]
    mask = np.arange(batch_size) < len(idx)
    yield np.resize(idx, batch_size), mask  # padding repeats real rows; the mask hides them


def main(epochs: int = 5, batch_size: int = 32, lam: float = 2.0, seed: int = 0) -> dict:
  images, labels = synthetic_long_tail(seed)
  model = Net(3, nnx.Rngs(seed))
  optimizer = nnx.Optimizer(model, absgd_jax.absgd(0.1, momentum=0.9), wrt=nnx.Param)
  weigher = absgd_jax.absgd_weights(lam=lam, gamma=0.9)
  train_step = make_train_step(weigher)
  w_state = weigher.init()
  rng = np.random.default_rng(seed)
  history = []
  for epoch in range(epochs):
    epoch_losses = []
    for idx, mask in epoch_batches(len(labels), batch_size, rng):
      loss, w_state, weights, _ = train_step(
        model, optimizer, w_state, images[idx], labels[idx], mask
      )
      epoch_losses.append(float(loss))
    history.append(float(np.mean(epoch_losses)))
    print(f"epoch {epoch:2d}  weighted loss {history[-1]:.4f}  log s {float(w_state.log_s):.3f}")
  model.eval()
  pred = np.asarray(jax.numpy.argmax(model(images), -1))
  per_class = [float(np.mean(pred[labels == c] == c)) for c in range(3)]
  print("per-class training accuracy:", [f"{a:.2f}" for a in per_class])
  return {"losses": history, "w_state": w_state, "per_class_accuracy": per_class}


if __name__ == "__main__":
  main()
