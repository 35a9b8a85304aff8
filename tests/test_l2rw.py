"""Learning to reweight: its weights are the gradient alignment Ren et al. derive."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

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
  params = model.init(jax.random.key(1), x, train=False)["params"]
  mask = jnp.arange(12) < 10  # two padding rows
  ce = optax.softmax_cross_entropy_with_integer_labels
  w = l2rw_weights(model.apply, params, {}, ce, x, y, mask, xv, yv, 0.1)

  def loss_one(p, xi, yi):
    return ce(model.apply({"params": p}, xi[None], train=False), yi[None])[0]
  per_sample = jax.vmap(jax.grad(loss_one), in_axes=(None, 0, 0))(params, x, y)
  g_val = jax.grad(lambda p: jnp.mean(ce(model.apply({"params": p}, xv, train=False), yv)))(
      params)
  align = sum(jnp.sum(a * b[None].reshape(1, *b.shape), axis=tuple(range(1, a.ndim)))
              for a, b in zip(jax.tree.leaves(per_sample), jax.tree.leaves(g_val)))
  want = np.maximum(np.asarray(align), 0) * np.asarray(mask)
  want = want / want.sum() * 10
  np.testing.assert_allclose(np.asarray(w), want, rtol=1e-4, atol=1e-6)
  assert np.all(np.asarray(w)[10:] == 0)


def test_l2rw_trains_and_down_weights_flipped_labels(tmp_path):
  cfg = make_config("digits-noise", method="l2rw", epochs=3, checkpoint=False,
                    out_dir=str(tmp_path / "run"))
  t = Trainer(cfg, progress=False)
  summary = t.fit()
  assert t.exp.meta is not None and len(t.exp.meta) == 100  # 10 per class, clean labels
  assert np.bincount(t.exp.meta.labels, minlength=10).tolist() == [10] * 10
  final = summary["final"]
  assert final["flipped_mean_weight"] < final["clean_mean_weight"]
  assert final["test_acc"] > 0.5


def test_l2rw_refuses_a_weigher_or_an_axis_name():
  import absgd_jax
  from absgd_jax.train import make_train_step
  with pytest.raises(ValueError, match="replaces the ABSGD weights"):
    make_train_step(create_model("mlp", 3), absgd_jax.absgd(0.1), absgd_jax.absgd_weights(1.0),
                    lambda *a: None, num_classes=3, l2rw_lr=lambda s: 0.1)
