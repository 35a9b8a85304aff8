"""The diagnostics (ESS, per-class weights, weight_stats) against NumPy formulas."""

import jax.numpy as jnp
import numpy as np
import pytest

import absgd_jax


def test_diagnostics_against_numpy():
  w = np.random.default_rng(8).exponential(1.0, size=50).astype(np.float32)
  labels = np.random.default_rng(9).integers(0, 4, size=50)
  ess = float(absgd_jax.effective_sample_size(jnp.asarray(w)))
  assert ess == pytest.approx(w.sum() ** 2 / (w**2).sum(), rel=1e-5)
  sums, counts = absgd_jax.class_mean_weights(jnp.asarray(w), jnp.asarray(labels), 4)
  for c in range(4):
    assert float(sums[c]) == pytest.approx(w[labels == c].sum(), rel=1e-5)
    assert int(counts[c]) == int((labels == c).sum())
  assert float(absgd_jax.effective_sample_size(jnp.zeros(3))) == 0.0


def test_class_counts_include_samples_whose_weight_is_zero():
  # lam < 0 can drive a sample's weight to 0 (underflow); it is still one of its class's
  # samples, so the mean weight of its class is the sum over the count of all of them.
  w = jnp.array([0.0, 2.0, 0.0, 0.0, 1.0])
  labels = jnp.array([0, 0, 1, 1, 2])
  sums, counts = absgd_jax.class_mean_weights(w, labels, 3)
  np.testing.assert_array_equal(np.asarray(counts), [2.0, 2.0, 1.0])
  np.testing.assert_array_equal(np.asarray(sums), [2.0, 0.0, 1.0])
  np.testing.assert_array_equal(np.asarray(sums / counts), [1.0, 0.0, 1.0])


def test_ess_fraction_counts_only_real_samples():
  # 60 real rows of a batch padded to 64, uniform weights: the whole real batch is effective.
  real = jnp.arange(64) < 60
  wt = absgd_jax.absgd_weights(lam=2.0)
  w, state = wt.update(jnp.ones(64), wt.init(), mask=real)
  stats = absgd_jax.weight_stats(w, state, where=real)
  assert float(stats["ess"]) == pytest.approx(60.0)
  assert float(stats["ess_fraction"]) == pytest.approx(1.0)
  # Without the mask only the padded size is known.
  assert float(absgd_jax.weight_stats(w, state)["ess_fraction"]) == pytest.approx(60 / 64)
  # Uneven weights: Kish's ESS over the real count.
  x = np.random.default_rng(3).exponential(1.0, 64).astype(np.float32)
  w, state = wt.update(jnp.asarray(x), wt.init(), mask=real)
  v = np.asarray(w, np.float64)[:60]
  got = float(absgd_jax.weight_stats(w, state, where=real)["ess_fraction"])
  assert got == pytest.approx(v.sum() ** 2 / (v**2).sum() / 60, rel=1e-5)
  # A batch with no real row has no effective sample.
  none = jnp.zeros(64, bool)
  w, state = wt.update(jnp.ones(64), wt.init(), mask=none)
  assert float(absgd_jax.weight_stats(w, state, where=none)["ess_fraction"]) == 0.0


def test_weight_stats_kl_is_the_normalised_weights_divergence_from_uniform():
  x = np.random.default_rng(4).exponential(1.0, 32).astype(np.float32)
  real = jnp.arange(32) < 30
  wt = absgd_jax.absgd_weights(lam=0.7)
  w, state = wt.update(jnp.asarray(x), wt.init(), mask=real)
  v = np.asarray(w, np.float64)[:30]
  p = v / v.sum()
  got = float(absgd_jax.weight_stats(w, state, where=real)["kl"])
  assert got == pytest.approx(float(np.sum(p * np.log(30 * p))), rel=1e-4)
  # Uniform weights: 0; all the weight on one of n samples: log n.
  assert float(absgd_jax.weight_stats(jnp.ones(8), state)["kl"]) == pytest.approx(0.0, abs=1e-6)
  one = jnp.zeros(8).at[3].set(5.0)
  assert float(absgd_jax.weight_stats(one, state)["kl"]) == pytest.approx(np.log(8), rel=1e-6)
