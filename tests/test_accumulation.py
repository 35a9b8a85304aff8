"""Gradient accumulation: k micro-batches against one big batch.

The exact recipe (examples/gradient_accumulation.py) gives the big batch's step. The plain
optax.MultiSteps recipe differs, and the tests name how: the count runs in micro-batches, and
each micro-batch's weights are normalised by its own s.
"""

import importlib.util
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import absgd_jax

K, B, D, C = 4, 8, 5, 3
ROOT = pathlib.Path(__file__).resolve().parents[1]


def _example():
  spec = importlib.util.spec_from_file_location(
    "gradient_accumulation", ROOT / "examples" / "gradient_accumulation.py"
  )
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _loss(params, x, y):
  return optax.softmax_cross_entropy_with_integer_labels(x @ params["w"] + params["b"], y)


def _data(seed, n):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, D)).astype(np.float32) * np.linspace(0.2, 3.0, n)[:, None]
  return x.astype(np.float32), rng.integers(0, C, n).astype(np.int32)


def _params(seed=0):
  rng = np.random.default_rng(seed)
  return {"w": jnp.asarray(rng.normal(size=(D, C)), jnp.float32), "b": jnp.zeros(C)}


def test_exact_recipe_equals_the_big_batch_step():
  ex = _example()
  lam = lambda c: jnp.where(c < 1, jnp.inf, 0.8)  # meant for update 1
  weigher = absgd_jax.absgd_weights(lam, gamma=0.6)
  opt = absgd_jax.absgd(0.1, momentum=0.9, weight_decay=1e-3)
  step = ex.make_accumulating_step(_loss, weigher, opt)

  @jax.jit
  def big_step(params, opt_state, w_state, x, y, mask):
    (loss, (w_state, w)), g = jax.value_and_grad(
      lambda p: absgd_jax.weighted_mean(_loss(p, x, y), w_state, weigher, where=mask), has_aux=True
    )(params)
    u, opt_state = opt.update(g, opt_state, params)
    return optax.apply_updates(params, u), opt_state, w_state, loss, w

  a = b = (_params(), opt.init(_params()), weigher.init())
  for t in range(3):
    x, y = _data(t, K * B)
    mask = np.random.default_rng(10 + t).random(K * B) < 0.8
    *a, loss_a, w_a = step(*a, x.reshape(K, B, D), y.reshape(K, B), mask.reshape(K, B))
    *b, loss_b, w_b = big_step(*b, x, y, mask)
    np.testing.assert_allclose(w_a.reshape(-1), w_b, rtol=1e-5)
    np.testing.assert_allclose(loss_a, loss_b, rtol=1e-5)
    jax.tree.map(lambda p, q: np.testing.assert_allclose(p, q, rtol=1e-5, atol=1e-6), a, b)
    # One weigher count per optimizer update: the lam schedule counts updates.
    assert int(a[2].count) == t + 1
    assert float(a[2].lam) == (np.inf if t == 0 else pytest.approx(0.8))


def _multisteps_run(weigher, batches, params, lr=0.1):
  opt = optax.MultiSteps(absgd_jax.absgd(lr, momentum=0.0), K)

  @jax.jit
  def micro_step(params, opt_state, w_state, x, y):
    (loss, (w_state, w)), g = jax.value_and_grad(
      lambda p: absgd_jax.weighted_mean(_loss(p, x, y), w_state, weigher), has_aux=True
    )(params)
    u, opt_state = opt.update(g, opt_state, params)
    return optax.apply_updates(params, u), opt_state, w_state, w

  opt_state, w_state, out = opt.init(params), weigher.init(), []
  for x, y in batches:
    params, opt_state, w_state, w = micro_step(params, opt_state, w_state, x, y)
    out.append((w, w_state))
  return params, out


def test_multisteps_normalises_each_micro_batch_by_itself():
  x, y = _data(3, K * B)
  params = _params(1)
  batches = [(x[j * B : (j + 1) * B], y[j * B : (j + 1) * B]) for j in range(K)]
  lam = 1.0
  new_params, out = _multisteps_run(absgd_jax.absgd_weights(lam, gamma=1.0), batches, params)
  e = np.exp(np.asarray(_loss(params, x, y), np.float64) / lam).reshape(K, B)
  big = e / e.mean()  # the big batch's weights (gamma = 1: normalised by the batch mean)
  micro = np.stack([np.asarray(w) for w, _ in out])
  # The difference, named: micro-batch j's weights are the big batch's times
  # mean(e over the big batch) / mean(e over micro-batch j).
  np.testing.assert_allclose(micro, big * (e.mean() / e.mean(axis=1))[:, None], rtol=1e-5)
  assert np.max(np.abs(micro / big - 1)) > 0.1  # and here it matters
  # The update MultiSteps applies: lr times the mean of the k micro-batch gradients.
  g = [
    jax.grad(
      lambda p, j=j: jnp.sum(jnp.asarray(micro[j], jnp.float32) * _loss(p, *batches[j])) / B
    )(params)
    for j in range(K)
  ]
  want = jax.tree.map(lambda p, *gs: p - 0.1 * sum(gs) / K, params, *g)
  jax.tree.map(
    lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), new_params, want
  )


def test_multisteps_counts_micro_batches_so_schedules_divide_by_k():
  x, y = _data(4, 3 * K * B)
  batches = [(x[j * B : (j + 1) * B], y[j * B : (j + 1) * B]) for j in range(3 * K)]
  sched = lambda u: jnp.where(u < 2, jnp.inf, 1.0)  # meant to switch at optimizer update 2
  _, naive = _multisteps_run(absgd_jax.absgd_weights(sched), batches, _params())
  _, fixed = _multisteps_run(absgd_jax.absgd_weights(lambda c: sched(c // K)), batches, _params())
  lam_naive = [float(s.lam) for _, s in naive]
  lam_fixed = [float(s.lam) for _, s in fixed]
  assert int(naive[-1][1].count) == 3 * K  # one count per micro-batch
  assert lam_naive.index(1.0) == 2  # switched at micro-batch 2, inside update 0
  assert lam_fixed.index(1.0) == 2 * K  # switched at update 2's first micro-batch


def test_multisteps_gamma_per_micro_batch_keeps_the_per_update_forgetting():
  # gamma_micro = 1 - (1 - gamma)^(1/k) forgets s at the big batch's rate per update; when
  # every micro-batch of an update has the same mean exp(L / lam), s then equals the big
  # batch's s exactly after each update.
  gamma, lam = 0.5, 1.5
  gamma_micro = 1 - (1 - gamma) ** (1 / K)
  rng = np.random.default_rng(5)
  micro = absgd_jax.absgd_weights(lam, gamma_micro)
  big = absgd_jax.absgd_weights(lam, gamma)
  sm, sb = micro.init(), big.init()
  for t in range(4):
    chunk = rng.exponential(1.0 + t, size=B).astype(np.float32)
    parts = [rng.permutation(chunk) for _ in range(K)]  # same losses, reordered
    for part in parts:
      _, sm = micro.update(jnp.asarray(part), sm)
    _, sb = big.update(jnp.asarray(np.concatenate(parts)), sb)
    np.testing.assert_allclose(sm.log_s, sb.log_s, rtol=1e-5)


def test_example_runs():
  out = _example().main(updates=20)
  assert int(out["w_state"].count) == 20
  assert np.mean(out["losses"][-5:]) < out["losses"][0]
