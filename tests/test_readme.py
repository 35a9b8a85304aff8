"""The README's train-step idiom runs as written (Flax Linen + BatchNorm), and the block after it
really calls it; the NNX and Equinox examples run and match an independent computation of their
first step."""

import importlib.util
import pathlib
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import absgd_jax

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def _idiom_source():
  text = README.read_text()
  section = text[text.index("## The idiom") :]
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
  mask = np.arange(len(labels)) < len(labels) - 5  # the last 5 rows are padding
  variables = jax.jit(lambda k: SmallNet().init(k, images, train=False))(jax.random.key(0))
  params, batch_stats = variables["params"], variables["batch_stats"]
  opt_state, w_state = opt.init(params), weigher.init()

  # An independent path for the first step: weights from the float64 formula over the real
  # rows (first batch: w = exp(L/lam) / mean exp(L/lam)), the gradient of sum(w * L) / n with
  # w held fixed and n the number of real rows (not B), and Eq. (2)'s first
  # step p - lr * (g + wd * p).
  def per_sample(p):
    logits, _ = SmallNet().apply(
      {"params": p, "batch_stats": batch_stats}, images, train=True, mutable=["batch_stats"]
    )
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels)

  # Under jit: eagerly, each operation of the network's forward and backward compiles alone.
  L = np.asarray(jax.jit(per_sample)(params), np.float64)
  e = np.exp(L / 5.0)
  w = np.where(mask, e / np.mean(e[mask]), 0.0)
  g = jax.jit(
    jax.grad(lambda p: jnp.sum(jnp.asarray(w, jnp.float32) * per_sample(p)) / mask.sum())
  )(params)
  want = jax.tree.map(lambda p, g: p - 0.1 * (g + 2e-4 * p), params, g)

  losses = []
  for step in range(5):
    params, new_stats, opt_state, w_state, loss = train_step(
      params, batch_stats, opt_state, w_state, images, labels, mask
    )
    if step == 0:
      np.testing.assert_allclose(loss, np.sum(w * L) / mask.sum(), rtol=1e-5)
    if step == 0:
      jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), params, want
      )
    assert not jax.tree.all(jax.tree.map(jnp.array_equal, new_stats, batch_stats))
    batch_stats = new_stats
    losses.append(float(loss))
  assert int(w_state.count) == 5 and np.isfinite(float(w_state.log_s))
  assert losses[-1] < losses[0]


def test_readme_blocks_in_order_call_the_step(tmp_path, monkeypatch):
  import test_docs_examples

  monkeypatch.chdir(tmp_path)
  namespace = test_docs_examples.run_page(README)
  # Five steps ran: the weigher counted them, and BatchNorm's statistics moved from init's.
  assert int(namespace["w_state"].count) == 5
  assert np.isfinite(float(namespace["loss"]))
  init_stats = namespace["variables"]["batch_stats"]
  assert not jax.tree.all(jax.tree.map(jnp.array_equal, namespace["batch_stats"], init_stats))


def _example(name):
  path = README.parent / "examples" / f"{name}.py"
  spec = importlib.util.spec_from_file_location(f"example_{name}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_idiom_with_nnx():
  ex = _example("nnx_example")
  weigher = absgd_jax.absgd_weights(lam=-2.0, gamma=0.5)  # lam < 0: label noise
  model = ex.Net(3, nnx.Rngs(0))
  optimizer = nnx.Optimizer(model, absgd_jax.abadam(1e-2), wrt=nnx.Param)
  train_step = ex.make_train_step(weigher)

  images, labels = _toy_data()
  mask = np.arange(len(labels)) < 20
  w_state = weigher.init()
  before = jax.tree.map(np.array, nnx.state(model, nnx.Param))
  loss, w_state, weights, per_sample = train_step(model, optimizer, w_state, images, labels, mask)
  # lam < 0: the lowest-loss real sample gets the largest weight; padding gets none.
  L = np.asarray(per_sample, np.float64)
  assert int(np.argmax(weights)) == int(np.argmin(np.where(mask, L, np.inf)))
  e = np.exp(L / -2.0)
  w_ref = np.where(mask, e / e[mask].mean(), 0.0)
  np.testing.assert_allclose(weights, w_ref, rtol=1e-5)
  np.testing.assert_allclose(loss, np.sum(w_ref * L) / mask.sum(), rtol=1e-5)
  after = jax.tree.map(np.array, nnx.state(model, nnx.Param))
  assert any(
    not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after))
  )
  assert int(w_state.count) == 1


def test_nnx_example_runs_and_learns():
  ex = _example("nnx_example")
  out = ex.main(epochs=3)
  assert int(out["w_state"].count) == 3 * 4  # 100 samples in batches of 32: 4 per epoch
  assert out["losses"][-1] < out["losses"][0]
  assert min(out["per_class_accuracy"]) > 0.5  # the 4-sample class too


def test_equinox_example_one_step_is_eq9_on_the_weighted_mean():
  eqx = pytest.importorskip("equinox")
  ex = _example("equinox_example")
  x, y, _ = ex.noisy_blobs(n=16, seed=1)
  mask = np.arange(16) < 12
  model = eqx.nn.MLP(2, 2, width_size=8, depth=1, key=jax.random.key(1))
  opt = absgd_jax.abadam(1e-2)
  weigher = absgd_jax.absgd_weights(lam=-1.0)
  params = eqx.filter(model, eqx.is_array)
  new_model, _, w_state, (loss, weights, losses) = ex.make_train_step(weigher, opt)(
    model, opt.init(params), weigher.init(), x, y, mask
  )
  # Independent path: NumPy weights, the gradient of sum(w L)/n with w fixed, and optax.adamw
  # (which abadam with bias correction is) applied to it.
  L = np.asarray(losses, np.float64)
  e = np.exp(L / -1.0)
  w_ref = np.where(mask, e / e[mask].mean(), 0.0)
  np.testing.assert_allclose(weights, w_ref, rtol=1e-5)

  def fixed_w_loss(m):
    per = optax.softmax_cross_entropy_with_integer_labels(jax.vmap(m)(x), y)
    return jnp.sum(jnp.asarray(w_ref, jnp.float32) * per) / mask.sum()

  g = eqx.filter_jit(eqx.filter_grad(fixed_w_loss))(model)  # jit: one compile, not one an op.
  ref_opt = optax.adamw(1e-2, weight_decay=0.0)
  u, _ = eqx.filter_jit(ref_opt.update)(g, ref_opt.init(params), params)
  want = eqx.apply_updates(model, u)
  jax.tree.map(
    lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
    eqx.filter(new_model, eqx.is_array),
    eqx.filter(want, eqx.is_array),
  )
  assert int(w_state.count) == 1


def test_equinox_example_runs_and_learns():
  pytest.importorskip("equinox")
  out = _example("equinox_example").main(steps=80)
  assert int(out["w_state"].count) == 80
  assert np.mean(out["losses"][-10:]) < np.mean(out["losses"][:10])
  assert out["clean_accuracy"] > 0.85  # two blobs 3 sigma apart; 30% of labels flipped


def test_main_docstrings_cite_the_paper():
  # A References section naming the paper in each main entry point.
  import absgd_jax.objective
  import absgd_jax.optimizers
  import absgd_jax.weighted_loss
  import absgd_jax.weights

  for obj in (
    absgd_jax,
    absgd_jax.weights,
    absgd_jax.absgd_weights,
    absgd_jax.absgd,
    absgd_jax.abadam,
    absgd_jax.optimizers,
    absgd_jax.weighted_loss,
    absgd_jax.objective,
  ):
    doc = obj.__doc__
    assert "References:" in doc and "arXiv:2012.06951" in doc, obj
