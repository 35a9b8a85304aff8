"""On 8 simulated CPU devices, every device gets the weights of one device with the whole batch.

Both paths are float32 and sum in other orders; each is compared with Algorithm 1 in float64,
and the 8-device path may be no farther from it than float32 puts the one-device path
(tests/yardstick.py), on whatever CPU the suite runs.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

import absgd_jax
import yardstick
from reference import absgd_weights_reference


N = 8
pytestmark = pytest.mark.skipif(jax.device_count() < N, reason="needs 8 (simulated) devices")


def _stream(seed=0, steps=5, batch=64):
  rng = np.random.default_rng(seed)
  return [rng.exponential(2.0, size=batch).astype(np.float32) for _ in range(steps)]


def _replicate(tree):
  return jax.tree.map(lambda x: jnp.broadcast_to(x, (N,) + x.shape), tree)


def _single_device(wt, stream):
  update = jax.jit(wt.update)
  state, out = wt.init(), []
  for x in stream:
    w, state = update(jnp.asarray(x), state)
    out.append((np.asarray(w), float(state.log_s)))
  return out


def _check(t, w, log_s, single, ref):
  """Step t's weights and log s (of every device) against the one-device path and float64."""
  (w_one, log_s_one), (w_ref, s_ref) = single, ref
  yardstick.assert_float32_paths_agree(w, w_one, w_ref, f"weights at step {t}")
  log_s = np.asarray(log_s).reshape(-1)
  yardstick.assert_float32_paths_agree(
    log_s, np.full_like(log_s, log_s_one), np.full(log_s.shape, np.log(s_ref)), f"log s at step {t}"
  )


@pytest.mark.parametrize("lam", [0.8, -0.5])
def test_pmap(lam):
  stream = _stream()
  want = _single_device(absgd_jax.absgd_weights(lam, 0.3), stream)
  ref = absgd_weights_reference(stream, lam, 0.3)
  wt = absgd_jax.absgd_weights(lam, 0.3, axis_name="batch")
  update = jax.pmap(wt.update, axis_name="batch")
  state = _replicate(wt.init())
  for t, x in enumerate(stream):
    w, state = update(jnp.asarray(x).reshape(N, -1), state)
    _check(t, np.asarray(w).reshape(-1), state.log_s, want[t], ref[t])  # log s: all devices


def test_pmap_with_nonfinite_on_one_device():
  stream = _stream(seed=2, steps=2)
  stream[1][:8] = np.nan  # device 0's whole shard
  clean = [x[np.isfinite(x)] for x in stream]
  want = _single_device(absgd_jax.absgd_weights(1.0, 0.5), clean)
  ref = absgd_weights_reference(clean, 1.0, 0.5)
  wt = absgd_jax.absgd_weights(1.0, 0.5, axis_name="i")
  update = jax.pmap(wt.update, axis_name="i")
  state = _replicate(wt.init())
  for t, x in enumerate(stream):
    w, state = update(jnp.asarray(x).reshape(N, -1), state)
    w = np.asarray(w).reshape(-1)
    _check(t, w[np.isfinite(x)], state.log_s, want[t], ref[t])
    assert np.all(w[~np.isfinite(x)] == 0)


def test_shard_map():
  stream = _stream(seed=1)
  want = _single_device(absgd_jax.absgd_weights(0.6, 0.9), stream)
  ref = absgd_weights_reference(stream, 0.6, 0.9)
  mesh = Mesh(np.array(jax.devices()[:N]), ("data",))
  wt = absgd_jax.absgd_weights(0.6, 0.9, axis_name="data")
  # check_vma stays on: the state's out_spec P() is checked to be device-invariant.
  update = jax.jit(
    jax.shard_map(wt.update, mesh=mesh, in_specs=(P("data"), P()), out_specs=(P("data"), P()))
  )
  state = wt.init()
  for t, x in enumerate(stream):
    w, state = update(jnp.asarray(x), state)
    _check(t, np.asarray(w), state.log_s, want[t], ref[t])


def test_sharded_jit_needs_no_axis_name():
  stream = _stream(seed=3)
  want = _single_device(absgd_jax.absgd_weights(1.3, 0.5), stream)
  ref = absgd_weights_reference(stream, 1.3, 0.5)
  mesh = Mesh(np.array(jax.devices()[:N]), ("data",))
  batch_sharding = NamedSharding(mesh, P("data"))
  wt = absgd_jax.absgd_weights(1.3, 0.5)
  update = jax.jit(wt.update)
  state = jax.device_put(wt.init(), NamedSharding(mesh, P()))
  for t, x in enumerate(stream):
    xs = jax.device_put(jnp.asarray(x), batch_sharding)
    w, state = update(xs, state)
    assert len(w.sharding.device_set) == N  # it really ran on all eight devices
    _check(t, np.asarray(w), state.log_s, want[t], ref[t])


@pytest.mark.parametrize("mode", ["shard_map", "shard_map unchecked", "pmap"])
def test_global_value_and_grad_is_the_one_device_gradient_in_every_mode(mode):
  # shard_map's default check_vma=True sums the gradient of replicated params itself, pmap and
  # check_vma=False leave each device's term: one function is right in all three.
  rng = np.random.default_rng(5)
  x = jnp.asarray(rng.normal(size=(N * 4, 3)), jnp.float32)
  w0 = jnp.asarray(rng.normal(size=3), jnp.float32)

  def share(w, x, weigher):
    losses = jnp.log1p(jnp.exp(-(x @ w)))
    return absgd_jax.weighted_mean(losses, weigher.init(), weigher)[0]

  one = absgd_jax.absgd_weights(lam=0.5)
  want_loss, want_grad = jax.value_and_grad(share)(w0, x, one)
  sharded = absgd_jax.absgd_weights(lam=0.5, axis_name="i")
  step = absgd_jax.global_value_and_grad(lambda w, x: share(w, x, sharded), "i")
  if mode == "pmap":
    loss, grad = jax.pmap(step, axis_name="i", in_axes=(None, 0))(w0, x.reshape(N, 4, 3))
    loss, grad = loss[0], grad[0]
  else:
    mesh = Mesh(np.array(jax.devices()[:N]), ("i",))
    loss, grad = jax.jit(
      jax.shard_map(
        step,
        mesh=mesh,
        in_specs=(P(), P("i")),
        out_specs=(P(), P()),
        check_vma=mode == "shard_map",
      )  # fmt: skip
    )(w0, x)
  np.testing.assert_allclose(np.asarray(loss), np.asarray(want_loss), rtol=1e-5)
  np.testing.assert_allclose(np.asarray(grad), np.asarray(want_grad), rtol=1e-5, atol=1e-7)
