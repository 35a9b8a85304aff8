"""On 8 simulated CPU devices, every device gets the weights of one device with the whole batch."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

import absgd_jax


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


@pytest.mark.parametrize("lam", [0.8, -0.5])
def test_pmap(lam):
  stream = _stream()
  want = _single_device(absgd_jax.absgd_weights(lam, 0.3), stream)
  wt = absgd_jax.absgd_weights(lam, 0.3, axis_name="batch")
  update = jax.pmap(wt.update, axis_name="batch")
  state = _replicate(wt.init())
  for x, (w_ref, log_s_ref) in zip(stream, want):
    w, state = update(jnp.asarray(x).reshape(N, -1), state)
    np.testing.assert_allclose(np.asarray(w).reshape(-1), w_ref, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(state.log_s), log_s_ref, rtol=1e-6)  # all devices


def test_pmap_with_nonfinite_on_one_device():
  stream = _stream(seed=2, steps=2)
  stream[1][:8] = np.nan  # device 0's whole shard
  clean = [x[np.isfinite(x)] for x in stream]
  want = _single_device(absgd_jax.absgd_weights(1.0, 0.5), clean)
  wt = absgd_jax.absgd_weights(1.0, 0.5, axis_name="i")
  update = jax.pmap(wt.update, axis_name="i")
  state = _replicate(wt.init())
  for x, (w_ref, log_s_ref) in zip(stream, want):
    w, state = update(jnp.asarray(x).reshape(N, -1), state)
    w = np.asarray(w).reshape(-1)
    np.testing.assert_allclose(w[np.isfinite(x)], w_ref, rtol=1e-5)
    assert np.all(w[~np.isfinite(x)] == 0)
    np.testing.assert_allclose(np.asarray(state.log_s), log_s_ref, rtol=1e-6)


def test_shard_map():
  stream = _stream(seed=1)
  want = _single_device(absgd_jax.absgd_weights(0.6, 0.9), stream)
  mesh = Mesh(np.array(jax.devices()[:N]), ("data",))
  wt = absgd_jax.absgd_weights(0.6, 0.9, axis_name="data")
  # check_vma stays on: the state's out_spec P() is checked to be device-invariant.
  update = jax.jit(jax.shard_map(wt.update, mesh=mesh, in_specs=(P("data"), P()),
                                 out_specs=(P("data"), P())))
  state = wt.init()
  for x, (w_ref, log_s_ref) in zip(stream, want):
    w, state = update(jnp.asarray(x), state)
    np.testing.assert_allclose(np.asarray(w), w_ref, rtol=1e-5)
    np.testing.assert_allclose(float(state.log_s), log_s_ref, rtol=1e-6)


def test_sharded_jit_needs_no_axis_name():
  stream = _stream(seed=3)
  want = _single_device(absgd_jax.absgd_weights(1.3, 0.5), stream)
  mesh = Mesh(np.array(jax.devices()[:N]), ("data",))
  batch_sharding = NamedSharding(mesh, P("data"))
  wt = absgd_jax.absgd_weights(1.3, 0.5)
  update = jax.jit(wt.update)
  state = jax.device_put(wt.init(), NamedSharding(mesh, P()))
  for x, (w_ref, log_s_ref) in zip(stream, want):
    xs = jax.device_put(jnp.asarray(x), batch_sharding)
    w, state = update(xs, state)
    assert len(w.sharding.device_set) == N  # it really ran on all eight devices
    np.testing.assert_allclose(np.asarray(w), w_ref, rtol=1e-5)
    np.testing.assert_allclose(float(state.log_s), log_s_ref, rtol=1e-6)
