"""Our train step against the PyTorch reference's, step by step, from the same weights.

Both start from one set of weights (the reference's Kaiming init, converted by
:mod:`convert`), see the same batches (the reference's crops, flips and normalisation, made
once in NumPy) and follow the same learning rates (a per-step warm-up, then a 10x drop half
way, so that the momentum form matters). Ours is
:func:`absgd_jax.train.step.make_train_step` with ``absgd(momentum_form="pytorch")`` and no
ABSGD weights (lam = inf, i.e. momentum SGD); the reference is ``torch.optim.SGD``.

Float32 arithmetic in two frameworks cannot agree bit for bit (other summation orders), and
training is chaotic: a difference in the last bit grows. So the yardsticks are PyTorch against
itself: the same run from weights perturbed by a relative 1e-7 (float32's epsilon is 1.2e-7),
and the same run in float64. The second catches what the first can miss: a gradient jumps at a
ReLU's kink, and one pre-activation within rounding of 0 that lands on the other side moves
its BatchNorm channel's gradient by ~1e-3 (seen at step 1 on the test's synthetic data). Our
divergence from the reference should stay within a small multiple of the larger yardstick.

    python -m experiments.parity.trajectory --depth 8 --image-size 16 --batch 32 --steps 20
"""

from __future__ import annotations

import argparse
import copy
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import torch
import torch.nn.functional as F

import absgd_jax
from absgd_jax import losses as L
from absgd_jax.models import create_model
from absgd_jax.train.step import TrainState, make_train_step
from experiments.parity import convert
from experiments.parity import torch_reference as ref


def flax_template(depth: int, image_size: int, num_classes: int = 10):
  """(model, variables) of our CIFAR ResNet-``depth``."""
  model = create_model(f"resnet{depth}", num_classes)
  x = jnp.zeros((1, image_size, image_size, 3), jnp.float32)
  # Under jit: eagerly, each of the initialisers' operations compiles on its own.
  return model, jax.jit(lambda k: model.init(k, x, train=False))(jax.random.key(0))


def make_batches(cfg0: ref.RefConfig, steps: int, batch: int, data=None):
  """``steps`` reference batches (float32 NCHW inputs, int64 labels) of the LT subset."""
  train, _ = data if data is not None else ref.load_cifar10(image_size=cfg0.image_size)
  idx = ref.lt_subset(train, cfg0)
  x = torch.from_numpy(np.ascontiguousarray(train.images[idx]))
  y = torch.from_numpy(train.labels[idx].astype(np.int64))
  gen = torch.Generator().manual_seed(cfg0.seed)
  cfg = dataclasses.replace(cfg0, batch_size=batch)
  out = []
  while len(out) < steps:
    for xb, yb in ref.epoch_batches(cfg, x, y, gen):
      if len(yb) == batch:
        out.append((xb, yb))
      if len(out) == steps:
        break
  return out


def learning_rates(steps: int, lr: float = 0.1, warmup: int = 5) -> np.ndarray:
  """A per-step warm-up over ``warmup`` steps, then ``lr``, divided by 10 half way."""
  t = np.arange(steps)
  lrs = np.where(t < warmup, lr * (t + 1) / warmup, lr)
  return np.where(t >= steps // 2, lrs / 10, lrs).astype(np.float32)


def torch_run(model, batches, lrs, momentum=0.9, weight_decay=2e-4):
  """Per-step losses of ``torch.optim.SGD`` on ``batches``; ``model`` is trained in place."""
  opt = torch.optim.SGD(
    model.parameters(), float(lrs[0]), momentum=momentum, weight_decay=weight_decay
  )
  model.train()
  out = []
  for (x, y), lr in zip(batches, lrs):
    for g in opt.param_groups:
      g["lr"] = float(lr)
    loss = F.cross_entropy(model(x), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    out.append(loss.item())
  return np.array(out)


def ours_init(model, variables, lrs, momentum=0.9, weight_decay=2e-4):
  """(jitted train step, initial TrainState) of our kit for the learning rates ``lrs``."""
  table = jnp.asarray(lrs)
  tx = absgd_jax.absgd(
    lambda count: table[jnp.minimum(count, len(lrs) - 1)],
    momentum=momentum,
    weight_decay=weight_decay,
    momentum_form="pytorch",
  )
  # By keyword, and without augmentation arguments: the images arrive ready, and the default
  # preprocessing only casts them to float32.
  step = make_train_step(
    model,
    tx,
    weigher=None,
    loss_fn=lambda logits, labels, _: L.cross_entropy(logits, labels),
    num_classes=model.num_classes,
  )
  state = TrainState(
    step=jnp.zeros([], jnp.int32),
    params=variables["params"],
    batch_stats=variables["batch_stats"],
    opt_state=tx.init(variables["params"]),
    w_state=absgd_jax.absgd_weights(1.0).init(),
    rng=jax.random.key_data(jax.random.key(0)),
  )
  return jax.jit(step), state


def to_jax_batch(x: torch.Tensor, y: torch.Tensor) -> dict:
  return {
    "images": jnp.asarray(x.permute(0, 2, 3, 1).numpy()),
    "labels": jnp.asarray(y.numpy().astype(np.int32)),
    "mask": jnp.ones(len(y), bool),
  }


def ours_run(model, variables, batches, lrs):
  """Per-step losses of our step, and the final state."""
  step, state = ours_init(model, variables, lrs)
  out = []
  for x, y in batches:
    state, m = step(state, to_jax_batch(x, y))
    out.append(float(m["loss_sum"] / m["count"]))
  return np.array(out), state


def param_vector(state_dict) -> np.ndarray:
  """All trainable tensors (no BatchNorm statistics) in one float64 vector, by torch name."""
  keys = sorted(
    k for k in state_dict if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))
  )
  return np.concatenate([np.asarray(state_dict[k], np.float64).ravel() for k in keys])


def perturbed(model, rel: float = 1e-7, seed: int = 1):
  """A copy of ``model`` with every parameter scaled by (1 + rel * N(0, 1))."""
  other = copy.deepcopy(model)
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for p in other.parameters():
      p.mul_(1 + rel * torch.randn(p.shape, generator=gen))
  return other


def compare(
  depth: int = 8, image_size: int = 16, batch: int = 32, steps: int = 20, seed: int = 0, data=None
) -> dict[str, np.ndarray]:
  """Runs reference, perturbed reference and ours; returns per-step losses and the final
  relative parameter distances (ours vs reference, perturbed vs reference)."""
  torch.set_num_threads(1)
  cfg = ref.RefConfig(
    depth=depth, image_size=image_size, seed=seed, crop_padding=4 if image_size in (0, 32) else 2
  )
  batches = make_batches(cfg, steps, batch, data)
  lrs = learning_rates(steps)
  torch_model = ref.make_model(cfg)
  start = copy.deepcopy(torch_model)
  pert = perturbed(torch_model)
  model, template = flax_template(depth, batches[0][0].shape[-1])
  variables = convert.torch_to_flax(start.state_dict(), template)

  wide = copy.deepcopy(start).double()

  loss_t = torch_run(torch_model, batches, lrs)
  loss_p = torch_run(pert, batches, lrs)
  loss_d = torch_run(wide, [(x.double(), y) for x, y in batches], lrs)
  loss_o, state = ours_run(model, variables, batches, lrs)

  theta_t = param_vector(torch_model.state_dict())
  theta_p = param_vector(pert.state_dict())
  theta_d = param_vector(wide.state_dict())
  ours_sd = convert.flax_to_torch({"params": state.params, "batch_stats": state.batch_stats})
  theta_o = param_vector(ours_sd)
  norm = np.linalg.norm(theta_t)
  return {
    "loss_torch": loss_t,
    "loss_ours": loss_o,
    "loss_perturbed": loss_p,
    "loss_float64": loss_d,
    "lr": lrs,
    "param_dist_ours": np.linalg.norm(theta_o - theta_t) / norm,
    "param_dist_perturbed": np.linalg.norm(theta_p - theta_t) / norm,
    "param_dist_float64": np.linalg.norm(theta_d - theta_t) / norm,
    "param_dist_ours_float64": np.linalg.norm(theta_o - theta_d) / norm,
  }


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--depth", type=int, default=8)
  ap.add_argument("--image-size", type=int, default=16)
  ap.add_argument("--batch", type=int, default=32)
  ap.add_argument("--steps", type=int, default=20)
  ap.add_argument("--seed", type=int, default=0)
  a = ap.parse_args(argv)
  r = compare(a.depth, a.image_size, a.batch, a.steps, a.seed)
  print(
    f"ResNet-{a.depth}, {a.image_size or 32} px, batch {a.batch}, {a.steps} steps, seed {a.seed}"
  )
  print(
    "| step | lr | loss, torch | loss, ours | abs(ours - torch) | "
    "abs(torch 1e-7 perturbed - torch) | abs(torch float64 - torch) | "
    "abs(ours - torch float64) |"
  )
  print("| --- | --- | --- | --- | --- | --- | --- | --- |")
  for t in range(a.steps):
    d = lambda k: abs(r[k][t] - r["loss_torch"][t])  # noqa: E731
    print(
      f"| {t + 1} | {r['lr'][t]:.3g} | {r['loss_torch'][t]:.7f} | {r['loss_ours'][t]:.7f} | "
      f"{d('loss_ours'):.2e} | {d('loss_perturbed'):.2e} | {d('loss_float64'):.2e} | "
      f"{abs(r['loss_ours'][t] - r['loss_float64'][t]):.2e} |"
    )
  print(
    f"relative parameter distance from torch after {a.steps} steps: ours "
    f"{r['param_dist_ours']:.2e}, perturbed torch {r['param_dist_perturbed']:.2e}, "
    f"torch in float64 {r['param_dist_float64']:.2e}; ours from torch in float64 "
    f"{r['param_dist_ours_float64']:.2e}"
  )


if __name__ == "__main__":
  main()
