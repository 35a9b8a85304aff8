"""The contract every public optimizer and the weigher keep, in the manner of optax's shared
transform tests: jit, inject_hyperparams, chain, schedules, vmap over a hyper-parameter,
low-precision inputs, no recompilation, and 8 (simulated) devices.

Each expectation comes from another code path: the eager run, the plain (un-injected)
optimizer, a manual composition, a per-value loop, a float32 run, or one device.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

import absgd_jax
import yardstick
from reference import absgd_weights_reference

OPTIMIZERS = {
  "absgd": (absgd_jax.absgd, dict(learning_rate=0.1, momentum=0.9, weight_decay=1e-2)),
  "absgd-paper": (
    absgd_jax.absgd,
    dict(learning_rate=0.1, momentum=0.9, weight_decay=1e-2, momentum_form="paper"),
  ),
  "absgd-nesterov": (absgd_jax.absgd, dict(learning_rate=0.1, momentum=0.5, nesterov=True)),
  "abadam": (absgd_jax.abadam, dict(learning_rate=1e-2, weight_decay=1e-2)),
  "abadam-eq9": (absgd_jax.abadam, dict(learning_rate=1e-2, b1=0.8, bias_correction=False)),
}
opt_cases = pytest.mark.parametrize("name", sorted(OPTIMIZERS))
STEPS = 4


def _params(dtype=jnp.float32):
  rng = np.random.default_rng(0)
  return {
    "w": jnp.asarray(rng.normal(size=(8, 2)), dtype),
    "b": jnp.asarray(rng.normal(size=(2,)), dtype),
  }


def _grads(t, params):
  # A gradient that depends on the params (as a real one does) plus a step's noise.
  rng = np.random.default_rng(100 + t)
  return jax.tree.map(lambda p: 0.3 * p + jnp.asarray(rng.normal(size=p.shape), p.dtype), params)


def _run(opt, params=None, *, jit=True, steps=STEPS):
  params = _params() if params is None else params
  state = opt.init(params)
  update = jax.jit(opt.update) if jit else opt.update
  for t in range(steps):
    u, state = update(_grads(t, params), state, params)
    params = optax.apply_updates(params, u)
  return params


def _close(a, b, rtol=1e-5, atol=1e-6):
  jax.tree.map(
    lambda x, y: np.testing.assert_allclose(
      np.asarray(x, np.float32), np.asarray(y, np.float32), rtol=rtol, atol=atol
    ),
    a,
    b,
  )


# ----------------------------------------------------------------------------- optimizers


@opt_cases
def test_jit_matches_eager(name):
  factory, kw = OPTIMIZERS[name]
  _close(_run(factory(**kw), jit=True), _run(factory(**kw), jit=False))


@opt_cases
def test_inject_hyperparams_under_jit(name):
  factory, kw = OPTIMIZERS[name]
  injected = optax.inject_hyperparams(factory)(**kw)
  state = injected.init(_params())
  numeric = {k for k, v in kw.items() if isinstance(v, float)}
  assert numeric <= set(state.hyperparams)  # every number is in the state, to log or change
  # Injected numbers are float32 arrays, the plain ones Python floats folded at trace time
  # (1 - b1 in float64): the two round differently in the last bits.
  _close(_run(injected), _run(factory(**kw)), rtol=1e-4, atol=1e-5)


@opt_cases
def test_chain_with_other_transforms(name):
  factory, kw = OPTIMIZERS[name]
  clip = optax.clip_by_global_norm(0.5)
  chained = optax.chain(clip, factory(**kw))
  # The same by hand: clip each gradient, then the optimizer.
  params, opt = _params(), factory(**kw)
  state = opt.init(params)
  for t in range(STEPS):
    g, _ = clip.update(_grads(t, params), clip.init(params))
    u, state = opt.update(g, state, params)
    params = optax.apply_updates(params, u)
  _close(_run(chained), params)
  # apply_if_finite around it: a NaN gradient is skipped, the next finite one applies.
  guarded = optax.apply_if_finite(factory(**kw), max_consecutive_errors=3)
  p0 = _params()
  st = guarded.init(p0)
  bad = jax.tree.map(lambda p: jnp.full_like(p, jnp.nan), p0)
  u, st = jax.jit(guarded.update)(bad, st, p0)
  _close(optax.apply_updates(p0, u), p0, rtol=0, atol=0)
  assert int(st.notfinite_count) == 1


@opt_cases
def test_learning_rate_schedule_equals_setting_the_rate_each_step(name):
  factory, kw = OPTIMIZERS[name]
  base = kw["learning_rate"]
  sched = optax.exponential_decay(base, transition_steps=1, decay_rate=0.5)
  scheduled = _run(factory(**{**kw, "learning_rate": sched}))
  # Independent path: inject the rate and set it by hand before each update.
  opt = optax.inject_hyperparams(factory)(**kw)
  params = _params()
  state = opt.init(params)
  for t in range(STEPS):
    state.hyperparams["learning_rate"] = jnp.float32(base * 0.5**t)
    u, state = jax.jit(opt.update)(_grads(t, params), state, params)
    params = optax.apply_updates(params, u)
  _close(scheduled, params)


@opt_cases
def test_vmap_over_the_learning_rate(name):
  factory, kw = OPTIMIZERS[name]
  rates = [kw["learning_rate"] * f for f in (0.5, 1.0, 2.0)]
  swept = jax.jit(jax.vmap(lambda lr: _run(factory(**{**kw, "learning_rate": lr}), jit=False)))(
    jnp.asarray(rates)
  )
  for i, lr in enumerate(rates):
    _close(jax.tree.map(lambda x, i=i: x[i], swept), _run(factory(**{**kw, "learning_rate": lr})))


@opt_cases
@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_low_precision_params_keep_their_dtype(name, dtype):
  factory, kw = OPTIMIZERS[name]
  opt = factory(**kw)
  params = _params(dtype)
  state = opt.init(params)
  u, new_state = jax.jit(opt.update)(_grads(0, params), state, params)
  assert jax.tree.map(lambda x: x.dtype, u) == jax.tree.map(lambda x: x.dtype, params)
  assert jax.tree.map(lambda x: x.dtype, new_state) == jax.tree.map(lambda x: x.dtype, state)
  # And the run follows float32's within the format's precision.
  as_f32 = jax.tree.map(lambda x: x.astype(jnp.float32), _params(dtype))
  _close(_run(factory(**kw), _params(dtype)), _run(factory(**kw), as_f32), rtol=3e-2, atol=3e-2)


@opt_cases
def test_no_recompile_on_a_second_call(name):
  factory, kw = OPTIMIZERS[name]
  for opt in (factory(**kw), optax.inject_hyperparams(factory)(**kw)):
    traces = []

    @jax.jit
    def step(params, state, t):
      traces.append(1)
      g = jax.tree.map(lambda p: p * t, params)
      u, state = opt.update(g, state, params)
      return optax.apply_updates(params, u), state

    params = _params()
    state = opt.init(params)
    params, state = step(params, state, 1.0)
    if hasattr(state, "hyperparams"):
      state.hyperparams["learning_rate"] = jnp.float32(0.5 * kw["learning_rate"])
    params, state = step(params, state, 2.0)
    assert len(traces) == 1


@opt_cases
@pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 (simulated) devices")
def test_eight_devices_match_one(name):
  factory, kw = OPTIMIZERS[name]
  mesh = Mesh(np.array(jax.devices()[:8]), ("d",))
  shard = {"w": NamedSharding(mesh, P("d")), "b": NamedSharding(mesh, P())}
  opt = factory(**kw)
  params = jax.device_put(_params(), shard)
  state = opt.init(params)
  update = jax.jit(opt.update)
  for t in range(STEPS):
    u, state = update(jax.device_put(_grads(t, _params()), shard), state, params)
    params = optax.apply_updates(params, u)
  assert params["w"].sharding.is_equivalent_to(shard["w"], 2)
  # _run's gradients depend on the params; recompute that path on one device the same way.
  ref = _params()
  ref_state = opt.init(ref)
  for t in range(STEPS):
    u, ref_state = opt.update(_grads(t, _params()), ref_state, ref)
    ref = optax.apply_updates(ref, u)
  _close(params, ref)


# ----------------------------------------------------------------------------- the weigher


def _loss_stream(seed=0, steps=5, batch=16):
  rng = np.random.default_rng(seed)
  return [rng.exponential(2.0, size=batch).astype(np.float32) for _ in range(steps)]


def _weigh(wt, stream, *, jit=True, dtype=jnp.float32):
  update = jax.jit(wt.update) if jit else wt.update
  state, out = wt.init(), []
  for x in stream:
    w, state = update(jnp.asarray(x, dtype), state)
    out.append(np.asarray(w))
  return np.stack(out), state


def test_weigher_jit_matches_eager_and_the_reference():
  stream = _loss_stream()
  got, _ = _weigh(absgd_jax.absgd_weights(0.7, 0.4), stream)
  eager, _ = _weigh(absgd_jax.absgd_weights(0.7, 0.4), stream, jit=False)
  np.testing.assert_allclose(got, eager, rtol=1e-6)
  want = np.stack([w for w, _ in absgd_weights_reference(stream, 0.7, 0.4)])
  np.testing.assert_allclose(got, want, rtol=2e-5)


def test_weigher_lam_injected_through_the_step_like_inject_hyperparams():
  # inject_hyperparams wraps GradientTransformations (init takes params), which the weigher
  # is not; the same thing is done by carrying lam beside the state and building the weigher
  # inside the jitted step. A change of lam is a new value, not a new program.
  traces = []

  @jax.jit
  def step(hyper, state, losses):
    traces.append(1)
    return absgd_jax.absgd_weights(hyper["lam"], 0.5).update(losses, state)

  stream = _loss_stream(1, steps=4)
  lams = [2.0, 2.0, -1.0, -1.0]
  state = absgd_jax.absgd_weights(2.0, 0.5).init()
  got = []
  for lam, x in zip(lams, stream):
    w, state = step({"lam": jnp.float32(lam)}, state, jnp.asarray(x))
    got.append(np.asarray(w))
  want = absgd_weights_reference(stream, None, 0.5, lam_schedule=lambda t: lams[t])
  np.testing.assert_allclose(np.stack(got), np.stack([w for w, _ in want]), rtol=2e-5)
  assert len(traces) == 1


def test_weigher_in_optax_chain_raises_a_clear_error():
  with pytest.raises(TypeError, match="not an optax GradientTransformation"):
    optax.chain(absgd_jax.absgd_weights(1.0), absgd_jax.absgd(0.1)).init(_params())


def test_weigher_with_an_optax_schedule_for_lam():
  sched = optax.join_schedules(
    [optax.constant_schedule(jnp.inf), optax.constant_schedule(-2.0)], [2]
  )  # plain ERM for two steps, then lam = -2
  assert float(sched(1)) == np.inf and float(sched(2)) == -2.0
  stream = _loss_stream(2)
  got, state = _weigh(absgd_jax.absgd_weights(sched, 0.3), stream)
  want = absgd_weights_reference(stream, None, 0.3, lam_schedule=lambda t: float(sched(t)))
  np.testing.assert_allclose(got, np.stack([w for w, _ in want]), rtol=2e-5)
  assert float(state.lam) == -2.0


def test_weigher_vmap_over_lam():
  stream = _loss_stream(3)
  lams = [0.5, 3.0, -1.0]
  got = jax.vmap(lambda lam: jnp.stack(_weigh_traced(absgd_jax.absgd_weights(lam, 0.5), stream)))(
    jnp.asarray(lams)
  )
  for i, lam in enumerate(lams):
    want = absgd_weights_reference(stream, lam, 0.5)
    np.testing.assert_allclose(got[i], np.stack([w for w, _ in want]), rtol=2e-5)


def _weigh_traced(wt, stream):
  state, out = wt.init(), []
  for x in stream:
    w, state = wt.update(jnp.asarray(x), state)
    out.append(w)
  return out


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_weigher_low_precision_losses(dtype):
  stream = [np.asarray(jnp.asarray(x, dtype)) for x in _loss_stream(4)]  # representable values
  got, state = _weigh(absgd_jax.absgd_weights(1.5, 0.5), stream, dtype=dtype)
  assert got.dtype == np.float32 and state.log_s.dtype == jnp.float32
  want = np.stack(
    [w for w, _ in absgd_weights_reference([x.astype(np.float64) for x in stream], 1.5, 0.5)]
  )
  np.testing.assert_allclose(got, want, rtol=2e-5)
  # weighted_mean's gradient flows back in the losses' dtype.
  wt = absgd_jax.absgd_weights(1.5, 0.5)
  x = jnp.asarray(stream[0], dtype)
  (loss, _), g = jax.value_and_grad(
    lambda x: absgd_jax.weighted_mean(x, wt.init(), wt), has_aux=True
  )(x)
  assert loss.dtype == jnp.float32 and g.dtype == dtype
  np.testing.assert_allclose(np.asarray(g, np.float32), got[0] / len(x), rtol=1e-2)


def test_weigher_no_recompile_across_calls_and_a_lam_switch():
  traces = []
  wt = absgd_jax.absgd_weights(lambda c: jnp.where(c < 2, 1.0, 3.0), 0.5)

  @jax.jit
  def update(losses, state):
    traces.append(1)
    return wt.update(losses, state)

  state = wt.init()
  for x in _loss_stream(5, steps=4):
    _, state = update(jnp.asarray(x), state)
  assert len(traces) == 1 and float(state.lam) == 3.0


@pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 (simulated) devices")
def test_train_step_on_eight_devices_matches_one():
  # The whole step: per-sample losses, weighted_mean (weigher with axis_name), psum of the
  # gradients, the optimizer. Eight shards of a padded batch give one device's parameters.
  mesh = Mesh(np.array(jax.devices()[:8]), ("b",))
  rng = np.random.default_rng(6)
  x = jnp.asarray(rng.normal(size=(64, 8)), jnp.float32)
  y = jnp.asarray(rng.integers(0, 2, 64), jnp.int32)
  mask = jnp.asarray(rng.random(64) < 0.8)
  opt = absgd_jax.absgd(0.1, momentum=0.9)

  def make_step(weigher, axis_name):
    def step(params, opt_state, w_state, x, y, mask):
      def loss_fn(p):
        losses = optax.softmax_cross_entropy_with_integer_labels(x @ p["w"] + p["b"], y)
        return absgd_jax.weighted_mean(losses, w_state, weigher, where=mask)

      (loss, (w_state, _)), g = jax.value_and_grad(loss_fn, has_aux=True)(params)
      if axis_name is not None:
        g, loss = jax.lax.psum((g, loss), axis_name)
      u, opt_state = opt.update(g, opt_state, params)
      return optax.apply_updates(params, u), opt_state, w_state, loss

    return step

  single = absgd_jax.absgd_weights(0.8, 0.5)
  sharded = absgd_jax.absgd_weights(0.8, 0.5, axis_name="b")
  one = jax.jit(make_step(single, None))
  eight = jax.jit(
    jax.shard_map(
      make_step(sharded, "b"),
      mesh=mesh,
      in_specs=(P(), P(), P(), P("b"), P("b"), P("b")),
      out_specs=(P(), P(), P(), P()),
      check_vma=False,
    )
  )
  # The yardstick: one device on the batch's rows in reverse order, whose sums round
  # otherwise as the eight shards' do (tests/yardstick.py).
  rev = jnp.arange(64)[::-1]
  a = b = c = (_params(), opt.init(_params()), single.init())
  for t in range(3):
    *a, loss_a = one(*a, x, y, mask)
    *b, loss_b = eight(*b, x, y, mask)
    *c, loss_c = one(*c, x[rev], y[rev], mask[rev])
    yardstick.assert_within(
      loss_b, loss_a, yardstick.reordered(loss_a, loss_c), f"the loss at step {t}"
    )
  yardstick.assert_within(b, a, yardstick.reordered(a, c), "params and states after 3 steps")
