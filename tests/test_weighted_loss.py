"""weighted_mean: ABSGD's loss, sum of w_i L_i over the valid samples divided by their count."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, PartitionSpec as P

import absgd_jax
import yardstick
from test_kl_weights import kl_reference


def _np_stream_weights(batches, masks, lam, gamma):
  """Algorithm 1's weights and s in float64, s set from the first batch (s0=None)."""
  s, out = None, []
  for L, m in zip(batches, masks):
    e = np.exp(np.asarray(L, np.float64) / lam)
    g = e[m].mean()
    s = g if s is None else (1 - gamma) * s + gamma * g
    out.append(np.where(m, e / s, 0.0))
  return out


@pytest.mark.parametrize("lam", [0.7, -1.5])
def test_matches_numpy_formula_over_valid_samples(lam):
  rng = np.random.default_rng(0)
  batches = [rng.exponential(1.0, size=10).astype(np.float32) for _ in range(3)]
  masks = [rng.random(10) < 0.7 for _ in range(3)]
  masks[0][:2] = True
  weigher = absgd_jax.absgd_weights(lam, gamma=0.4)
  state = weigher.init()
  want_w = _np_stream_weights(batches, masks, lam, 0.4)
  for L, m, w_ref in zip(batches, masks, want_w):
    loss, (state, w) = absgd_jax.weighted_mean(jnp.asarray(L), state, weigher, where=m)
    np.testing.assert_allclose(w, w_ref, rtol=2e-6)
    # The denominator is the count of real samples, not the padded batch size.
    np.testing.assert_allclose(loss, np.sum(w_ref[m] * L[m]) / m.sum(), rtol=2e-6)


def test_without_where_divides_by_batch_size():
  L = np.array([0.3, 1.2, 2.0, 0.1], np.float32)
  weigher = absgd_jax.absgd_weights(2.0)
  loss, (_, w) = absgd_jax.weighted_mean(jnp.asarray(L), weigher.init(), weigher)
  e = np.exp(L.astype(np.float64) / 2.0)
  np.testing.assert_allclose(loss, np.mean(e / e.mean() * L), rtol=2e-6)


def test_gradient_under_value_and_grad_holds_weights_fixed():
  rng = np.random.default_rng(1)
  x0 = rng.normal(size=6).astype(np.float32)
  c = rng.normal(size=6).astype(np.float32)
  m = np.array([True, True, False, True, True, False])
  weigher = absgd_jax.absgd_weights(0.5)

  def f(x, state):
    return absgd_jax.weighted_mean((x - c) ** 2, state, weigher, where=m)

  (loss, (state, w)), g = jax.jit(jax.value_and_grad(f, has_aux=True))(x0, weigher.init())
  L = (x0.astype(np.float64) - c) ** 2
  e = np.exp(L / 0.5)
  w_ref = np.where(m, e / e[m].mean(), 0.0)
  # d/dx of sum(w L)/n with w held fixed (stop_gradient): w_i * 2 (x_i - c_i) / n.
  np.testing.assert_allclose(g, w_ref * 2 * (x0 - c) / m.sum(), rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(loss, np.sum(w_ref * L) / m.sum(), rtol=1e-5)
  assert int(state.count) == 1


def test_mask_is_an_alias_of_where():
  L = jnp.array([1.0, 2.0, 3.0])
  m = jnp.array([True, False, True])
  weigher = absgd_jax.absgd_weights(1.0)
  a = absgd_jax.weighted_mean(L, weigher.init(), weigher, where=m)
  b = absgd_jax.weighted_mean(L, weigher.init(), weigher, mask=m)
  jax.tree.map(np.testing.assert_array_equal, a, b)
  with pytest.raises(ValueError, match="both where= and mask="):
    absgd_jax.weighted_mean(L, weigher.init(), weigher, where=m, mask=m)


def test_float_mask_is_refused_with_the_fix():
  weigher = absgd_jax.absgd_weights(1.0)
  with pytest.raises(ValueError, match=r"must be boolean.*where=mask > 0"):
    absgd_jax.weighted_mean(jnp.ones(3), weigher.init(), weigher, where=jnp.array([1.0, 0.5, 0.0]))


def test_nan_in_padding_is_hidden_nan_in_a_real_sample_is_not():
  weigher = absgd_jax.absgd_weights(1.0)
  m = jnp.array([True, True, False])
  loss, _ = absgd_jax.weighted_mean(
    jnp.array([1.0, 2.0, jnp.nan]), weigher.init(), weigher, where=m
  )
  e = np.exp([1.0, 2.0])
  np.testing.assert_allclose(loss, np.sum(e / e.mean() * [1.0, 2.0]) / 2, rtol=2e-6)
  loss, _ = absgd_jax.weighted_mean(
    jnp.array([1.0, jnp.nan, 0.5]), weigher.init(), weigher, where=m
  )
  assert np.isnan(float(loss))  # a diverged real sample stays visible to apply_if_finite


def test_bfloat16_losses_give_float32_loss_and_gradient():
  weigher = absgd_jax.absgd_weights(1.0)
  x = jnp.array([0.5, 1.0, 1.5], jnp.bfloat16)

  def f(x):
    return absgd_jax.weighted_mean(x * x, weigher.init(), weigher)

  (loss, (_, w)), g = jax.value_and_grad(f, has_aux=True)(x)
  assert loss.dtype == jnp.float32 and w.dtype == jnp.float32 and g.dtype == jnp.bfloat16
  L = np.asarray(x, np.float64) ** 2
  e = np.exp(L)
  np.testing.assert_allclose(loss, np.mean(e / e.mean() * L), rtol=1e-2)


@pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 (simulated) devices")
def test_under_shard_map_divides_by_the_global_valid_count():
  n_dev = 8
  rng = np.random.default_rng(3)
  L = rng.exponential(1.0, size=4 * n_dev).astype(np.float32)
  m = rng.random(4 * n_dev) < 0.6
  m[4:8] = False  # one shard holds only padding
  x = jnp.asarray(np.sqrt(L))
  mesh = Mesh(np.array(jax.devices()[:n_dev]), ("b",))
  sharded = absgd_jax.absgd_weights(0.8, axis_name="b")
  single = absgd_jax.absgd_weights(0.8)

  def shard_loss(x, m, state):
    (loss, (st, w)), g = jax.value_and_grad(
      lambda x: absgd_jax.weighted_mean(x * x, state, sharded, where=m), has_aux=True
    )(x)
    return jax.lax.psum(loss, "b"), g, w, st

  fn = jax.jit(
    jax.shard_map(
      shard_loss, mesh=mesh, in_specs=(P("b"), P("b"), P()), out_specs=(P(), P("b"), P("b"), P())
    )
  )
  loss, g, w, state = fn(x, jnp.asarray(m), sharded.init())
  (want, (want_state, want_w)), want_g = jax.value_and_grad(
    lambda x: absgd_jax.weighted_mean(x * x, single.init(), single, where=m), has_aux=True
  )(x)
  e = np.exp(L.astype(np.float64) / 0.8)
  np.testing.assert_allclose(loss, np.sum((e / e[m].mean() * L)[m]) / m.sum(), rtol=1e-5)
  # Each against float64, the 8 shards no farther than float32 puts one device.
  w_ref = np.where(m, e / e[m].mean(), 0.0)
  g_ref = w_ref * 2 * np.asarray(x, np.float64) / m.sum()  # the weights held fixed
  for what, got, one, ref in (
    ("loss", loss, want, np.sum((w_ref * L)[m]) / m.sum()),
    ("gradient", g, want_g, g_ref),
    ("weights", w, want_w, w_ref),
    ("log s", state.log_s, want_state.log_s, np.log(e[m].mean())),
  ):
    yardstick.assert_float32_paths_agree(got, one, ref, what)


@pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 (simulated) devices")
def test_kl_weigher_under_shard_map_divides_by_the_global_valid_count():
  # kl_absgd_weights must carry its axis_name too, or each shard divides by its own count.
  n_dev = 8
  rng = np.random.default_rng(4)
  L = rng.exponential(1.0, size=4 * n_dev).astype(np.float32)
  m = rng.random(4 * n_dev) < 0.6
  m[:4] = False  # one shard holds only padding
  mesh = Mesh(np.array(jax.devices()[:n_dev]), ("b",))
  sharded = absgd_jax.kl_absgd_weights(0.1, axis_name="b")
  single = absgd_jax.kl_absgd_weights(0.1)

  def shard_loss(L, m, state):
    loss, (_, w) = absgd_jax.weighted_mean(L, state, sharded, where=m)
    return jax.lax.psum(loss, "b"), w

  fn = jax.jit(
    jax.shard_map(shard_loss, mesh=mesh, in_specs=(P("b"), P("b"), P()), out_specs=(P(), P("b")))
  )
  loss, w = fn(jnp.asarray(L), jnp.asarray(m), sharded.init())
  want, (_, want_w) = absgd_jax.weighted_mean(jnp.asarray(L), single.init(), single, where=m)
  np.testing.assert_allclose(
    loss, np.sum((np.asarray(want_w, np.float64) * L)[m]) / m.sum(), rtol=1e-5
  )
  # Each against float64 (the KL weigher's first batch: lam from the batch's std, then the
  # guard), the 8 shards no farther than float32 puts one device.
  w_ref = np.zeros(L.shape)
  w_ref[m] = kl_reference([L[m]], 0.1, 0.9)[0][0]
  yardstick.assert_float32_paths_agree(w, want_w, w_ref, "weights")
  yardstick.assert_float32_paths_agree(loss, want, np.sum((w_ref * L)[m]) / m.sum(), "loss")


@pytest.mark.parametrize(
  "make",
  [lambda: absgd_jax.absgd_weights(0.7, 0.5), lambda: absgd_jax.kl_absgd_weights(0.1, 0.5)],
  ids=["absgd", "kl"],
)
def test_an_all_padding_batch_gives_loss_zero_gradient_zero_and_keeps_the_state(make):
  # A batch that is padding only (the tail of an epoch split over devices): nothing to learn,
  # and nothing may turn NaN on the way, not even an intermediate (debug_nans checks each op:
  # dividing by the count n = 0 instead of max(n, 1) is 0 / 0).
  weigher = make()
  x = jnp.asarray(np.random.default_rng(7).exponential(1.0, size=8).astype(np.float32))
  _, (state, _) = absgd_jax.weighted_mean(x, weigher.init(), weigher)  # s and lam set

  def f(y, state):
    return absgd_jax.weighted_mean(y * y, state, weigher, where=jnp.zeros(8, bool))

  with jax.debug_nans(True):
    (loss, (new_state, w)), g = jax.value_and_grad(f, has_aux=True)(x, state)
  assert float(loss) == 0.0
  assert np.all(np.asarray(g) == 0.0) and np.all(np.asarray(w) == 0.0)
  assert int(new_state.count) == int(state.count) + 1
  for name in state._fields:
    if name != "count":
      np.testing.assert_array_equal(getattr(new_state, name), getattr(state, name), err_msg=name)


def _absgd_and_kl():
  return absgd_jax.absgd_weights(1.0), absgd_jax.kl_absgd_weights(0.1)


def test_swapped_state_and_weigher_are_named():
  L = jnp.array([0.5, 1.0, 2.0])
  for weigher in _absgd_and_kl():
    state = weigher.init()
    with pytest.raises(
      TypeError,
      match=r"weighted_mean\(losses, state, weigher, where=None\): "
      r"the second argument must be the weigher's state.*got a weigher.*"
      r"Did you swap",
    ):
      absgd_jax.weighted_mean(L, weigher, state)
    with pytest.raises(
      TypeError,
      match=r"first argument must be the per-sample losses.*"
      r"(state|weigher)",
    ):
      absgd_jax.weighted_mean(state, L, weigher)
    with pytest.raises(
      TypeError,
      match=r"third argument must be the weigher.*got an? "
      r"\w+WeightsState.*Did you swap",
    ):
      absgd_jax.weighted_mean(L, state, state)
    # And straight into the weigher's own update.
    with pytest.raises(TypeError, match="state argument is a weigher.*Did you swap"):
      weigher.update(L, weigher)


def test_a_state_of_the_other_weigher_is_named():
  absgd_w, kl_w = _absgd_and_kl()
  L = jnp.array([0.5, 1.0, 2.0])
  with pytest.raises(
    TypeError,
    match=r"got an AbsgdWeightsState.*state of another weigher.*"
    r"KlAbsgdWeightsState",
  ):
    absgd_jax.weighted_mean(L, absgd_w.init(), kl_w)
  with pytest.raises(TypeError, match=r"got a KlAbsgdWeightsState.*AbsgdWeightsState"):
    absgd_jax.weighted_mean(L, kl_w.init(), absgd_w)


def test_a_dict_state_says_to_restore_it_with_from_dict():
  # What orbax gives back for a state restored without a target.
  L = jnp.array([0.5, 1.0, 2.0])
  for weigher, cls in zip(
    _absgd_and_kl(), (absgd_jax.AbsgdWeightsState, absgd_jax.KlAbsgdWeightsState)
  ):
    raw = {k: np.asarray(v) for k, v in weigher.init()._asdict().items()}
    fix = rf"restore it with absgd_jax\.{cls.__name__}\.from_dict\(\.\.\.\)"
    with pytest.raises(TypeError, match=fix):
      absgd_jax.weighted_mean(L, raw, weigher)
    with pytest.raises(TypeError, match=fix):
      weigher.update(L, raw)
    # Following the advice works, and gives what the state itself gives.
    got = absgd_jax.weighted_mean(L, cls.from_dict(raw), weigher)
    jax.tree.map(
      np.testing.assert_array_equal, got, absgd_jax.weighted_mean(L, weigher.init(), weigher)
    )


def test_a_custom_weigher_may_keep_any_state():
  # Only the mix-ups above are refused: a weigher of one's own may keep a dict, say.
  def update(losses, state, *, mask=None):
    del mask
    return jnp.full_like(losses, state["w"]), {"w": state["w"] + 1.0}

  custom = absgd_jax.Weigher(lambda: {"w": jnp.float32(2.0)}, update)
  loss, (state, w) = absgd_jax.weighted_mean(jnp.array([1.0, 3.0]), custom.init(), custom)
  assert float(loss) == 4.0 and float(state["w"]) == 3.0 and w.tolist() == [2.0, 2.0]
