"""Mixed precision (``dtype="bfloat16"``) trains the run float32 trains.

Two 300-step runs of the kit's ABSGD step (the digits MLP on scikit-learn's digits,
long-tailed, lam 1), one computing in float32, one in bfloat16, from the same initial state
on the same batches. Under bfloat16 only the activations are bfloat16; the parameters, the
optimizer state, the BatchNorm statistics, the per-sample losses, the weights and their
moving average stay float32, so the two runs must follow each other to within what bfloat16
activations (8 bits of mantissa) move, and a loss or weights computed in bfloat16 must show.
The dtypes themselves are checked on the MLP's steps and on ResNet-8's (convolutions and
BatchNorm), which is too slow in bfloat16 on the CPU for the 300 steps.

The settings that make the comparison mean something:

- lr 0.05 rather than the digits preset's 0.1: at 0.1 (tried with ResNet-8) the loss falls
  to about 0.003 within 100 steps and the two runs then part ways on noise (log s up to 3.8
  apart), which says nothing about precision. At 0.05 they stay together.
- gamma 0.1 rather than 0.9: the moving average s then carries over about ten steps, so an
  error in how it is kept accumulates instead of being replaced by the next batch's mean.
- The loss is compared as 50-step means, since single steps of the two runs see slightly
  different parameters.

The measured differences and the tolerances (``TOL``) are written beside each check. Each
numeric check was tried against two bugs planted in the train step for the purpose: the
cross-entropy computed on logits cast to the model's dtype, and log s rounded to the model's
dtype after each update. Neither leaves a bfloat16 array where the dtype checks look (the
second casts back), so only the numbers catch them, and they did: the loss means 0.26
apart and one same-state loss 0.044 apart for the first, log s 0.012 apart along the run and
0.0067 from the same state for the second.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from absgd_jax.data import epoch_batches
from absgd_jax.models import create_model
from absgd_jax.train import batch_weigher, experiment_data, make_config, setup
from absgd_jax.train.step import make_train_step

STEPS, WINDOW, EVERY = 300, 50, 60  # steps run, loss means over WINDOW, same-state checks
# Measured with the suite's XLA flags and with XLA's defaults (the larger of the two), and
# with each planted bug: the cross-entropy computed in bfloat16 ("CE"), the moving average
# log s kept in bfloat16 ("log s").
TOL = {
  # 50-step means of the loss: measured 0.012 apart at most; CE: 0.26.
  "loss_window_rel": 0.05,
  # log s, step by step: measured 0.0009 apart at most; log s: 0.012, CE: 0.0036.
  "log_s_abs": 0.004,
  # One step from the float32 run's state, both steps on the same batch: the batch's loss
  # measured 0.0054 apart; CE: 0.43.
  "same_state_loss_rel": 0.03,
  # ... its log s 8e-5 apart; log s: 0.0067.
  "same_state_log_s_abs": 0.001,
  # ... and the parameters' update 0.037 apart: a nearly fitted batch's gradient is small, so
  # bfloat16's rounding is a larger share of it.
  "same_state_update_rel": 0.2,
}


def _kit(model: str = "mlp"):
  cfg = make_config("digits-lt", model=model, stage2_epoch=0, lam=1.0, lr=0.05, gamma=0.1)
  exp = experiment_data.build(cfg)
  n, B = len(exp.train), cfg.optim.batch_size
  spe = -(-n // B)
  variables = setup.init_variables(
    cfg, create_model(cfg.model.name, 10), np.asarray(exp.train.images[:1])
  )
  tx, _ = setup.make_optimizer(cfg, spe, variables["params"])
  loss_fn = setup.make_loss_fn(cfg, exp.train_class_counts, spe)
  batches, epoch = [], 0
  while len(batches) < STEPS:
    for b in epoch_batches(n, B, cfg.seed, epoch):
      idx = b.indices
      batches.append(
        {"images": exp.train.images[idx], "labels": exp.train.labels[idx], "mask": b.mask}
      )
    epoch += 1
  return cfg, spe, variables, tx, loss_fn, setup.make_preprocess(cfg), batches[:STEPS]


def _step(dtype, cfg, spe, tx, loss_fn, preprocess):
  """The kit's train step in ``dtype``, and what its tracing saw of the per-sample losses
  and the weights (their dtypes)."""
  model = create_model(cfg.model.name, 10, dtype=jnp.dtype(dtype))
  seen = {}

  def losses_seen(logits, labels, step):
    losses = loss_fn(logits, labels, step)
    seen["logits"], seen["losses"] = logits.dtype, losses.dtype
    return losses

  kit_weigher = setup.make_batch_weigher(cfg, spe, model.apply, loss_fn)

  def for_batch(batch, variables, step):
    transform = kit_weigher.for_batch(batch, variables, step)

    def update(losses, state, *, mask=None):
      weights, state = transform.update(losses, state, mask=mask)
      seen["weights"], seen["log_s"] = weights.dtype, state.log_s.dtype
      return weights, state

    return transform._replace(update=update)

  weigher = batch_weigher.BatchWeigher(kit_weigher.init, for_batch)
  step = make_train_step(model, tx, losses_seen, weigher, preprocess, num_classes=10)
  return jax.jit(step), step, seen, weigher


def _train(model: str, steps: int) -> dict:
  """``steps`` steps of ``model`` in float32 and in bfloat16 from the same state."""
  cfg, spe, variables, tx, loss_fn, prep, batches = _kit(model)
  batches = batches[:steps]
  out = {"batches": batches}
  for dtype in ("float32", "bfloat16"):
    step, raw, seen, weigher = _step(dtype, cfg, spe, tx, loss_fn, prep)
    state = setup.init_state(cfg, variables, tx, weigher)
    states, metrics = [], []
    for t, batch in enumerate(batches):
      if t % EVERY == 0:
        states.append(state)
      state, m = step(state, batch)
      metrics.append(m)
    metrics = jax.device_get(metrics)
    out[dtype] = {
      "step": step,
      "raw": raw,
      "seen": seen,
      "loss": np.array([m["loss_sum"] / m["count"] for m in metrics]),
      "log_s": np.array([m["log_s"] for m in metrics]),
      "states": states,
      "final": state,
    }
  return out


@pytest.fixture(scope="module")
def runs():
  return _train("mlp", STEPS)


@pytest.fixture(scope="module")
def resnet():
  """Two steps of ResNet-8, for its dtypes: convolutions and BatchNorm."""
  return _train("resnet8", 2)


def _jaxpr_eqns(jaxpr):
  """Every equation of a jaxpr, those of its sub-jaxprs (jit, custom_vjp, scan...) included."""
  for eqn in jaxpr.eqns:
    yield eqn
    for p in eqn.params.values():
      for sub in p if isinstance(p, (list, tuple)) else (p,):
        inner = getattr(sub, "jaxpr", sub)
        if hasattr(inner, "eqns"):
          yield from _jaxpr_eqns(inner)


def _operand_dtypes(run: dict, state, batch, primitive: str) -> list[set]:
  """The operand dtypes of each ``primitive`` equation in the step's jaxpr."""
  jaxpr = jax.make_jaxpr(run["raw"])(state, batch).jaxpr
  eqns = [e for e in _jaxpr_eqns(jaxpr) if e.primitive.name == primitive]
  return [{str(v.aval.dtype) for v in e.invars} for e in eqns]


def test_resnet_convolutions_run_in_bfloat16(resnet):
  state, batch = resnet["float32"]["states"][0], resnet["batches"][0]
  for dtype in ("float32", "bfloat16"):
    convs = _operand_dtypes(resnet[dtype], state, batch, "conv_general_dilated")
    # ResNet-8's 7 convolutions (shortcut A has none): 7 forward, 13 for the gradient.
    assert len(convs) == 20, dtype
    assert all(c == {dtype} for c in convs), (dtype, convs)


def test_mlp_hidden_layers_run_in_bfloat16(runs):
  """The two hidden layers multiply in bfloat16; the head (and its gradient) in float32."""
  state, batch = runs["float32"]["states"][0], runs["batches"][0]
  f32 = _operand_dtypes(runs["float32"], state, batch, "dot_general")
  bf16 = _operand_dtypes(runs["bfloat16"], state, batch, "dot_general")
  assert len(f32) == len(bf16) and all(d == {"float32"} for d in f32)
  # Two hidden layers: 2 products forward, 3 for the gradient (no input gradient of the first).
  assert sum(d == {"bfloat16"} for d in bf16) == 5
  assert sum(d == {"float32"} for d in bf16) == 3  # the head: forward and its two gradients


@pytest.mark.parametrize("model", ["mlp", "resnet8"])
def test_state_losses_and_weights_stay_float32(model, runs, resnet):
  bf16 = (runs if model == "mlp" else resnet)["bfloat16"]
  f32 = np.dtype("float32")
  assert {k: np.dtype(v) for k, v in bf16["seen"].items()} == {
    "logits": f32,  # the head computes in float32
    "losses": f32,
    "weights": f32,
    "log_s": f32,
  }
  final = bf16["final"]
  for part in ("params", "opt_state", "batch_stats"):
    leaves = jax.tree.leaves(getattr(final, part))
    assert {x.dtype for x in leaves if jnp.issubdtype(x.dtype, jnp.floating)} <= {f32}, part
  assert {x.dtype for x in jax.tree.leaves(final.params)} == {f32}
  assert final.w_state.log_s.dtype == f32
  if model == "resnet8":  # BatchNorm's running statistics are among them
    assert {x.dtype for x in jax.tree.leaves(final.batch_stats)} == {f32}


def test_the_loss_and_log_s_follow_the_float32_run(runs):
  f32, bf16 = runs["float32"], runs["bfloat16"]
  assert f32["loss"][-WINDOW:].mean() < 0.2 * f32["loss"][:WINDOW].mean()  # it trained
  means = lambda x: x.reshape(-1, WINDOW).mean(axis=1)
  rel = np.abs(means(bf16["loss"]) - means(f32["loss"])) / means(f32["loss"])
  assert rel.max() < TOL["loss_window_rel"], rel
  gap = np.abs(bf16["log_s"] - f32["log_s"])
  assert gap.max() < TOL["log_s_abs"], gap.max()
  assert np.ptp(f32["log_s"]) > 100 * TOL["log_s_abs"]  # log s moved far more than that


def test_one_step_from_the_same_state_agrees(runs):
  """From the float32 run's state every 60 steps, one float32 and one bfloat16 step on the
  same batch: the same parameters in, so only the precision of the step differs."""
  f32, bf16 = runs["float32"], runs["bfloat16"]
  for i, state in enumerate(f32["states"]):
    batch = runs["batches"][i * EVERY]
    a, ma = f32["step"](state, batch)
    b, mb = bf16["step"](state, batch)
    loss_rel = abs(float(mb["loss_sum"]) - float(ma["loss_sum"])) / float(ma["loss_sum"])
    assert loss_rel < TOL["same_state_loss_rel"], (i, loss_rel)
    assert loss_rel > 0, i  # a bfloat16 step that equals float32's did not compute in bfloat16
    log_s_gap = abs(float(mb["log_s"]) - float(ma["log_s"]))
    assert log_s_gap < TOL["same_state_log_s_abs"], (i, log_s_gap)
    upd = lambda s: ravel_pytree(s.params)[0] - ravel_pytree(state.params)[0]
    update_rel = float(jnp.linalg.norm(upd(b) - upd(a)) / jnp.linalg.norm(upd(a)))
    assert update_rel < TOL["same_state_update_rel"], (i, update_rel)
