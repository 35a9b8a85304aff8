"""Tests of absgd_jax.losses against independent float64 NumPy formulas."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from absgd_jax import losses

C = 7
B = 16
CIFAR10_LT = np.array([5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50])
COUNTS_7 = np.array([4000, 1500, 600, 250, 90, 30, 10])


# --------------------------------------------------------------------------------------------
# float64 NumPy references, written from the papers' formulas rather than from the module.
# --------------------------------------------------------------------------------------------


def np_log_softmax(x):
  x = np.asarray(x, np.float64)
  m = x.max(axis=1, keepdims=True)
  return x - m - np.log(np.exp(x - m).sum(axis=1, keepdims=True))


def np_log_py(x, y):
  return np_log_softmax(x)[np.arange(len(y)), y]


def np_ce(x, y, eps=0.0, w=None):
  n_classes = x.shape[1]
  target = (1 - eps) * np.eye(n_classes)[y] + eps / n_classes
  loss = -(target * np_log_softmax(x)).sum(axis=1)
  return loss if w is None else loss * np.asarray(w, np.float64)[y]


def np_focal(x, y, gamma, w=None):
  log_p_t = np_log_py(x, y)
  loss = -((1 - np.exp(log_p_t)) ** gamma) * log_p_t
  return loss if w is None else loss * np.asarray(w, np.float64)[y]


def np_ldam(x, y, margins, scale, w=None):
  z = np.array(x, np.float64)
  z[np.arange(len(y)), y] -= np.asarray(margins, np.float64)[y]
  return np_ce(scale * z, y, w=w)


def np_logit_adjusted(x, y, counts, tau, w=None):
  """Menon et al.'s loss as written: CE of z + tau * log(prior), the prior n / N."""
  counts = np.asarray(counts, np.float64)
  return np_ce(np.asarray(x, np.float64) + tau * np.log(counts / counts.sum()), y, w=w)


def np_balanced_softmax(x, y, counts, w=None):
  """Ren et al.'s loss, -log(n_y e^{z_y} / sum_j n_j e^{z_j}), in log space so that logits
  in the thousands do not overflow: log sum_j exp(z_j + log n_j) - (z_y + log n_y)."""
  a = np.asarray(x, np.float64) + np.log(np.asarray(counts, np.float64))[None, :]
  m = a.max(axis=1, keepdims=True)
  loss = m[:, 0] + np.log(np.exp(a - m).sum(axis=1)) - a[np.arange(len(y)), y]
  return loss if w is None else loss * np.asarray(w, np.float64)[y]


def np_cb_weights(counts, beta):
  counts = np.asarray(counts, np.float64)
  w = (1 - beta) / (1 - beta**counts)
  return w * len(counts) / w.sum()


def np_sce(x, y, alpha, beta, log_zero):
  p = np.exp(np_log_softmax(x))
  log_q = np.full(x.shape, float(log_zero))  # one-hot target with log 0 clamped to A
  log_q[np.arange(len(y)), y] = 0.0
  rce = -(p * log_q).sum(axis=1)
  return alpha * np_ce(x, y) + beta * rce


def np_gce(x, y, q):
  return (1 - np.exp(np_log_py(x, y)) ** q) / q


def np_tgce(x, y, q, k):
  p_y = np.exp(np_log_py(x, y))
  return np.where(p_y <= k, (1 - k**q) / q, (1 - p_y**q) / q)


MARGINS_7 = 0.5 * (COUNTS_7.min() / COUNTS_7) ** 0.25
CLASS_W_7 = np.linspace(0.2, 2.0, C)

# name -> (jax loss(logits, labels), float64 reference(logits, labels), typical logit scale)
CASES = {
  "ce": (losses.cross_entropy, np_ce, 3.0),
  "ce_smooth": (
    lambda x, y: losses.cross_entropy(x, y, label_smoothing=0.2),
    lambda x, y: np_ce(x, y, eps=0.2),
    3.0,
  ),
  "ce_weighted": (
    lambda x, y: losses.cross_entropy(x, y, class_weights=CLASS_W_7),
    lambda x, y: np_ce(x, y, w=CLASS_W_7),
    3.0,
  ),
  "focal_g1": (losses.focal_loss, lambda x, y: np_focal(x, y, 1.0), 3.0),
  "focal_g2_weighted": (
    lambda x, y: losses.focal_loss(x, y, gamma=2.0, class_weights=CLASS_W_7),
    lambda x, y: np_focal(x, y, 2.0, w=CLASS_W_7),
    3.0,
  ),
  "focal_g05": (
    lambda x, y: losses.focal_loss(x, y, gamma=0.5),
    lambda x, y: np_focal(x, y, 0.5),
    3.0,
  ),
  "ldam": (
    lambda x, y: losses.ldam_loss(x, y, margins=MARGINS_7),
    lambda x, y: np_ldam(x, y, MARGINS_7, 30.0),
    1.0,
  ),
  "ldam_weighted": (
    lambda x, y: losses.ldam_loss(x, y, margins=MARGINS_7, scale=10.0, class_weights=CLASS_W_7),
    lambda x, y: np_ldam(x, y, MARGINS_7, 10.0, w=CLASS_W_7),
    1.0,
  ),
  "la": (
    lambda x, y: losses.logit_adjusted_cross_entropy(x, y, class_counts=COUNTS_7),
    lambda x, y: np_logit_adjusted(x, y, COUNTS_7, 1.0),
    3.0,
  ),
  "la_tau2_weighted": (
    lambda x, y: losses.logit_adjusted_cross_entropy(
      x, y, class_counts=COUNTS_7, tau=2.0, class_weights=CLASS_W_7
    ),
    lambda x, y: np_logit_adjusted(x, y, COUNTS_7, 2.0, w=CLASS_W_7),
    3.0,
  ),
  "bs_weighted": (
    lambda x, y: losses.balanced_softmax_cross_entropy(
      x, y, class_counts=COUNTS_7, class_weights=CLASS_W_7
    ),
    lambda x, y: np_balanced_softmax(x, y, COUNTS_7, w=CLASS_W_7),
    3.0,
  ),
  "sce": (losses.symmetric_cross_entropy, lambda x, y: np_sce(x, y, 0.1, 1.0, -4.0), 3.0),
  "sce_weighted": (
    lambda x, y: losses.symmetric_cross_entropy(x, y, class_weights=CLASS_W_7),
    lambda x, y: np_sce(x, y, 0.1, 1.0, -4.0) * CLASS_W_7[y],
    3.0,
  ),
  "gce_weighted": (
    lambda x, y: losses.generalized_cross_entropy(x, y, class_weights=CLASS_W_7),
    lambda x, y: np_gce(x, y, 0.7) * CLASS_W_7[y],
    3.0,
  ),
  "tgce_weighted": (
    lambda x, y: losses.truncated_generalized_cross_entropy(x, y, class_weights=CLASS_W_7),
    lambda x, y: np_tgce(x, y, 0.7, 0.5) * CLASS_W_7[y],
    3.0,
  ),
  "sce_custom": (
    lambda x, y: losses.symmetric_cross_entropy(x, y, alpha=6.0, beta=0.1, log_zero=-9.0),
    lambda x, y: np_sce(x, y, 6.0, 0.1, -9.0),
    3.0,
  ),
  "gce": (losses.generalized_cross_entropy, lambda x, y: np_gce(x, y, 0.7), 3.0),
  "gce_q1": (
    lambda x, y: losses.generalized_cross_entropy(x, y, q=1.0),
    lambda x, y: np_gce(x, y, 1.0),
    3.0,
  ),
  "tgce": (losses.truncated_generalized_cross_entropy, lambda x, y: np_tgce(x, y, 0.7, 0.5), 3.0),
  "tgce_k02": (
    lambda x, y: losses.truncated_generalized_cross_entropy(x, y, q=0.4, k=0.2),
    lambda x, y: np_tgce(x, y, 0.4, 0.2),
    3.0,
  ),
}


# One case per loss function, for the tests that compile each case separately (compiling is
# what costs time here); GRAD_CASES adds the plain CE path and a focal gamma below 1.
ONE_PER_LOSS = [
  "ce_smooth",
  "focal_g2_weighted",
  "ldam_weighted",
  "la_tau2_weighted",
  "bs_weighted",
  "sce",
  "gce",
  "tgce",
]
GRAD_CASES = ONE_PER_LOSS + ["ce", "focal_g05"]


def random_batch(seed, scale, batch=B, n_classes=C):
  rng = np.random.default_rng(seed)
  if scale == 1.0:  # cosine logits for LDAM
    x = rng.uniform(-1.0, 1.0, size=(batch, n_classes))
  else:
    x = scale * rng.standard_normal((batch, n_classes))
  y = rng.integers(0, n_classes, size=batch)
  return x.astype(np.float32), y.astype(np.int32)


EXTREME_CE = [0.0, 2e4, 1e4, math.log(2), math.log(2), 2e4 + math.log(2)]


def extreme_batch():
  """Rows of +-1e4 logits; labels on the winning, the losing and a middle class.

  Six patterns, tiled to the shape of `random_batch` so that eager ops compiled for one are
  reused by the other.
  """
  x = np.zeros((6, C), np.float32)
  x[:, 0] = 1e4
  x[:, 1] = -1e4
  x[3:, 2] = 1e4  # a tie between classes 0 and 2: p = 1/2 each
  y = np.array([0, 1, 3, 0, 2, 1], np.int32)
  rows = np.arange(B) % 6
  return x[rows], y[rows]


def grad_of_sum(per_sample_loss, x):
  """jax's gradient of sum_i loss(x)_i, compiled (faster here than op-by-op dispatch)."""
  return np.asarray(jax.jit(jax.grad(lambda z: jnp.sum(per_sample_loss(z))))(jnp.asarray(x)))


def fd_grad(f, x, h=1e-5):
  """Central finite differences of sum_i f(x)_i; each row of the loss depends on its row only."""
  x = np.asarray(x, np.float64)
  g = np.zeros_like(x)
  for j in range(x.shape[1]):
    e = np.zeros_like(x)
    e[:, j] = h
    g[:, j] = (f(x + e) - f(x - e)) / (2 * h)
  return g


# --------------------------------------------------------------------------------------------
# Every loss against its reference.
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("seed", [0, 1])
def test_matches_float64_reference(name, seed):
  fn, ref, scale = CASES[name]
  x, y = random_batch(seed, scale)
  got = fn(jnp.asarray(x), jnp.asarray(y))
  assert got.shape == (B,) and got.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(got), ref(x.astype(np.float64), y), rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("name", sorted(CASES))
def test_extreme_logits_finite_and_correct(name):
  fn, ref, _ = CASES[name]
  x, y = extreme_batch()
  got = np.asarray(fn(jnp.asarray(x), jnp.asarray(y)))
  assert np.all(np.isfinite(got))
  # LDAM subtracts a margin from a logit of 1e4, where float32's spacing is 1e-3, and then
  # multiplies by its scale: the input itself is only that precise (cosines are <= 1).
  atol = 30 * 1e4 * 2.0**-23 if name.startswith("ldam") else 1e-5
  np.testing.assert_allclose(got, ref(x.astype(np.float64), y), rtol=1e-5, atol=atol)


@pytest.mark.parametrize("name", GRAD_CASES)
def test_extreme_logits_finite_gradient(name):
  fn, ref, _ = CASES[name]
  x, y = extreme_batch()
  grad = grad_of_sum(lambda z: fn(z, y), x)
  assert np.all(np.isfinite(grad))
  # On the saturated rows (no tie, p_y exactly 0 or 1) float64 differences are exact enough to
  # compare with; the tie rows sit on truncated GCE's kink (p_y = k = 1/2).
  saturated = np.arange(B) % 6 < 3
  want = fd_grad(lambda z: ref(z, y), x)
  np.testing.assert_allclose(grad[saturated], want[saturated], atol=1e-4)


def test_extreme_values_by_hand():
  x, y = extreme_batch()
  ce = np.asarray(losses.cross_entropy(x, y))
  rows = np.arange(B) % 6
  np.testing.assert_allclose(ce, np.array(EXTREME_CE)[rows], rtol=1e-6)
  # 1 - p_y is 0 or 1 (or 1/2 on the ties), so SCE's reverse term is 0, 4 or 2.
  sce = np.asarray(losses.symmetric_cross_entropy(x, y, alpha=0.0, beta=1.0))
  np.testing.assert_allclose(sce, np.array([0.0, 4.0, 4.0, 2.0, 2.0, 4.0])[rows], atol=1e-6)


@pytest.mark.parametrize("name", GRAD_CASES)
def test_gradient_matches_finite_differences(name):
  fn, ref, scale = CASES[name]
  x, y = random_batch(7, scale / 1.5 if scale != 1.0 else 1.0)
  if name.startswith("tgce"):  # keep clear of the truncation kink for the difference quotient
    k = 0.5 if name == "tgce" else 0.2
    assert np.min(np.abs(np.exp(np_log_py(x, y)) - k)) > 1e-3
  got = grad_of_sum(lambda z: fn(z, y), x)
  want = fd_grad(lambda z: ref(z, y), x)
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=2e-5)


@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_cross_entropy_gradient_is_softmax_minus_target(eps):
  x, y = random_batch(3, 3.0)
  w = CLASS_W_7
  grad = grad_of_sum(lambda z: losses.cross_entropy(z, y, label_smoothing=eps, class_weights=w), x)
  p = np.exp(np_log_softmax(x))
  target = (1 - eps) * np.eye(C)[y] + eps / C
  np.testing.assert_allclose(np.asarray(grad), w[y][:, None] * (p - target), atol=2e-6)


def test_cross_entropy_gradient_at_extreme_logits():
  x, y = extreme_batch()
  grad = grad_of_sum(lambda z: losses.cross_entropy(z, y), x)
  p = np.exp(np_log_softmax(x))
  np.testing.assert_allclose(np.asarray(grad), p - np.eye(C)[y], atol=1e-6)


# --------------------------------------------------------------------------------------------
# Focal.
# --------------------------------------------------------------------------------------------


def test_focal_gamma_zero_is_cross_entropy():
  x, y = random_batch(4, 3.0)
  np.testing.assert_allclose(
    np.asarray(losses.focal_loss(x, y, gamma=0.0)),
    np.asarray(losses.cross_entropy(x, y)),
    rtol=1e-6,
    atol=1e-7,
  )
  g_focal = grad_of_sum(lambda z: losses.focal_loss(z, y, gamma=0.0), x)
  g_ce = grad_of_sum(lambda z: losses.cross_entropy(z, y), x)
  np.testing.assert_allclose(np.asarray(g_focal), np.asarray(g_ce), atol=1e-6)


@pytest.mark.parametrize("gamma", [0.5, 2.0])
def test_focal_class_weights_do_not_leak_into_p_t(gamma):
  x, y = random_batch(5, 3.0)
  w = np.array([100.0, 0.01, 1.0, 3.0, 0.5, 7.0, 0.2], np.float32)
  plain = np.asarray(losses.focal_loss(x, y, gamma=gamma))
  weighted = np.asarray(losses.focal_loss(x, y, gamma=gamma, class_weights=w))
  np.testing.assert_allclose(weighted, w[y] * plain, rtol=1e-6)
  # The modulating factor is computed from the unweighted softmax.
  p_t = np.exp(np_log_py(x, y))
  np.testing.assert_allclose(weighted, w[y] * (1 - p_t) ** gamma * -np.log(p_t), rtol=1e-5)
  g_plain = grad_of_sum(lambda z: losses.focal_loss(z, y, gamma=gamma), x)
  g_weighted = grad_of_sum(lambda z: losses.focal_loss(z, y, gamma=gamma, class_weights=w), x)
  np.testing.assert_allclose(
    np.asarray(g_weighted), w[y][:, None] * np.asarray(g_plain), rtol=1e-5, atol=1e-6
  )


@pytest.mark.parametrize("gamma", [0.0, 0.3, 2.0])
def test_focal_gradient_finite_when_p_t_is_one(gamma):
  x = jnp.array([[1e4, 0.0, -1e4], [50.0, 0.0, 0.0]])
  y = jnp.array([0, 0])
  loss = losses.focal_loss(x, y, gamma=gamma)
  grad = grad_of_sum(lambda z: losses.focal_loss(z, y, gamma=gamma), x)
  assert np.all(np.isfinite(np.asarray(loss))) and np.all(np.isfinite(np.asarray(grad)))
  np.testing.assert_allclose(np.asarray(loss), 0.0, atol=1e-12)


@pytest.mark.parametrize("gamma", [1.0, 2.0])
def test_focal_small_losses_of_confident_samples_are_relatively_accurate(gamma):
  # 1 - p_t of 5e-3 and 7e-4: losses down to 1e-10 must be right relative to their size, not
  # merely in absolute terms (hence abs=0). Much closer to p_t = 1 the float32 rounding of
  # log p_t in jax.nn.log_softmax (about 6e-8 absolute) dominates 1 - p_t.
  x = np.zeros((2, C), np.float32)
  x[:, 0] = [7.0, 9.0]
  y = np.zeros(2, np.int32)
  got = np.asarray(losses.focal_loss(x, y, gamma=gamma), np.float64)
  want = np_focal(x, y, gamma)
  assert got == pytest.approx(want, rel=2e-3, abs=0.0)


# --------------------------------------------------------------------------------------------
# LDAM.
# --------------------------------------------------------------------------------------------


def test_ldam_margins_two_classes():
  m = np.asarray(losses.ldam_margins(np.array([5000, 50])))
  np.testing.assert_allclose(m, [0.5 * (50 / 5000) ** 0.25, 0.5], rtol=1e-6)
  assert m.dtype == np.float32


@pytest.mark.parametrize("max_m", [0.5, 0.3, 1.0])
def test_ldam_margins_follow_quarter_power(max_m):
  m = np.asarray(losses.ldam_margins(jnp.asarray(CIFAR10_LT), max_m=max_m), np.float64)
  assert m.max() == pytest.approx(max_m, rel=1e-6) and np.argmax(m) == 9
  assert np.all(np.diff(m) > 0)
  np.testing.assert_allclose(m * CIFAR10_LT**0.25, max_m * 50**0.25, rtol=1e-5)


def test_ldam_margins_accept_float_and_huge_counts():
  m = np.asarray(losses.ldam_margins(np.array([1e30, 1.0, 16.0])))
  np.testing.assert_allclose(m, [0.5 * 1e-30**0.25, 0.5, 0.25], rtol=1e-5)


def test_ldam_shifts_only_the_true_logit():
  x, y = random_batch(2, 1.0)
  # Zero margins and scale 1 is plain cross-entropy.
  np.testing.assert_allclose(
    np.asarray(losses.ldam_loss(x, y, margins=np.zeros(C), scale=1.0)),
    np.asarray(losses.cross_entropy(x, y)),
    rtol=1e-6,
  )
  # Equivalent to CE on scale * (x - m_y e_y), formed by hand.
  shifted = x.copy()
  shifted[np.arange(B), y] -= MARGINS_7[y].astype(np.float32)
  np.testing.assert_allclose(
    np.asarray(losses.ldam_loss(x, y, margins=MARGINS_7, scale=30.0)),
    np.asarray(losses.cross_entropy(30.0 * shifted, y)),
    rtol=1e-5,
  )


# --------------------------------------------------------------------------------------------
# Class-balanced weights and DRW.
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("beta", [0.0, 0.9, 0.99, 0.999, 0.9999, 0.999999])
@pytest.mark.parametrize("counts", [CIFAR10_LT, COUNTS_7, np.array([1, 1, 2])])
def test_class_balanced_weights_formula(beta, counts):
  w = losses.class_balanced_weights(counts, beta=beta)
  assert w.dtype == jnp.float32 and w.shape == counts.shape
  assert float(jnp.sum(w)) == pytest.approx(len(counts), rel=1e-5)
  np.testing.assert_allclose(np.asarray(w), np_cb_weights(counts, beta), rtol=1e-5)


def test_class_balanced_weights_numpy_and_jax_inputs_agree():
  w_np = losses.class_balanced_weights(CIFAR10_LT)
  w_jax = losses.class_balanced_weights(jnp.asarray(CIFAR10_LT))
  w_float = losses.class_balanced_weights(CIFAR10_LT.astype(np.float64))
  np.testing.assert_array_equal(np.asarray(w_np), np.asarray(w_jax))
  np.testing.assert_allclose(np.asarray(w_np), np.asarray(w_float), rtol=1e-7)
  assert isinstance(w_np, jax.Array)


def test_class_balanced_weights_limits():
  np.testing.assert_allclose(
    np.asarray(losses.class_balanced_weights(COUNTS_7, beta=0.0)), np.ones(C), rtol=1e-7
  )
  # beta -> 1: inverse class frequency.
  inv = 1.0 / COUNTS_7
  np.testing.assert_allclose(
    np.asarray(losses.class_balanced_weights(COUNTS_7, beta=1 - 1e-12)),
    inv * C / inv.sum(),
    rtol=1e-5,
  )


def test_class_balanced_weights_under_jit_with_traced_counts():
  w = jax.jit(losses.class_balanced_weights)(jnp.asarray(CIFAR10_LT))
  np.testing.assert_allclose(np.asarray(w), np_cb_weights(CIFAR10_LT, 0.9999), rtol=1e-5)


def test_drw_switches_under_jit_without_recompiling():
  traces = []

  @jax.jit
  def weights_at(step):
    traces.append(1)  # runs once per trace, not per call
    return losses.drw_class_weights(CIFAR10_LT, step, 160, beta=0.9999)

  cb = np_cb_weights(CIFAR10_LT, 0.9999)
  for step in [0, 100, 159, 160, 161, 1000, 5]:
    w = np.asarray(weights_at(jnp.asarray(step, jnp.int32)))
    np.testing.assert_allclose(w, cb if step >= 160 else np.ones(10), rtol=1e-5)
  assert len(traces) == 1
  assert weights_at._cache_size() == 1


def test_drw_traced_switch_and_float_epoch():
  fn = jax.jit(lambda epoch, switch: losses.drw_class_weights(COUNTS_7, epoch, switch))
  cb = np_cb_weights(COUNTS_7, 0.9999)
  np.testing.assert_allclose(np.asarray(fn(jnp.float32(2.5), 3)), np.ones(C))
  np.testing.assert_allclose(np.asarray(fn(jnp.float32(3.0), 3)), cb, rtol=1e-5)
  np.testing.assert_allclose(np.asarray(fn(jnp.float32(3.0), 4)), np.ones(C))
  assert fn._cache_size() == 1
  # Eager with Python numbers too.
  np.testing.assert_allclose(np.asarray(losses.drw_class_weights(COUNTS_7, 0, 0)), cb, rtol=1e-5)


def test_drw_weights_feed_a_loss_in_a_jitted_step():
  x, y = random_batch(6, 1.0)

  @jax.jit
  def step_loss(step):
    w = losses.drw_class_weights(COUNTS_7, step, 10)
    return losses.ldam_loss(x, y, margins=MARGINS_7, class_weights=w)

  np.testing.assert_allclose(np.asarray(step_loss(9)), np_ldam(x, y, MARGINS_7, 30.0), rtol=1e-5)
  np.testing.assert_allclose(
    np.asarray(step_loss(10)),
    np_ldam(x, y, MARGINS_7, 30.0, w=np_cb_weights(COUNTS_7, 0.9999)),
    rtol=1e-5,
  )
  assert step_loss._cache_size() == 1


# --------------------------------------------------------------------------------------------
# SCE, GCE, truncated GCE.
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("alpha,beta", [(0.1, 1.0), (1.0, 1.0), (6.0, 0.1), (0.0, 5.0)])
def test_sce_is_ce_plus_four_times_one_minus_p_y(alpha, beta):
  x, y = random_batch(8, 3.0)
  p_y = np.exp(np_log_py(x, y))
  want = alpha * np_ce(x, y) + beta * 4.0 * (1.0 - p_y)
  got = losses.symmetric_cross_entropy(x, y, alpha=alpha, beta=beta, log_zero=-4.0)
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-6)


def test_sce_natural_log_clamp_is_beta_times_ln10():
  # The reference code's clamp at 1e-4 with a natural log is A = -4 ln 10.
  x, y = random_batch(9, 3.0)
  a = losses.symmetric_cross_entropy(x, y, alpha=0.1, beta=1.0, log_zero=math.log(1e-4))
  b = losses.symmetric_cross_entropy(x, y, alpha=0.1, beta=math.log(10.0), log_zero=-4.0)
  np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5)


def test_gce_limits():
  x, y = random_batch(10, 3.0)
  p_y = np.exp(np_log_py(x, y))
  np.testing.assert_allclose(
    np.asarray(losses.generalized_cross_entropy(x, y, q=1.0)), 1 - p_y, rtol=1e-5, atol=1e-6
  )
  np.testing.assert_allclose(
    np.asarray(losses.generalized_cross_entropy(x, y, q=1e-4)), np_ce(x, y), rtol=2e-3
  )


def test_truncated_gce_is_constant_below_k_with_zero_gradient():
  q, k = 0.7, 0.5
  x, y = random_batch(11, 3.0)
  p_y = np.exp(np_log_py(x, y))
  low = p_y <= k
  assert low.any() and (~low).any()
  fn = lambda z: losses.truncated_generalized_cross_entropy(z, jnp.asarray(y), q=q, k=k)
  got = np.asarray(fn(x))
  np.testing.assert_allclose(got[low], (1 - k**q) / q, rtol=1e-6)
  gce = np.asarray(losses.generalized_cross_entropy(x, y, q=q))
  np.testing.assert_array_equal(got[~low], gce[~low])
  grad = grad_of_sum(fn, x)
  assert np.all(grad[low] == 0.0)
  assert np.all(np.abs(grad[~low]).sum(axis=1) > 0)


def test_truncated_gce_k_zero_is_gce():
  x, y = random_batch(12, 3.0)
  np.testing.assert_array_equal(
    np.asarray(losses.truncated_generalized_cross_entropy(x, y, q=0.5, k=0.0)),
    np.asarray(losses.generalized_cross_entropy(x, y, q=0.5)),
  )


# --------------------------------------------------------------------------------------------
# jit, vmap, dtypes, bad labels.
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ONE_PER_LOSS)
def test_jit_of_vmap_agrees_with_eager(name):
  fn, _, scale = CASES[name]
  xs = np.stack([random_batch(s, scale)[0] for s in range(3)])  # an ensemble axis [3, B, C]
  y = random_batch(0, scale)[1]
  eager = np.stack([np.asarray(fn(x, y)) for x in xs])
  mapped = np.asarray(jax.jit(jax.vmap(fn, in_axes=(0, None)))(jnp.asarray(xs), jnp.asarray(y)))
  np.testing.assert_allclose(mapped, eager, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
@pytest.mark.parametrize("name", ["ce", "focal_g2_weighted", "sce", "gce", "ldam"])
def test_half_precision_logits_are_upcast(dtype, name):
  fn, _, scale = CASES[name]
  x, y = random_batch(13, scale)
  x_half = jnp.asarray(x, dtype)
  got = fn(x_half, jnp.asarray(y, jnp.int8))
  assert got.dtype == jnp.float32
  want = fn(x_half.astype(jnp.float32), jnp.asarray(y))
  np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


@pytest.mark.parametrize("name", ONE_PER_LOSS)
def test_out_of_range_labels_under_jit_give_nan(name):
  fn, _, scale = CASES[name]
  x, y = random_batch(14, scale)
  y[1], y[2] = -1, C
  got = np.asarray(jax.jit(fn)(jnp.asarray(x), jnp.asarray(y)))
  assert np.isnan(got[1:3]).all() and np.isfinite(np.delete(got, [1, 2])).all()


@pytest.mark.parametrize("name", ["ce", "tgce"])
def test_empty_batch(name):
  fn, _, _ = CASES[name]
  assert fn(jnp.zeros((0, C)), jnp.zeros((0,), jnp.int32)).shape == (0,)


# --------------------------------------------------------------------------------------------
# Argument validation.
# --------------------------------------------------------------------------------------------

X, Y = random_batch(15, 3.0, batch=4)

BAD_CALLS = [
  (lambda: losses.cross_entropy(X, Y, label_smoothing=1.0), r"label_smoothing.*\[0.0, 1.0\)"),
  (lambda: losses.cross_entropy(X, Y, label_smoothing=-0.1), r"label_smoothing.*-0.1"),
  (lambda: losses.cross_entropy(X, Y, class_weights=np.ones(C + 1)), r"class_weights.*\(7,\)"),
  (lambda: losses.cross_entropy(X, Y, class_weights=np.full(C, np.nan)), r"finite"),
  (lambda: losses.cross_entropy(X[0], Y), r"logits must be 2-D"),
  (lambda: losses.cross_entropy(X[None], Y), r"logits must be 2-D"),
  (lambda: losses.cross_entropy(X, Y[:, None]), r"labels must be 1-D"),
  (lambda: losses.cross_entropy(X, Y[:3]), r"length batch = 4"),
  (lambda: losses.cross_entropy(X, Y.astype(np.float32)), r"integer"),
  (lambda: losses.cross_entropy(X.astype(np.int32), Y), r"floating"),
  (lambda: losses.cross_entropy(X, np.array([0, 1, 7, 2])), r"\[0, 7\).*label 7"),
  (lambda: losses.focal_loss(X, np.array([0, -2, 1, 2])), r"label -2"),
  (lambda: losses.focal_loss(X, Y, gamma=-1.0), r"gamma.*-1.0"),
  (lambda: losses.focal_loss(X, Y, gamma=float("nan")), r"gamma.*nan"),
  (lambda: losses.ldam_margins(np.array([10, 0, 5])), r"class 1 has count 0"),
  (lambda: losses.ldam_margins(np.array([10, -3])), r"class 1 has count -3"),
  (lambda: losses.ldam_margins(np.array([[10, 5]])), r"1-D"),
  (lambda: losses.ldam_margins(np.array([10, 5]), max_m=-0.5), r"max_m.*-0.5"),
  (lambda: losses.ldam_loss(X, Y, margins=MARGINS_7, scale=0.0), r"scale.*\(0.0, inf\).*0.0"),
  (lambda: losses.ldam_loss(X, Y, margins=MARGINS_7[:3]), r"margins.*\(7,\)"),
  (
    lambda: losses.logit_adjusted_cross_entropy(X, Y, class_counts=COUNTS_7, tau=-1.0),
    r"tau.*-1.0",
  ),
  (
    lambda: losses.logit_adjusted_cross_entropy(X, Y, class_counts=COUNTS_7[:3]),
    r"class_counts.*\(7,\)",
  ),
  (
    lambda: losses.balanced_softmax_cross_entropy(X, Y, class_counts=np.r_[COUNTS_7[:6], 0]),
    r"class 6 has count 0",
  ),
  (
    lambda: losses.symmetric_cross_entropy(X, Y, class_weights=np.ones(3)),
    r"class_weights.*\(7,\)",
  ),
  (lambda: losses.class_balanced_weights(np.array([5, 0])), r"class 1 has count 0"),
  (lambda: losses.class_balanced_weights(np.array([]), 0.9), r"non-empty"),
  (lambda: losses.class_balanced_weights(np.array([5, 1]), beta=1.0), r"beta.*\[0.0, 1.0\)"),
  (lambda: losses.class_balanced_weights(np.array([5, 1]), beta=-0.1), r"beta.*-0.1"),
  (lambda: losses.drw_class_weights(np.array([5, 1]), 3, -1), r"switch_at.*-1"),
  (lambda: losses.drw_class_weights(np.array([5, 1]), np.array([3, 4]), 1), r"scalar"),
  (lambda: losses.symmetric_cross_entropy(X, Y, log_zero=0.0), r"log_zero.*0.0"),
  (lambda: losses.symmetric_cross_entropy(X, Y, alpha=-1.0), r"alpha.*-1.0"),
  (lambda: losses.symmetric_cross_entropy(X, Y, beta=float("inf")), r"beta.*inf"),
  (lambda: losses.generalized_cross_entropy(X, Y, q=0.0), r"q must lie in \(0.0, 1.0\]"),
  (lambda: losses.generalized_cross_entropy(X, Y, q=1.5), r"q.*1.5"),
  (lambda: losses.truncated_generalized_cross_entropy(X, Y, k=1.0), r"k must lie.*1.0"),
  (lambda: losses.truncated_generalized_cross_entropy(X, Y, k=-0.5), r"k.*-0.5"),
  (lambda: losses.truncated_generalized_cross_entropy(X, Y, q=-1), r"q.*-1"),
]


@pytest.mark.parametrize("call,match", BAD_CALLS)
def test_bad_arguments_raise_value_error(call, match):
  with pytest.raises(ValueError, match=match):
    call()


def test_validation_happens_at_trace_time():
  with pytest.raises(ValueError, match="gamma"):
    jax.jit(lambda x, y: losses.focal_loss(x, y, gamma=-1.0))(X, Y)
  with pytest.raises(ValueError, match="logits must be 2-D"):
    jax.jit(losses.generalized_cross_entropy)(X[0], Y)
  # Concrete labels closed over by a jitted function are still range-checked.
  with pytest.raises(ValueError, match="label 9"):
    jax.jit(lambda x: losses.cross_entropy(x, np.array([0, 9, 1, 2])))(X)
  with pytest.raises(ValueError, match="count 0"):
    jax.jit(lambda s: losses.drw_class_weights(np.array([4, 0]), s, 2))(1)
  with pytest.raises(ValueError, match="traced|Python number"):
    jax.jit(lambda x, y, g: losses.focal_loss(x, y, gamma=g))(X, Y, 2.0)


# --------------------------------------------------------------------------------------------
# One signature for every loss.
# --------------------------------------------------------------------------------------------

PER_SAMPLE_LOSSES = {
  "cross_entropy": {},
  "focal_loss": {},
  "ldam_loss": {"margins": MARGINS_7},
  "logit_adjusted_cross_entropy": {"class_counts": COUNTS_7},
  "balanced_softmax_cross_entropy": {"class_counts": COUNTS_7},
  "symmetric_cross_entropy": {},
  "generalized_cross_entropy": {},
  "truncated_generalized_cross_entropy": {},
}


def test_every_loss_takes_logits_labels_and_keywords_only():
  """(logits, labels, *, class_weights=None, ...) -> [B] for every per-sample loss, and the
  class weights scale each sample's loss by its label's weight."""
  import inspect

  listed = {n for n in losses.__all__ if n.endswith(("_loss", "cross_entropy"))}
  assert listed == set(PER_SAMPLE_LOSSES)
  x, y = random_batch(21, 1.0)
  for name, extra in PER_SAMPLE_LOSSES.items():
    fn = getattr(losses, name)
    params = list(inspect.signature(fn).parameters.values())
    assert [p.name for p in params[:2]] == ["logits", "labels"], name
    assert all(p.kind is p.KEYWORD_ONLY for p in params[2:]), name
    assert inspect.signature(fn).parameters["class_weights"].default is None, name
    plain = np.asarray(fn(x, y, **extra), np.float64)
    weighted = np.asarray(fn(x, y, class_weights=CLASS_W_7, **extra), np.float64)
    assert plain.shape == (len(y),)
    np.testing.assert_allclose(weighted, plain * CLASS_W_7[y], rtol=1e-5, atol=1e-7)


def test_logit_adjustment_with_tau_one_is_balanced_softmax():
  x, y = random_batch(22, 3.0)
  np.testing.assert_allclose(
    np.asarray(losses.logit_adjusted_cross_entropy(x, y, class_counts=CIFAR10_LT[:C])),
    np.asarray(losses.balanced_softmax_cross_entropy(x, y, class_counts=CIFAR10_LT[:C])),
    rtol=1e-6,
    atol=1e-6,
  )


def test_logit_adjustment_with_tau_zero_is_cross_entropy():
  x, y = random_batch(23, 3.0)
  np.testing.assert_allclose(
    np.asarray(losses.logit_adjusted_cross_entropy(x, y, class_counts=COUNTS_7, tau=0.0)),
    np_ce(x, y),
    rtol=1e-5,
    atol=1e-6,
  )


def test_logit_adjustment_favours_the_rare_class_at_equal_logits():
  """With equal logits, a rare class's sample has the larger loss (its prior is small), which
  is what pushes its logit up during training."""
  x = np.zeros((2, C), np.float32)
  y = np.array([0, C - 1])  # the most and the least frequent class of COUNTS_7
  got = np.asarray(losses.logit_adjusted_cross_entropy(x, y, class_counts=COUNTS_7))
  prior = COUNTS_7 / COUNTS_7.sum()
  np.testing.assert_allclose(got, -np.log(prior[y]), rtol=1e-5)
  assert got[1] > got[0]
