"""A device-resident epoch trains the same run as the host pipeline.

Both sides use the kit's own pieces: the real train step (ResNet-8, ABSGD, on-device CIFAR
crop + flip), and :func:`absgd_jax.train.inputs.train_batches` for the host, which gathers
each batch in NumPy and sends it per step. The device side keeps the images on the device and
runs each epoch as one scan (:mod:`absgd_jax.train.device_epoch`). The final parameters,
BatchNorm statistics, ABSGD state and every step's metrics must agree to float32 rounding:
the scanned step is compiled as part of a larger program, so XLA may fuse and order its sums
differently, and ten SGD steps carry those last-bit differences forward. The learning rate is
0.02, not CIFAR's 0.1: at 0.1 this small network on random labels is chaotic, and the same
last-bit differences grew to 5% of the parameters' update in ten steps (at 0.02: 1e-6).
"""

import numpy as np
import pytest
import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from absgd_jax import data
from absgd_jax.models import create_model
from absgd_jax.train import device_epoch as de
from absgd_jax.train import inputs, make_config, setup
from absgd_jax.train.experiment_data import ExperimentData
from absgd_jax.train.members import over_members, stack
from absgd_jax.train.step import make_eval_step, make_train_step

N, B, SIZE, C, EPOCHS = 70, 16, 8, 10, 2  # 5 steps an epoch, the last one padded (70 = 4*16+6)
# float32 rounding carried over 10 steps: the largest differences seen were 1.2e-7 in the
# parameters and 5e-7 in the BatchNorm statistics, a hundred times under atol.
TOL = dict(rtol=1e-4, atol=1e-5)


def _exp(seed: int) -> ExperimentData:
  """A CIFAR-like training set of random uint8 images, some labels marked as flipped."""
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, C, N).astype(np.int32)
  train = data.ArrayDataset(
    rng.integers(0, 256, (N, SIZE, SIZE, 3), dtype=np.uint8), labels, C, tuple("abcdefghij")
  )
  return ExperimentData(
    train=train,
    clean_labels=labels,
    flipped=rng.random(N) < 0.3,
    val=None,
    meta=None,
    test=train,
    train_class_counts=np.bincount(labels, minlength=C),
  )


def _kit(seed: int = 0, sampler: str = "uniform"):
  """The config, model, step pieces and initial state of a small ABSGD run on CIFAR-like data."""
  cfg = make_config(
    "cifar10-lt",
    model="resnet8",
    batch_size=B,
    epochs=EPOCHS,
    stage2_epoch=0,  # the weights act from the first step
    lr=0.02,
    crop_padding=2,
    noise="sym",  # only so that train_batches sends "flipped"; the labels are used as they are
    sampler=sampler,
    seed=seed,
  )
  exp = _exp(seed)
  spe = data.num_batches(N, B)
  model = create_model(cfg.model.name, C)
  variables = setup.init_variables(cfg, model, np.zeros((1, SIZE, SIZE, 3), np.float32))
  tx, _ = setup.make_optimizer(cfg, spe, variables["params"])
  loss_fn = setup.make_loss_fn(cfg, exp.train_class_counts, spe)
  weigher = setup.make_batch_weigher(cfg, spe, model.apply, loss_fn)
  state = setup.init_state(cfg, variables, tx, weigher)
  pieces = (model, tx, loss_fn, weigher, setup.make_preprocess(cfg))
  return cfg, exp, pieces, state


def _resident(exp: ExperimentData) -> dict[str, np.ndarray]:
  return {"images": exp.train.images, "labels": exp.train.labels, "flipped": exp.flipped}


def _assert_same_run(host_state, host_metrics, dev_state, dev_metrics, padded=True):
  host, dev = jax.device_get((host_state, dev_state))
  for name in ("params", "batch_stats", "w_state"):
    jax.tree.map(
      lambda a, b: np.testing.assert_allclose(a, b, **TOL), getattr(host, name), getattr(dev, name)
    )
  np.testing.assert_array_equal(host.step, EPOCHS * data.num_batches(N, B))
  np.testing.assert_array_equal(dev.step, host.step)
  dev_metrics = [m for epoch in dev_metrics for m in de.unstack(epoch)]
  host_metrics = jax.device_get(host_metrics)
  assert len(dev_metrics) == len(host_metrics)
  for h, d in zip(host_metrics, dev_metrics):
    assert h.keys() == d.keys()
    for k in h:
      np.testing.assert_allclose(h[k], d[k], **TOL, err_msg=k)
  # The weights acted (lam = 5, not inf): the weighted loss is not the plain one, so the
  # comparison covers ABSGD, not just SGD.
  assert np.all(dev.w_state.lam == 5.0)
  last = dev_metrics[-1]
  assert not np.allclose(last["wloss_sum"], last["loss_sum"], rtol=1e-3)
  if padded:  # the padded last batch of a shuffled epoch counts its real rows only
    assert np.all(last["count"] == N - 4 * B)
  np.testing.assert_array_equal(last["flipped_count"] + last["clean_count"], last["count"])


@pytest.mark.parametrize("sampler", ["uniform", "balanced"])
def test_one_run_matches_the_host_pipeline(sampler):
  cfg, exp, (model, tx, loss_fn, weigher, prep), state0 = _kit(sampler=sampler)
  train_step = make_train_step(model, tx, loss_fn, weigher, prep, num_classes=C)
  sharding = NamedSharding(Mesh(np.array(jax.devices()[:1]), ("data",)), P("data"))

  host_step = jax.jit(train_step)
  state, host_metrics = jax.tree.map(jnp.copy, state0), []
  for epoch in range(EPOCHS):
    for batch in inputs.train_batches(cfg, exp, epoch, sharding):
      state, m = host_step(state, batch)
      host_metrics.append(m)

  epoch_fn = jax.jit(de.make_train_epoch(train_step), donate_argnums=0)
  resident = de.put_resident(_resident(exp))
  balanced = exp.train.labels if sampler == "balanced" else None
  dev_state, dev_metrics = jax.tree.map(jnp.copy, state0), []
  for epoch in range(EPOCHS):
    idx, mask = de.epoch_indices(N, B, cfg.seed, epoch, balanced_labels=balanced)
    dev_state, m = epoch_fn(dev_state, resident, *de.put_indices(idx, mask))
    dev_metrics.append(m)
  if sampler == "balanced":  # full batches: every row of every step is real
    assert all(float(m["count"]) == B for m in de.unstack(dev_metrics[0]))
  _assert_same_run(state, host_metrics, dev_state, dev_metrics, padded=sampler == "uniform")


def test_a_batch_sharded_over_four_devices_matches_the_host_pipeline():
  cfg, exp, (model, tx, loss_fn, weigher, prep), state0 = _kit()
  train_step = make_train_step(model, tx, loss_fn, weigher, prep, num_classes=C)
  mesh = Mesh(np.array(jax.devices()[:4]), ("data",))
  replicated = NamedSharding(mesh, P())

  host_step = jax.jit(train_step, out_shardings=(replicated, replicated))
  state, host_metrics = jax.device_put(state0, replicated), []
  for epoch in range(EPOCHS):
    for batch in inputs.train_batches(cfg, exp, epoch, NamedSharding(mesh, P("data"))):
      state, m = host_step(state, batch)
      host_metrics.append(m)

  epoch_fn = jax.jit(
    de.make_train_epoch(train_step, mesh=mesh),
    donate_argnums=0,
    out_shardings=(replicated, replicated),
  )
  resident = de.put_resident(_resident(exp), mesh)
  assert resident["images"].sharding.is_fully_replicated
  dev_state, dev_metrics = jax.device_put(state0, replicated), []
  for epoch in range(EPOCHS):
    idx, mask = de.put_indices(*de.epoch_indices(N, B, cfg.seed, epoch), mesh)
    assert idx.sharding.spec == P(None, "data")  # each device holds its quarter of each batch
    dev_state, m = epoch_fn(dev_state, resident, idx, mask)
    dev_metrics.append(m)
  _assert_same_run(state, host_metrics, dev_state, dev_metrics)


def test_stacked_members_with_their_own_batches_match_the_host_pipeline():
  """Two members (seeds 0 and 1: their own init, data and batch order), as a seed sweep runs
  them: the step vmapped over the member axis, batches stacked ``[M, B, ...]``."""
  kits = [_kit(seed) for seed in (0, 1)]
  model, tx, loss_fn, weigher, prep = kits[0][2]
  step = make_train_step(model, tx, loss_fn, weigher, prep, num_classes=C)
  train_step = over_members(step, "vmap", (False, False))
  states0 = stack([k[3] for k in kits])
  sharding = NamedSharding(Mesh(np.array(jax.devices()[:1]), ("data",)), P("data"))

  host_step = jax.jit(train_step)
  state, host_metrics = jax.tree.map(jnp.copy, states0), []
  for epoch in range(EPOCHS):
    streams = [inputs.train_batches(cfg, exp, epoch, sharding) for cfg, exp, _, _ in kits]
    for batches in zip(*streams):
      state, m = host_step(state, stack(list(batches)))
      host_metrics.append(m)

  epoch_fn = jax.jit(de.make_train_epoch(train_step), donate_argnums=0)
  # The members' own data sets, concatenated: stack_members offsets each one's indices.
  sets = [_resident(exp) for _, exp, _, _ in kits]
  resident = de.put_resident({k: np.concatenate([s[k] for s in sets]) for k in sets[0]})
  dev_state, dev_metrics = jax.tree.map(jnp.copy, states0), []
  for epoch in range(EPOCHS):
    idx, mask = de.stack_members(
      [de.epoch_indices(N, B, cfg.seed, epoch) for cfg, *_ in kits], sizes=[N, N]
    )
    assert idx.shape == (data.num_batches(N, B), 2, B) and idx[:, 1].min() >= N
    dev_state, m = epoch_fn(dev_state, resident, *de.put_indices(idx, mask))
    dev_metrics.append(m)
  # The members trained apart: their parameters differ.
  p = jax.device_get(dev_state.params["head"]["kernel"])
  assert not np.allclose(p[0], p[1])
  _assert_same_run(state, host_metrics, dev_state, dev_metrics)


def test_evaluation_over_resident_data_sums_what_the_host_loop_sums():
  """Two stacked members evaluated on one shared test set, the last batch padded."""
  kits = [_kit(seed) for seed in (0, 1)]
  cfg, exp = kits[0][:2]
  model, prep = kits[0][2][0], kits[0][2][4]
  eval_step = over_members(
    make_eval_step(model, num_classes=C, preprocess=prep), "vmap", (False, True)
  )
  states = stack([k[3] for k in kits])
  sharding = NamedSharding(Mesh(np.array(jax.devices()[:1]), ("data",)), P("data"))
  host_step = jax.jit(eval_step)
  correct = count = 0.0
  for batch in inputs.eval_batches(cfg, exp.test, sharding):
    out = jax.device_get(host_step(states, batch))
    correct, count = correct + out["class_correct"], count + out["class_count"]

  evaluate = jax.jit(de.make_evaluate(eval_step))
  test = de.put_resident({"images": exp.test.images, "labels": exp.test.labels})
  sums = jax.device_get(evaluate(states, test, *de.put_indices(*de.eval_indices(N, B))))
  np.testing.assert_array_equal(sums["class_count"], count)
  np.testing.assert_array_equal(sums["class_correct"], correct)
  assert sums["class_count"].shape == (2, C)
  np.testing.assert_array_equal(sums["class_count"][0], np.bincount(exp.test.labels, minlength=C))


def test_members_with_other_batch_counts_are_refused():
  with pytest.raises(ValueError, match="same data size"):
    de.stack_members([de.epoch_indices(10, 4, 0, 0), de.epoch_indices(20, 4, 0, 0)])


def test_fits_on_device_reads_the_allocator_limit():
  class Card:
    def __init__(self, stats):
      self.stats = stats

    def memory_stats(self):
      return self.stats

  cifar_st = 25_250 * 32 * 32 * 3  # uint8 images
  assert de.fits_on_device(cifar_st, Card({"bytes_limit": 80 * 2**30}))
  assert not de.fits_on_device(cifar_st, Card({"bytes_limit": 256 * 2**20}))  # 77 of 64 MB
  assert de.fits_on_device(cifar_st, Card(None))  # no limit reported: host memory
