"""The README's train-step idiom runs as written (Flax Linen + BatchNorm), and as NNX."""

import pathlib
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import absgd_jax

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def _idiom_source():
  text = README.read_text()
  section = text[text.index("## The idiom"):]
  return re.search(r"```python\n(.*?)```", section, re.S).group(1)


class SmallNet(nn.Module):
  @nn.compact
  def __call__(self, x, train):
    x = nn.Conv(8, (3, 3))(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
    x = nn.relu(x).mean(axis=(1, 2))
    return nn.Dense(3)(x)


def _toy_data(n=24):
  rng = np.random.default_rng(0)
  images = jnp.asarray(rng.normal(size=(n, 8, 8, 1)), jnp.float32)
  labels = jnp.asarray(rng.integers(0, 3, size=n), jnp.int32)
  return images, labels


def test_readme_idiom_fits_in_20_lines():
  assert len(_idiom_source().strip().splitlines()) <= 20


def test_readme_idiom_runs_with_linen_batchnorm():
  namespace = {"model": SmallNet()}
  exec(compile(_idiom_source(), str(README), "exec"), namespace)
  train_step, opt, weigher = namespace["train_step"], namespace["opt"], namespace["weigher"]
  images, labels = _toy_data()
  variables = SmallNet().init(jax.random.key(0), images, train=False)
  params, batch_stats = variables["params"], variables["batch_stats"]
  opt_state, w_state = opt.init(params), weigher.init()

  # An independent path for the first step: weights from the float64 formula (first batch:
  # w = exp(L/lam) / mean exp(L/lam)), the gradient of sum(w * L) / B with w held fixed,
  # and Eq. (2)'s first step p - lr * (g + wd * p).
  def per_sample(p):
    logits, _ = SmallNet().apply({"params": p, "batch_stats": batch_stats}, images, train=True,
                                 mutable=["batch_stats"])
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  L = np.asarray(per_sample(params), np.float64)
  w = np.exp(L / 5.0) / np.mean(np.exp(L / 5.0))
  g = jax.grad(lambda p: jnp.sum(jnp.asarray(w, jnp.float32) * per_sample(p)) / len(L))(params)
  want = jax.tree.map(lambda p, g: p - 0.1 * (g + 2e-4 * p), params, g)

  losses = []
  for step in range(5):
    params, new_stats, opt_state, w_state, loss = train_step(params, batch_stats, opt_state,
                                                            w_state, images, labels)
    if step == 0:
      jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
                   params, want)
    assert not jax.tree.all(jax.tree.map(jnp.array_equal, new_stats, batch_stats))
    batch_stats = new_stats
    losses.append(float(loss))
  assert int(w_state.count) == 5 and np.isfinite(float(w_state.log_s))
  assert losses[-1] < losses[0]


class NNXNet(nnx.Module):
  def __init__(self, rngs):
    self.conv = nnx.Conv(1, 8, (3, 3), rngs=rngs)
    self.bn = nnx.BatchNorm(8, momentum=0.9, rngs=rngs)
    self.head = nnx.Linear(8, 3, rngs=rngs)

  def __call__(self, x):
    return self.head(nnx.relu(self.bn(self.conv(x))).mean(axis=(1, 2)))


def test_idiom_with_nnx():
  weigher = absgd_jax.absgd_weights(lam=-2.0, gamma=0.5)  # lam < 0: label noise
  model = NNXNet(nnx.Rngs(0))
  optimizer = nnx.Optimizer(model, absgd_jax.abadam(1e-2), wrt=nnx.Param)

  @nnx.jit
  def train_step(model, optimizer, w_state, images, labels):
    def loss_fn(model):
      losses = optax.softmax_cross_entropy_with_integer_labels(model(images), labels)
      weights, w_state_new = weigher.update(losses, w_state)
      return jnp.mean(weights * losses), (w_state_new, weights, losses)
    (loss, (w_state, weights, per_sample)), grads = nnx.value_and_grad(
        loss_fn, has_aux=True)(model)
    optimizer.update(model, grads)
    return loss, w_state, weights, per_sample

  images, labels = _toy_data()
  w_state = weigher.init()
  before = nnx.state(model, nnx.Param)
  before = jax.tree.map(np.array, before)
  loss, w_state, weights, per_sample = train_step(model, optimizer, w_state, images, labels)
  # lam < 0: the lowest-loss sample gets the largest weight.
  assert int(np.argmax(weights)) == int(np.argmin(per_sample))
  after = jax.tree.map(np.array, nnx.state(model, nnx.Param))
  assert any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(before),
                                                      jax.tree.leaves(after)))
  assert int(w_state.count) == 1
