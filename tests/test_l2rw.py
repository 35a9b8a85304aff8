"""Learning to reweight: its weights are the gradient alignment Ren et al. derive."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import absgd_jax
from absgd_jax.models import create_model
from absgd_jax.train import Trainer, make_config
from absgd_jax.train.l2rw import l2rw_weights


def test_weights_are_the_clipped_normalised_gradient_alignment():
  # At eps = 0, d L_val(theta - lr * sum eps_i grad L_i) / d eps_i = -lr <grad L_val, grad L_i>.
  # Check against per-sample gradients computed directly (an MLP: no batch coupling).
  model = create_model("mlp", 4, hidden=(8,))
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(12, 5)), jnp.float32)
  y = jnp.asarray(rng.integers(0, 4, size=12), jnp.int32)
  xv = jnp.asarray(rng.normal(size=(6, 5)), jnp.float32)
  yv = jnp.asarray(rng.integers(0, 4, size=6), jnp.int32)
  params = jax.jit(lambda k: model.init(k, x, train=False))(jax.random.key(1))["params"]
  mask = jnp.arange(12) < 10  # two padding rows
  ce = optax.softmax_cross_entropy_with_integer_labels
  # Both sides under jit: eagerly, each of their hundreds of operations compiles on its own.
  w = jax.jit(lambda p: l2rw_weights(model.apply, p, {}, ce, x, y, mask, xv, yv, 0.1))(params)

  def loss_one(p, xi, yi):
    return ce(model.apply({"params": p}, xi[None], train=False), yi[None])[0]

  @jax.jit
  def alignment(params):
    per_sample = jax.vmap(jax.grad(loss_one), in_axes=(None, 0, 0))(params, x, y)
    g_val = jax.grad(lambda p: jnp.mean(ce(model.apply({"params": p}, xv, train=False), yv)))(
      params
    )
    return sum(
      jnp.sum(a * b[None].reshape(1, *b.shape), axis=tuple(range(1, a.ndim)))
      for a, b in zip(jax.tree.leaves(per_sample), jax.tree.leaves(g_val))
    )

  align = alignment(params)
  want = np.maximum(np.asarray(align), 0) * np.asarray(mask)
  want = want / want.sum() * 10
  np.testing.assert_allclose(np.asarray(w), want, rtol=1e-4, atol=1e-6)
  assert np.all(np.asarray(w)[10:] == 0)


def test_l2rw_trains_and_down_weights_flipped_labels(tmp_path):
  cfg = make_config(
    "digits-noise", method="l2rw", epochs=3, checkpoint=False, out_dir=str(tmp_path / "run")
  )
  t = Trainer(cfg, progress=False, devices=jax.devices()[:1])
  [summary] = t.fit()
  assert t.exp.meta is not None and len(t.exp.meta) == 100  # 10 per class, clean labels
  assert np.bincount(t.exp.meta.labels, minlength=10).tolist() == [10] * 10
  final = summary["final"]
  assert final["flipped_mean_weight"] < final["clean_mean_weight"]
  assert final["test_acc"] > 0.5


def test_l2rw_refuses_an_axis_name():
  # L2RW is a weighting strategy of its own (it cannot be combined with an ABSGD weigher by
  # construction); it has no mapped-axis reductions, so a mapped step refuses it.
  from absgd_jax.train import batch_weigher, make_train_step

  model = create_model("mlp", 3)
  l2rw = batch_weigher.l2rw(model.apply, lambda *a: None, lambda s: 0.1)
  with pytest.raises(ValueError, match="learning to reweight runs under jax.jit only"):
    make_train_step(
      model, absgd_jax.absgd(0.1), lambda *a: None, l2rw, num_classes=3, axis_name="data"
    )
