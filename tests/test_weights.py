"""absgd_weights against an independent float64 implementation of Algorithm 1."""

import math

import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import absgd_jax
from reference import absgd_weights_decimal, absgd_weights_reference

INF = float("inf")


def _stream(seed, steps=8, batch=16, scale=2.0):
  rng = np.random.default_rng(seed)
  return [rng.exponential(scale, size=batch).astype(np.float32) for _ in range(steps)]


def _run(wt, stream, jit=True):
  update = jax.jit(wt.update) if jit else wt.update
  state = wt.init()
  out = []
  for losses in stream:
    w, state = update(jnp.asarray(losses), state)
    out.append((np.asarray(w), state))
  return out


@pytest.mark.parametrize("lam", [2.0, 0.5, -1.0, -0.3, INF, -INF])
@pytest.mark.parametrize("gamma", [0.1, 0.5, 1.0])
@pytest.mark.parametrize("s0", [None, 0.0, 1.0, 3.7])
def test_matches_algorithm_1(lam, gamma, s0):
  stream = _stream(seed=hash((lam, gamma, s0)) % 2**32)
  got = _run(absgd_jax.absgd_weights(lam, gamma, s0=s0), stream)
  want = absgd_weights_reference(stream, lam, gamma, s0=s0)
  for (w, state), (w_ref, s_ref) in zip(got, want):
    np.testing.assert_allclose(w, w_ref, rtol=2e-5, atol=1e-30)
    assert w.dtype == np.float32
    if math.isinf(lam):
      assert np.all(w == 1.0)  # exactly, not approximately
    else:
      np.testing.assert_allclose(float(state.log_s), math.log(s_ref), rtol=1e-5, atol=1e-6)


def test_first_batch_weights_average_one_by_default():
  stream = _stream(seed=0, steps=1)
  ((w, _),) = _run(absgd_jax.absgd_weights(0.7, 0.3), stream)
  np.testing.assert_allclose(w.mean(), 1.0, rtol=1e-6)


def test_eager_and_jit_agree():
  stream = _stream(seed=1)
  wt = absgd_jax.absgd_weights(1.5, 0.5)
  for (a, _), (b, _) in zip(_run(wt, stream, jit=False), _run(wt, stream, jit=True)):
    np.testing.assert_allclose(a, b, rtol=1e-5)  # XLA may fuse exp() differently


@pytest.mark.parametrize("lam", [0.1, -0.1, 1e-3])
def test_extreme_losses_stay_finite_and_right(lam):
  # L / lam reaches 1e4 (lam=0.1, L up to 1e3) and 1e6 (lam=1e-3): exp() overflows float32
  # and float64 alike; the reference works in 60-digit decimal arithmetic.
  rng = np.random.default_rng(7)
  stream = [rng.uniform(0, 1e3, size=12).astype(np.float32) for _ in range(4)]
  got = _run(absgd_jax.absgd_weights(lam, 0.5), stream)
  want = absgd_weights_decimal(stream, lam, 0.5)
  for (w, state), (w_ref, log_s_ref) in zip(got, want):
    assert np.all(np.isfinite(w)) and np.isfinite(float(state.log_s))
    # z = L / lam has float32 rounding error ~ |z| * 6e-8, which exp() turns into a relative
    # error of the weights; compare where that is meaningful and in log space everywhere.
    np.testing.assert_allclose(float(state.log_s), log_s_ref, rtol=1e-6)
    big = w_ref > 1e-30
    tol = 10 * 6e-8 * (1e3 / abs(lam))
    np.testing.assert_allclose(np.log(w[big]), np.log(w_ref[big]), atol=max(tol, 1e-5))


@hypothesis.settings(deadline=None, max_examples=40)
@hypothesis.given(
  losses=st.lists(st.floats(0.0, 1e6, width=32), min_size=1, max_size=20),
  lam=st.one_of(st.floats(1e-3, 1e3), st.floats(-1e3, -1e-3)),
  gamma=st.floats(0.01, 1.0),
)
def test_property_finite_bounded(losses, lam, gamma):
  wt = absgd_jax.absgd_weights(lam, gamma, s0=1.0)
  state = wt.init()
  L = jnp.asarray(losses, jnp.float32)
  for _ in range(2):
    w, state = wt.update(L, state)
    w = np.asarray(w)
    assert np.all(np.isfinite(w)) and np.all(w >= 0)
    # s_{t+1} >= gamma * exp(L_i/lam) / B, so no weight can exceed B / gamma (up to the
    # float32 rounding of z = L/lam, which exp() turns into a relative error ~ |z| * 1e-7).
    z_max = max(abs(l / lam) for l in losses)
    assert w.max() <= len(losses) / gamma * (1 + 1e-5 + 2e-7 * z_max)
    assert np.isfinite(float(state.log_s))


@hypothesis.settings(deadline=None, max_examples=30)
@hypothesis.given(
  losses=st.lists(st.floats(0.0, 50.0, width=32), min_size=2, max_size=20),
  lam=st.one_of(st.floats(0.05, 100.0), st.floats(-100.0, -0.05)),
)
def test_property_gamma_one_is_batch_softmax(losses, lam):
  # With gamma = 1, w = B * softmax(L / lam): the weights average exactly 1.
  w, _ = absgd_jax.absgd_weights(lam, 1.0).update(
    jnp.asarray(losses, jnp.float32), absgd_jax.absgd_weights(lam, 1.0).init()
  )
  z = np.asarray(losses, np.float64) / lam
  want = len(losses) * np.exp(z - z.max()) / np.exp(z - z.max()).sum()
  np.testing.assert_allclose(np.asarray(w), want, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16, jnp.float32])
def test_low_precision_losses_give_float32_weights(dtype):
  L = jnp.asarray(_stream(3, steps=1)[0]).astype(dtype)
  wt = absgd_jax.absgd_weights(0.5, 0.9)
  w, state = wt.update(L, wt.init())
  w32, _ = wt.update(L.astype(jnp.float32), wt.init())
  assert w.dtype == jnp.float32 and state.log_s.dtype == jnp.float32
  np.testing.assert_array_equal(np.asarray(w), np.asarray(w32))


def test_weights_carry_no_gradient():
  wt = absgd_jax.absgd_weights(0.5, 0.9)
  L = jnp.asarray(_stream(4, steps=1)[0])
  state = wt.init()

  def objective(L):
    w, _ = wt.update(L, state)
    return jnp.mean(w * L)

  w, _ = wt.update(L, state)
  np.testing.assert_allclose(jax.grad(objective)(L), w / L.shape[0], rtol=1e-6)


@pytest.mark.parametrize(
  "kwargs, match",
  [
    (dict(lam=0.0), "lam must be a nonzero"),
    (dict(lam=float("nan")), "lam must be a nonzero"),
    (dict(lam=1.0, gamma=0.0), r"gamma must lie in \(0, 1\]"),
    (dict(lam=1.0, gamma=1.5), r"gamma must lie in \(0, 1\]"),
    (dict(lam=1.0, gamma=-0.1), r"gamma must lie in \(0, 1\]"),
    (dict(lam=1.0, s0=-1.0), "s0 must be None or a finite number >= 0"),
    (dict(lam=1.0, s0=float("nan")), "s0 must be"),
    (dict(lam=lambda count: 0.0), "lam schedule's value at step 0"),
  ],
)
def test_bad_construction_arguments(kwargs, match):
  with pytest.raises(ValueError, match=match):
    absgd_jax.absgd_weights(**kwargs)


@pytest.mark.parametrize(
  "losses, match",
  [
    (jnp.ones((4, 2)), "1-D vector"),
    (jnp.ones(()), "1-D vector"),
    (jnp.ones((0,)), "empty batch"),
    (jnp.ones((4,), jnp.int32), "floating point"),
  ],
)
def test_bad_losses_raise_at_trace_time(losses, match):
  wt = absgd_jax.absgd_weights(1.0)
  with pytest.raises(ValueError, match=match):
    jax.jit(wt.update)(losses, wt.init())


def test_bad_mask_shape():
  wt = absgd_jax.absgd_weights(1.0)
  with pytest.raises(ValueError, match="mask must have the shape"):
    wt.update(jnp.ones(4), wt.init(), mask=jnp.ones(3, bool))


def test_nonfinite_samples_get_zero_weight_and_are_left_out_of_s():
  stream = _stream(5, steps=3)
  bad = [x.copy() for x in stream]
  bad[1][[2, 5, 9]] = [np.nan, np.inf, -np.inf]
  wt = absgd_jax.absgd_weights(0.8, 0.5)
  got = _run(wt, bad)
  clean_stream = [x[np.isfinite(x)] for x in bad]
  want = absgd_weights_reference(clean_stream, 0.8, 0.5)
  for (w, state), (w_ref, s_ref), x in zip(got, want, bad):
    assert np.all(w[~np.isfinite(x)] == 0.0)
    np.testing.assert_allclose(w[np.isfinite(x)], w_ref, rtol=2e-5)
    np.testing.assert_allclose(float(state.log_s), math.log(s_ref), rtol=1e-5)


def test_all_nonfinite_batch_leaves_state_unchanged():
  wt = absgd_jax.absgd_weights(0.8, 0.5)
  update = jax.jit(wt.update)
  w, s1 = update(jnp.asarray(_stream(6, steps=1)[0]), wt.init())
  w, s2 = update(jnp.full(16, jnp.nan), s1)
  assert np.all(np.asarray(w) == 0.0)
  assert float(s2.log_s) == float(s1.log_s) and float(s2.lam) == float(s1.lam)
  assert int(s2.count) == int(s1.count) + 1
  # A NaN-only first batch must not count as "s has been set".
  w, s3 = update(jnp.full(16, jnp.nan), wt.init())
  assert not bool(s3.has_s) and np.isfinite(float(s3.log_s))


def test_padding_mask_equals_the_unpadded_batch():
  stream = _stream(8, steps=3, batch=10)
  wt = absgd_jax.absgd_weights(1.2, 0.3)
  state_a, state_b = wt.init(), wt.init()
  update = jax.jit(wt.update)
  for x in stream:
    padded = np.concatenate([x, np.full(6, 123.0, np.float32)])
    mask = np.arange(16) < 10
    wa, state_a = update(jnp.asarray(x), state_a)
    wb, state_b = update(jnp.asarray(padded), state_b, mask=jnp.asarray(mask))
    np.testing.assert_allclose(np.asarray(wb)[:10], np.asarray(wa), rtol=1e-6)
    assert np.all(np.asarray(wb)[10:] == 0)


def test_with_optax_apply_if_finite():
  # A NaN loss: the weighted loss and its gradient are NaN, apply_if_finite skips the step,
  # and the weight state stays clean, so training continues from the last good point.
  wt = absgd_jax.absgd_weights(1.0, 0.5)
  opt = optax.apply_if_finite(absgd_jax.absgd(0.1), max_consecutive_errors=3)
  params = jnp.array([1.0, -2.0])
  x = jnp.array([[1.0, 2.0], [0.5, -1.0], [2.0, 0.0]])

  @jax.jit
  def step(params, opt_state, w_state, poison):
    def loss_fn(p):
      losses = (x @ p) ** 2 * poison
      w, new_w_state = wt.update(losses, w_state)
      return jnp.mean(w * losses), new_w_state

    (loss, new_w_state), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = opt.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, new_w_state, loss

  opt_state, w_state = opt.init(params), wt.init()
  params, opt_state, w_state, _ = step(params, opt_state, w_state, jnp.ones(3))
  before = (np.asarray(params), float(w_state.log_s))
  p2, opt_state, w_state2, loss = step(params, opt_state, w_state, jnp.array([1.0, jnp.nan, 1.0]))
  assert np.isnan(float(loss))
  np.testing.assert_array_equal(np.asarray(p2), before[0])
  assert np.isfinite(float(w_state2.log_s))
  # The finite samples of that batch still moved s; then training goes on normally.
  p3, _, w_state3, loss3 = step(p2, opt_state, w_state2, jnp.ones(3))
  assert np.isfinite(float(loss3)) and np.all(np.isfinite(np.asarray(p3)))
  assert not np.array_equal(np.asarray(p3), before[0])


def test_lam_schedule_restarts_s_and_never_recompiles():
  boundary = 3
  sched = lambda count: jnp.where(count < boundary, INF, 0.7)
  stream = _stream(9, steps=7)
  wt = absgd_jax.absgd_weights(sched, gamma=0.2)
  update = jax.jit(wt.update)
  state = wt.init()
  got = []
  for x in stream:
    w, state = update(jnp.asarray(x), state)
    got.append(np.asarray(w))
  assert update._cache_size() == 1
  want = absgd_weights_reference(
    stream, None, 0.2, lam_schedule=lambda t: INF if t < boundary else 0.7
  )
  for w, (w_ref, _) in zip(got, want):
    np.testing.assert_allclose(w, w_ref, rtol=2e-5)
  assert np.all(got[0] == 1.0)
  # At the switch s is re-estimated from that batch alone, so its weights average 1.
  np.testing.assert_allclose(got[boundary].mean(), 1.0, rtol=1e-6)


def test_vmap_over_independent_streams():
  streams = np.stack([np.stack(_stream(s, steps=4)) for s in range(3)])  # [3, steps, B]
  wt = absgd_jax.absgd_weights(0.9, 0.4)
  states = jax.vmap(lambda _: wt.init())(jnp.arange(3))
  vupdate = jax.jit(jax.vmap(wt.update))
  for t in range(4):
    w, states = vupdate(jnp.asarray(streams[:, t]), states)
    for k in range(3):
      want = absgd_weights_reference(list(streams[k, : t + 1]), 0.9, 0.4)[-1][0]
      np.testing.assert_allclose(np.asarray(w[k]), want, rtol=2e-5)


@pytest.mark.parametrize("lam", [1e-3, -1e-3])
def test_float32_overflowing_ratio_still_gets_the_largest_weight(lam):
  # L / lam = +-1e39 overflows float32; the sample is clipped to float32's max, not dropped.
  losses = np.array([1e36, 1.0, 2.0], np.float32) * np.sign(lam)
  wt = absgd_jax.absgd_weights(lam, 0.5)
  w, state = wt.update(jnp.asarray(losses), wt.init())
  # The formula on the clipped ratios, in float64: z = clip(L / lam), w = e^z / mean(e^z).
  fmax = float(np.finfo(np.float32).max)
  z = np.clip(losses.astype(np.float64) / lam, -fmax, fmax)
  e = np.exp(z - z.max())
  np.testing.assert_allclose(np.asarray(w), e / e.mean(), rtol=1e-6, atol=0)
  np.testing.assert_array_equal(np.asarray(w), [3.0, 0.0, 0.0])  # all of the batch's weight
  np.testing.assert_allclose(float(state.log_s), z.max() + np.log(e.mean()), rtol=1e-6)


def test_a_batch_without_a_usable_sample_makes_no_nan_anywhere():
  # +-inf and masked-out finite losses: no valid sample, so the batch max is -inf and the
  # max-shift must fall back to 0 (shifting by -inf gives inf - inf = NaN inside, even where
  # the outputs hide it; debug_nans checks every op of the eager update, which is also why
  # no loss here is NaN: a NaN input would trip it at once).
  wt = absgd_jax.absgd_weights(0.8, 0.5)
  stream = _stream(10, steps=2, batch=6)
  bad = jnp.array([np.inf, -np.inf, np.inf, 1.0, 2.0, 3.0], jnp.float32)
  mask = jnp.array([True, True, True, False, False, False])
  with jax.debug_nans(True):
    w0, s0 = wt.update(bad, wt.init(), mask=mask)  # before s has a value
    w1, s1 = wt.update(jnp.asarray(stream[0]), s0)
    w2, s2 = wt.update(bad, s1, mask=mask)  # after
    w3, s3 = wt.update(jnp.asarray(stream[1]), s2)
  assert np.all(np.asarray(w0) == 0) and np.all(np.asarray(w2) == 0)
  assert not bool(s0.has_s) and int(s2.count) == 3
  assert float(s2.log_s) == float(s1.log_s) and float(s2.lam) == float(s1.lam)
  assert bool(s2.has_s)
  # The unusable batches left no trace: the stream goes on as Algorithm 1 without them.
  want = absgd_weights_reference(stream, 0.8, 0.5)
  for w, s, (w_ref, s_ref) in ((w1, s1, want[0]), (w3, s3, want[1])):
    np.testing.assert_allclose(np.asarray(w), w_ref, rtol=2e-5)
    np.testing.assert_allclose(float(s.log_s), math.log(s_ref), rtol=1e-5, atol=1e-6)


def test_lam_that_underflows_float32_is_rejected():
  with pytest.raises(ValueError, match="representable in float32"):
    absgd_jax.absgd_weights(1e-46)


def test_schedule_reaching_zero_leaves_state_clean():
  # Under jit the value cannot be seen (nothing inside jit can raise): the documented
  # behaviour is all-zero weights, log_s kept, count advanced.
  wt = absgd_jax.absgd_weights(lambda c: jnp.where(c < 1, 1.0, 0.0), 0.5)
  update = jax.jit(wt.update)
  w1, s1 = update(jnp.array([1.0, 2.0]), wt.init())
  w2, s2 = update(jnp.array([1.0, 2.0]), s1)
  assert np.all(np.asarray(w2) == 0) and float(s2.log_s) == float(s1.log_s)
  assert float(s2.lam) == 1.0 and int(s2.count) == 2
  assert float(absgd_jax.weight_stats(w2, s2)["ess"]) == 0.0  # how a user spots it


def test_schedule_reaching_zero_raises_where_it_can_be_seen():
  sched = lambda c: jnp.where(c < 3, 1.0, jnp.where(c < 5, 0.0, 2.0))
  # At construction, given the run's length: the first bad step is named.
  with pytest.raises(ValueError, match=r"lam schedule is 0.0 at step 3 \(of 10\)"):
    absgd_jax.absgd_weights(sched, num_steps=10)
  with pytest.raises(ValueError, match=r"lam schedule is nan at step 1"):
    absgd_jax.absgd_weights(lambda c: jnp.where(c < 1, 1.0, jnp.nan), num_steps=4)
  absgd_jax.absgd_weights(sched, num_steps=3)  # steps 0..2 are all fine
  # A schedule written with Python control flow is checked too (step by step).
  with pytest.raises(ValueError, match=r"lam schedule is 0.0 at step 2"):
    absgd_jax.absgd_weights(lambda c: 1.0 if int(c) < 2 else 0.0, num_steps=5)
  # In an eager update, at the step it happens.
  wt = absgd_jax.absgd_weights(sched)
  state = wt.init()
  for _ in range(3):
    _, state = wt.update(jnp.array([1.0, 2.0]), state)
  with pytest.raises(ValueError, match="lam is 0.0 at update 3"):
    wt.update(jnp.array([1.0, 2.0]), state)
  # At step 0, without num_steps.
  with pytest.raises(ValueError, match="value at step 0"):
    absgd_jax.absgd_weights(lambda c: 0.0 * c)


# ----------------------------------------------------------------------------- the API's edges


def test_lam_as_a_traced_array_under_vmap_matches_each_float_lam():
  stream = [jnp.asarray(x) for x in _stream(4, steps=4)]
  lams = jnp.array([0.5, 2.0, -1.0, INF])

  def run(lam):
    wt = absgd_jax.absgd_weights(lam, 0.3)  # lam is a tracer here
    state, ws = wt.init(), []
    for x in stream:
      w, state = wt.update(x, state)
      ws.append(w)
    return jnp.stack(ws), state.log_s

  ws, log_s = jax.jit(jax.vmap(run))(lams)
  for i, lam in enumerate([0.5, 2.0, -1.0, INF]):
    want = absgd_weights_reference([np.asarray(x) for x in stream], lam, 0.3)
    np.testing.assert_allclose(ws[i], np.stack([w for w, _ in want]), rtol=2e-5)


def test_lam_as_a_jit_argument_changes_without_recompiling():
  traces = []

  @jax.jit
  def step(lam, losses, state):
    traces.append(1)
    return absgd_jax.absgd_weights(lam, 0.5).update(losses, state)

  L = jnp.array([0.2, 1.0, 3.0])
  state = absgd_jax.absgd_weights(1.0, 0.5).init()
  for lam in (1.0, 0.25, -2.0):
    w, _ = step(jnp.float32(lam), L, state)
    e = np.exp(np.asarray(L, np.float64) / lam)
    np.testing.assert_allclose(w, e / e.mean(), rtol=1e-5)
  assert len(traces) == 1


def test_concrete_array_lam_is_checked_and_must_be_scalar():
  with pytest.raises(ValueError, match="nonzero"):
    absgd_jax.absgd_weights(jnp.float32(0.0))
  with pytest.raises(ValueError, match="nonzero"):
    absgd_jax.absgd_weights(np.float32("nan"))
  with pytest.raises(ValueError, match=r"scalar.*shape \(2,\).*vmap"):
    absgd_jax.absgd_weights(jnp.array([1.0, 2.0]))
  w, _ = absgd_jax.absgd_weights(jnp.float32(1.0)).update(
    jnp.array([0.0, 0.0]), absgd_jax.absgd_weights(1.0).init()
  )
  np.testing.assert_array_equal(w, [1.0, 1.0])


def test_float_mask_is_refused():
  wt = absgd_jax.absgd_weights(1.0)
  with pytest.raises(ValueError, match=r"mask must be boolean.*float32.*mask > 0"):
    wt.update(jnp.ones(3), wt.init(), mask=jnp.array([1.0, 0.5, 0.0]))
  with pytest.raises(ValueError, match="mask must be boolean"):
    wt.update(jnp.ones(3), wt.init(), mask=jnp.array([1, 0, 1]))


def test_chain_with_an_optax_optimizer_says_what_to_do():
  # The weigher is not a GradientTransformation; the error says so.
  tx = optax.chain(absgd_jax.absgd_weights(5.0), optax.adam(1e-3))
  with pytest.raises(TypeError, match=r"not an optax GradientTransformation.*weighted_mean"):
    tx.init({"w": jnp.zeros(3)})
  with pytest.raises(TypeError, match="weighted_mean"):
    optax.MultiSteps(absgd_jax.absgd_weights(5.0), 2).init({"w": jnp.zeros(3)})


def test_state_from_a_targetless_orbax_restore(tmp_path):
  # Without a target orbax returns a dict; from_dict makes it a state again.
  ocp = pytest.importorskip("orbax.checkpoint")
  wt = absgd_jax.absgd_weights(0.7, 0.5)
  state = wt.init()
  for x in _stream(5, steps=3):
    _, state = wt.update(jnp.asarray(x), state)
  with ocp.StandardCheckpointer() as ckptr:
    ckptr.save(tmp_path / "w", {"w_state": state, "step": 3})
  with ocp.StandardCheckpointer() as ckptr:
    raw = ckptr.restore(tmp_path / "w")
  assert isinstance(raw["w_state"], dict)  # what a user gets without a target
  back = absgd_jax.AbsgdWeightsState.from_dict(raw["w_state"])
  assert isinstance(back, absgd_jax.AbsgdWeightsState) and int(back.count) == 3
  jax.tree.map(np.testing.assert_array_equal, back, state)
  assert jax.tree.map(lambda a: a.dtype, back) == jax.tree.map(lambda a: a.dtype, state)
  # The restored state carries on exactly as the original.
  x = jnp.asarray(_stream(6, steps=1)[0])
  jax.tree.map(np.testing.assert_array_equal, wt.update(x, back), wt.update(x, state))
  # With a target (the other documented recipe) orbax returns the NamedTuple itself.
  with ocp.StandardCheckpointer() as ckptr:
    typed = ckptr.restore(tmp_path / "w", {"w_state": state, "step": 0})
  assert isinstance(typed["w_state"], absgd_jax.AbsgdWeightsState)
  with pytest.raises(ValueError, match=r"missing keys \['has_s'\]"):
    absgd_jax.AbsgdWeightsState.from_dict({k: v for k, v in raw["w_state"].items() if k != "has_s"})


def test_an_erm_stage_holds_log_s_at_zero_even_with_s0():
  # lam = inf weights every sample 1, and s = E exp(0) = 1: log s is 0 during that stage,
  # whatever s0 said, so a logged log s reads as the ERM it is.
  boundary = 2
  sched = lambda count: jnp.where(count < boundary, INF, 1.5)
  wt = absgd_jax.absgd_weights(sched, gamma=0.5, s0=3.0)
  state = wt.init()
  assert float(state.log_s) == pytest.approx(math.log(3.0))
  stream = _stream(31, steps=4)
  for t, x in enumerate(stream):
    w, state = wt.update(jnp.asarray(x), state)
    if t < boundary:
      assert np.all(np.asarray(w) == 1.0) and float(state.log_s) == 0.0
  want = absgd_weights_reference(
    stream, None, 0.5, s0=3.0, lam_schedule=lambda t: INF if t < boundary else 1.5
  )
  np.testing.assert_allclose(np.asarray(w), want[-1][0], rtol=2e-5)
