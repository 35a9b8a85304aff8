"""Eq. (2) and Eq. (9), step by step against float64 NumPy; the DRO objective against Eq. (6)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import absgd_jax
from reference import abadam_reference, heavy_ball_reference, pytorch_sgd_reference


def _grads(seed, steps=12, dim=5):
  rng = np.random.default_rng(seed)
  return [rng.normal(size=dim).astype(np.float32) for _ in range(steps)]


def _run(opt, grads, w0):
  params = jnp.asarray(w0)
  state = opt.init(params)
  update = jax.jit(opt.update)
  path = []
  for g in grads:
    u, state = update(jnp.asarray(g), state, params)
    params = optax.apply_updates(params, u)
    path.append(np.asarray(params))
  return path


@pytest.mark.parametrize("momentum, wd", [(0.9, 0.0), (0.9, 5e-4), (0.0, 1e-2), (0.5, 0.1)])
def test_absgd_is_eq2(momentum, wd):
  grads, w0 = _grads(0), np.linspace(-1, 1, 5)
  got = _run(absgd_jax.absgd(0.05, momentum=momentum, weight_decay=wd), grads, w0)
  want = heavy_ball_reference(grads, w0, [0.05] * len(grads), momentum, wd)
  np.testing.assert_allclose(np.array(got), np.array(want), rtol=1e-5, atol=1e-6)


def test_absgd_is_eq2_with_a_learning_rate_schedule():
  grads, w0 = _grads(1), np.ones(5)
  sched = optax.piecewise_constant_schedule(0.1, {4: 0.01, 8: 0.1})
  got = _run(
    absgd_jax.absgd(sched, momentum=0.9, weight_decay=2e-4, momentum_form="paper"), grads, w0
  )
  want = heavy_ball_reference(grads, w0, [float(sched(t)) for t in range(12)], 0.9, 2e-4)
  np.testing.assert_allclose(np.array(got), np.array(want), rtol=1e-5, atol=1e-6)


def test_absgd_matches_optax_sgd_at_constant_rate():
  grads, w0 = _grads(2), np.zeros(5)
  got = _run(absgd_jax.absgd(0.1, momentum=0.9, nesterov=True), grads, w0)
  want = _run(optax.sgd(0.1, momentum=0.9, nesterov=True), grads, w0)
  np.testing.assert_allclose(np.array(got), np.array(want), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("nesterov", [False, True])
def test_pytorch_form_is_exactly_optax_chain_of_decay_and_sgd(nesterov):
  # The default form is optax's own parts, bit for bit, schedule included.
  grads, w0 = _grads(5), np.linspace(-1, 1, 5)
  sched = optax.piecewise_constant_schedule(0.1, {4: 0.1, 8: 0.1})
  got = _run(absgd_jax.absgd(sched, momentum=0.9, weight_decay=5e-4, nesterov=nesterov), grads, w0)
  want = _run(
    optax.chain(optax.add_decayed_weights(5e-4), optax.sgd(sched, momentum=0.9, nesterov=nesterov)),
    grads,
    w0,
  )
  np.testing.assert_array_equal(np.array(got), np.array(want))


@pytest.mark.parametrize("momentum, wd", [(0.9, 2e-4), (0.0, 1e-2)])
def test_pytorch_form_is_torch_sgd_with_a_learning_rate_schedule(momentum, wd):
  grads, w0 = _grads(5), np.linspace(-1, 1, 5)
  sched = optax.piecewise_constant_schedule(0.1, {4: 0.01, 8: 0.1})
  got = _run(absgd_jax.absgd(sched, momentum=momentum, weight_decay=wd), grads, w0)
  want = pytorch_sgd_reference(grads, w0, [float(sched(t)) for t in range(12)], momentum, wd)
  np.testing.assert_allclose(np.array(got), np.array(want), rtol=1e-5, atol=1e-6)
  # The default form is optax's own SGD with coupled weight decay, under a schedule too.
  optax_sgd = optax.chain(optax.add_decayed_weights(wd), optax.sgd(sched, momentum=momentum))
  np.testing.assert_allclose(
    np.array(got), np.array(_run(optax_sgd, grads, w0)), rtol=1e-5, atol=1e-6
  )


def test_the_two_momentum_forms_agree_until_the_rate_changes():
  grads, w0 = _grads(6), np.ones(5)
  sched = optax.piecewise_constant_schedule(0.1, {6: 0.01})
  paper = np.array(_run(absgd_jax.absgd(sched, momentum=0.9, momentum_form="paper"), grads, w0))
  torch_form = np.array(_run(absgd_jax.absgd(sched, momentum=0.9), grads, w0))
  np.testing.assert_allclose(paper[:6], torch_form[:6], rtol=1e-5, atol=1e-6)
  # After the 10x drop the paper's form still moves on the old rate's momentum: larger steps.
  step = lambda path: np.abs(np.diff(path[5:], axis=0)).sum()
  assert step(paper) > 2 * step(torch_form)
  with pytest.raises(ValueError, match="momentum_form must be one of"):
    absgd_jax.absgd(0.1, momentum_form="torch")


def test_weight_decay_mask():
  params = {"w": jnp.ones(2), "bn_scale": jnp.ones(2)}
  opt = absgd_jax.absgd(
    1.0, momentum=0.0, weight_decay=0.5, weight_decay_mask={"w": True, "bn_scale": False}
  )
  zeros = jax.tree.map(jnp.zeros_like, params)
  u, _ = opt.update(zeros, opt.init(params), params)
  np.testing.assert_allclose(u["w"], -0.5)
  np.testing.assert_allclose(u["bn_scale"], 0.0)


@pytest.mark.parametrize("bias_correction", [True, False])
def test_abadam_weight_decay_mask(bias_correction):
  # Eq. (9) with mu = 0.5 where the mask is True and mu = 0 where it is False (BatchNorm
  # scales), each leaf against the float64 reference with its own mu.
  grads = _grads(3)
  params = {
    "w": jnp.asarray(np.linspace(-2, 2, 5), jnp.float32),
    "bn_scale": jnp.asarray(np.linspace(0.5, 1.5, 5), jnp.float32),
  }
  opt = absgd_jax.abadam(
    1e-2,
    b1=0.9,
    b2=0.99,
    eps=1e-6,
    weight_decay=0.5,
    bias_correction=bias_correction,
    weight_decay_mask={"w": True, "bn_scale": False},
  )
  state = opt.init(params)
  path = []
  for g in grads:
    u, state = opt.update({"w": jnp.asarray(g), "bn_scale": jnp.asarray(g)}, state, params)
    params = optax.apply_updates(params, u)
    path.append(jax.device_get(params))
  for name, wd in (("w", 0.5), ("bn_scale", 0.0)):
    w0 = np.linspace(-2, 2, 5) if name == "w" else np.linspace(0.5, 1.5, 5)
    want = abadam_reference(grads, w0, 1e-2, 0.9, 0.99, 1e-6, wd, bias_correction)
    for got, ref in zip(path, want):
      np.testing.assert_allclose(got[name], ref, rtol=1e-5, atol=1e-6, err_msg=name)


@pytest.mark.parametrize("bias_correction", [True, False])
@pytest.mark.parametrize("wd", [0.0, 1e-2])
def test_abadam_is_eq9(bias_correction, wd):
  grads, w0 = _grads(3), np.linspace(-2, 2, 5)
  opt = absgd_jax.abadam(
    1e-2, b1=0.9, b2=0.99, eps=1e-6, weight_decay=wd, bias_correction=bias_correction
  )
  got = _run(opt, grads, w0)
  want = abadam_reference(grads, w0, 1e-2, 0.9, 0.99, 1e-6, wd, bias_correction)
  np.testing.assert_allclose(np.array(got), np.array(want), rtol=1e-5, atol=1e-6)


def test_abadam_with_bias_correction_is_adamw():
  grads, w0 = _grads(4), np.ones(5)
  got = _run(absgd_jax.abadam(3e-3, weight_decay=1e-2), grads, w0)
  want = _run(optax.adamw(3e-3, weight_decay=1e-2), grads, w0)
  np.testing.assert_allclose(np.array(got), np.array(want), rtol=1e-6)


@pytest.mark.parametrize(
  "make, match",
  [
    (lambda: absgd_jax.absgd(0.1, momentum=1.0), r"momentum must lie in \[0, 1\)"),
    (lambda: absgd_jax.absgd(0.1, momentum=-0.1), r"momentum must lie in \[0, 1\)"),
    (lambda: absgd_jax.absgd(0.1, weight_decay=-1e-4), "weight_decay must lie in"),
    (lambda: absgd_jax.abadam(0.1, b2=1.0), r"b2 must lie in \[0, 1\)"),
    (lambda: absgd_jax.abadam(0.1, eps=-1.0), "eps must lie in"),
    # A negative learning rate is refused like a bad momentum.
    (lambda: absgd_jax.absgd(-1.0), r"learning_rate must lie in \[0, inf\); got -1.0"),
    (lambda: absgd_jax.abadam(-1e-3), r"learning_rate must lie in \[0, inf\); got -0.001"),
    (lambda: absgd_jax.absgd(float("nan")), "learning_rate must lie in"),
    (lambda: absgd_jax.absgd(jnp.float32(-0.1)), "learning_rate must lie in"),
    (
      lambda: absgd_jax.absgd(optax.constant_schedule(-0.1)),
      r"learning_rate.*got -0.1.* at step 0",
    ),
    (lambda: absgd_jax.absgd(0.1, momentum_form="torch"), "momentum_form must be one of"),
  ],
)
def test_bad_optimizer_arguments(make, match):
  with pytest.raises(ValueError, match=match):
    make()


# --- the DRO objective, Eq. (6) ---------------------------------------------------------------


@pytest.mark.parametrize("lam", [0.3, 2.0, -0.4, -5.0])
def test_dro_objective_formula(lam):
  L = np.random.default_rng(5).exponential(1.0, size=32)
  want = lam * math.log(np.mean(np.exp(L / lam)))
  np.testing.assert_allclose(float(absgd_jax.dro_objective(jnp.asarray(L), lam)), want, rtol=1e-5)


@pytest.mark.parametrize("lam", [float("inf"), -float("inf")])
def test_dro_objective_at_infinite_lam_is_the_mean(lam):
  L = jnp.asarray(np.random.default_rng(6).exponential(1.0, size=10), jnp.float32)
  assert float(absgd_jax.dro_objective(L, lam)) == pytest.approx(float(jnp.mean(L)), rel=1e-6)
  traced = jax.jit(absgd_jax.dro_objective)(L, jnp.float32(lam))
  assert float(traced) == pytest.approx(float(jnp.mean(L)), rel=1e-6)
  assert np.all(np.isfinite(jax.grad(absgd_jax.dro_objective)(L, jnp.float32(lam))))


def test_dro_objective_extreme_and_limits():
  L = jnp.array([0.0, 1e3, 5e2])
  # lam -> 0+: the max loss; lam -> 0-: the min loss (Section 3.2). No overflow at L/lam=1e5.
  assert float(absgd_jax.dro_objective(L, 1e-2)) == pytest.approx(
    1e3 - 1e-2 * math.log(3), rel=1e-6
  )
  assert float(absgd_jax.dro_objective(L, -1e-2)) == pytest.approx(1e-2 * math.log(3), abs=1e-4)
  with pytest.raises(ValueError, match="lam must be nonzero"):
    absgd_jax.dro_objective(L, 0.0)
  with pytest.raises(ValueError, match="non-empty 1-D"):
    absgd_jax.dro_objective(jnp.ones((2, 2)), 1.0)


@pytest.mark.parametrize("lam", [0.5, -0.7])
def test_weighted_gradient_with_gamma_one_on_the_full_data_is_the_dro_gradient(lam):
  # ABSGD's gradient estimator mean(w * grad L) with s = mean exp(L/lam) over all n samples
  # (gamma = 1, batch = data set) is exactly the gradient of Eq. (6).
  rng = np.random.default_rng(7)
  x = jnp.asarray(rng.normal(size=(40, 3)), jnp.float32)
  y = jnp.asarray(rng.integers(0, 2, size=40) * 2 - 1, jnp.float32)
  theta = jnp.asarray([0.3, -0.2, 0.5])
  losses_of = lambda t: jnp.logaddexp(0.0, -y * (x @ t))  # logistic loss per sample
  wt = absgd_jax.absgd_weights(lam, gamma=1.0)

  def weighted(t):
    losses = losses_of(t)
    w, _ = wt.update(losses, wt.init())
    return jnp.mean(w * losses)

  g_absgd = jax.grad(weighted)(theta)
  g_dro = jax.grad(lambda t: absgd_jax.dro_objective(losses_of(t), lam))(theta)
  np.testing.assert_allclose(g_absgd, g_dro, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("lam", [1e3, 1e5, 1e8, -1e4, -1e8])
def test_dro_objective_keeps_its_digits_at_large_lam(lam):
  # At large |lam| the objective tends to mean(L); a naive logsumexp - log(n) loses it.
  L = np.random.default_rng(10).exponential(1.0, size=5000)
  z = L / lam
  want = lam * np.log(np.mean(np.exp(z)))  # float64 is exact enough here
  got = float(absgd_jax.dro_objective(jnp.asarray(L, jnp.float32), lam))
  assert got == pytest.approx(want, rel=5e-6)
  assert float(
    jax.jit(absgd_jax.dro_objective)(jnp.asarray(L, jnp.float32), jnp.float32(lam))
  ) == pytest.approx(want, rel=5e-6)


# --- inject_hyperparams under jit -------------------------------------------------------------


@pytest.mark.parametrize(
  "factory, kwargs",
  [
    (absgd_jax.absgd, dict(learning_rate=0.05, momentum=0.9, weight_decay=1e-2)),
    (absgd_jax.absgd, dict(learning_rate=0.05, momentum=0.5, momentum_form="paper")),
    (absgd_jax.abadam, dict(learning_rate=3e-3, b1=0.8, weight_decay=1e-2)),
    (absgd_jax.abadam, dict(learning_rate=3e-3, bias_correction=False)),
  ],
)
def test_inject_hyperparams_under_jit_is_the_plain_optimizer(factory, kwargs):
  grads, w0 = _grads(7), np.ones(5)
  injected = optax.inject_hyperparams(factory)(**kwargs)
  got = _run(injected, grads, w0)  # _run jits update: the hyper-parameters are traced there
  np.testing.assert_allclose(
    np.array(got), np.array(_run(factory(**kwargs), grads, w0)), rtol=1e-6, atol=1e-7
  )


def test_injected_learning_rate_can_be_set_and_logged_in_the_state():
  opt = optax.inject_hyperparams(absgd_jax.absgd)(learning_rate=0.1, momentum=0.0)
  params = jnp.ones(3)
  state = opt.init(params)
  assert float(state.hyperparams["learning_rate"]) == pytest.approx(0.1)
  state.hyperparams["learning_rate"] = jnp.float32(0.01)
  u, _ = jax.jit(opt.update)(jnp.ones(3), state, params)
  np.testing.assert_allclose(u, -0.01 * np.ones(3), rtol=1e-6)


def test_callable_weight_decay_mask_under_inject_hyperparams_goes_in_static_args():
  params = {"w": jnp.ones(2), "b": jnp.ones(2)}
  mask = lambda p: {"w": True, "b": False}
  opt = optax.inject_hyperparams(absgd_jax.absgd, static_args=("weight_decay_mask",))(
    learning_rate=0.1, momentum=0.0, weight_decay=0.5, weight_decay_mask=mask
  )
  u, _ = jax.jit(opt.update)(jax.tree.map(jnp.zeros_like, params), opt.init(params), params)
  np.testing.assert_allclose(u["w"], -0.1 * 0.5 * np.ones(2), rtol=1e-6)
  np.testing.assert_array_equal(u["b"], np.zeros(2))
