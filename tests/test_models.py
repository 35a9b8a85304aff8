"""Tests of absgd_jax.models: shapes, parameter counts, BatchNorm, heads, masks, dtypes, pmap."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from absgd_jax import models
from absgd_jax.models import blocks, layers

# Every program here is small and checked for shapes, dtypes, bounds or agreement with another
# program compiled the same way, so XLA's optimisations cost more than they save.
pytestmark = pytest.mark.usefixtures("fast_compile")

# Random init through threefry compiles slowly on CPU (seconds per model); the values do not
# matter to these tests, so the keys use the cheaper "rbg" generator.
KEY = jax.random.key(0, impl="rbg")

CIFAR = (2, 32, 32, 3)
INPUTS = {  # name -> (input shape, extra kwargs)
  "resnet8": (CIFAR, {}),
  "resnet20": (CIFAR, {}),
  "resnet32": (CIFAR, {}),
  "resnet18": (CIFAR, {"cifar_stem": True}),
  "resnet34": (CIFAR, {"cifar_stem": False}),
  "resnet50": ((1, 32, 32, 3), {}),
  "resnet101": ((1, 32, 32, 3), {}),
  "resnet152": ((1, 32, 32, 3), {}),
  "cnn4": (CIFAR, {}),
  "mlp": ((2, 8, 8), {}),
}


def abstract_variables(model, x):
  """Variables' shapes and dtypes, traced without computing anything."""
  return jax.eval_shape(functools.partial(model.init, train=False), KEY, x)


def count(tree) -> int:
  return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))


@functools.cache
def resnet8_variables(**kwargs):
  model = models.resnet8(10, **kwargs)
  x = jnp.zeros((1, 32, 32, 3))
  return model, jax.jit(functools.partial(model.init, train=False))(KEY, x)


@functools.cache
def resnet8_functions(**kwargs):
  """ResNet-8's variables and its jitted evaluation and train-mode applications (compiled once)."""
  model, variables = resnet8_variables(**kwargs)
  evaluate = jax.jit(functools.partial(model.apply, train=False))
  train = jax.jit(functools.partial(model.apply, train=True, mutable=["batch_stats"]))
  return variables, evaluate, train


def images(n: int, seed: int = 0, size: int = 32) -> jax.Array:
  return jax.random.normal(jax.random.key(seed, impl="rbg"), (n, size, size, 3))


# --- Shapes and dtypes ---------------------------------------------------------------------


def test_registry_covers_the_issue_names():
  assert set(models.MODEL_NAMES) == set(INPUTS)


@pytest.mark.parametrize("name", list(INPUTS))
def test_output_shape_and_dtypes(name):
  shape, kwargs = INPUTS[name]
  x = jnp.zeros(shape)
  combos = (("linear", jnp.float32), ("cosine", jnp.bfloat16))
  slow = name in ("resnet101", "resnet152")  # They trace slowly.
  for head, dtype in combos[:1] if slow else combos:
    model = models.create_model(name, 7, head=head, dtype=dtype, **kwargs)
    variables = abstract_variables(model, x)
    logits = jax.eval_shape(functools.partial(model.apply, train=False), variables, x)
    assert logits.shape == (shape[0], 7)
    assert logits.dtype == jnp.float32  # The head computes in float32 whatever ``dtype`` is.
    # Mixed precision: the computation is in ``dtype``, the variables stay float32.
    assert {leaf.dtype for leaf in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float32)}
    assert ("batch_stats" in variables) == (name != "mlp")


@pytest.mark.parametrize("name", ["resnet8", "cnn4", "mlp"])
def test_forward_computes_finite_logits(name):
  # The larger models are covered by the traced shapes above: compiling them costs seconds.
  shape, kwargs = INPUTS[name]
  x = jax.random.normal(KEY, shape)
  if name == "resnet8":
    variables, evaluate, _ = resnet8_functions()
  else:
    model = models.create_model(name, 10, **kwargs)
    variables = jax.jit(functools.partial(model.init, train=False))(KEY, x)
    evaluate = jax.jit(functools.partial(model.apply, train=False))
  logits = evaluate(variables, x)
  assert logits.shape == (shape[0], 10)
  assert np.all(np.isfinite(logits))


def test_bottleneck_forward():
  block = blocks.Bottleneck(8, 2, shortcut="B")
  x = jax.random.normal(KEY, (2, 8, 8, 16))
  variables = jax.jit(functools.partial(block.init, train=False))(KEY, x)
  y, _ = jax.jit(functools.partial(block.apply, train=True, mutable=["batch_stats"]))(variables, x)
  assert y.shape == (2, 4, 4, 32)
  assert np.all(np.isfinite(y)) and np.all(y >= 0)  # Ends in a ReLU.


def test_bfloat16_forward_keeps_float32_state():
  model, variables = resnet8_variables(dtype=jnp.bfloat16)
  logits, updates = jax.jit(functools.partial(model.apply, train=True, mutable=["batch_stats"]))(
    variables, images(4)
  )
  assert logits.dtype == jnp.float32  # The head is float32; the body ran in bfloat16.
  assert np.all(np.isfinite(np.asarray(logits)))
  for leaf in jax.tree.leaves((variables, updates)):
    assert leaf.dtype == jnp.float32


# --- Parameter counts ----------------------------------------------------------------------


def cifar_resnet_params(n: int, k: int, shortcut: str = "A") -> int:
  """Parameters of a 6n+2 CIFAR ResNet, by formula: 3x3 convs without bias, BN scale+bias."""
  conv = lambda cin, cout, size=3: cin * cout * size * size  # noqa: E731
  bn = lambda c: 2 * c  # noqa: E731
  total = conv(3, 16) + bn(16)
  cin = 16
  for width in (16, 32, 64):
    for _ in range(n):
      total += conv(cin, width) + bn(width) + conv(width, width) + bn(width)
      if shortcut == "B" and cin != width:
        total += conv(cin, width, 1) + bn(width)
      cin = width
  return total + 64 * k + k


def test_cifar_resnet_formula_matches_published_figures():
  # He et al. (2016), Table 6: ResNet-20 0.27M, ResNet-32 0.46M.
  assert cifar_resnet_params(5, 10) == 464_154
  assert cifar_resnet_params(3, 10) == 269_722


@pytest.mark.parametrize("name,n", [("resnet8", 1), ("resnet20", 3), ("resnet32", 5)])
@pytest.mark.parametrize("shortcut", ["A", "B"])
@pytest.mark.parametrize("k", [10, 100])
def test_cifar_resnet_parameter_count(name, n, shortcut, k):
  model = models.create_model(name, k, shortcut=shortcut)
  params = abstract_variables(model, jnp.zeros(CIFAR))["params"]
  assert count(params) == cifar_resnet_params(n, k, shortcut)


@pytest.mark.parametrize(
  "name,expected",
  [
    # torchvision's figures for 1000 classes (same layout: no conv bias, BN scale + bias).
    ("resnet18", 11_689_512),
    ("resnet34", 21_797_672),
    ("resnet50", 25_557_032),
    ("resnet101", 44_549_160),
    ("resnet152", 60_192_808),
  ],
)
def test_imagenet_resnet_parameter_count(name, expected):
  params = abstract_variables(models.create_model(name, 1000), jnp.zeros((1, 32, 32, 3)))
  assert count(params["params"]) == expected


def test_cifar_stem_and_cosine_head_counts():
  x = jnp.zeros((1, 32, 32, 3))
  # The 3x3 stem replaces the 7x7 one: 64 * 3 * (49 - 9) fewer weights.
  plain = count(abstract_variables(models.resnet18(100), x)["params"])
  cifar = count(abstract_variables(models.resnet18(100, cifar_stem=True), x)["params"])
  assert plain - cifar == 64 * 3 * 40
  assert cifar == 11_220_132  # The usual CIFAR-100 ResNet-18 figure.
  # The cosine head has no bias.
  cosine = count(
    abstract_variables(models.resnet18(100, cifar_stem=True, head="cosine"), x)["params"]
  )
  assert cifar - cosine == 100


def test_cnn4_and_mlp_parameter_counts():
  convs = [(3, 64), (64, 64), (64, 128), (128, 128), (128, 196), (196, 196)]
  expected = sum(9 * i * o + 2 * o for i, o in convs)  # 3x3 convs + BN.
  expected += 4 * 4 * 196 * 256 + 2 * 256  # Dense 256 (no bias) + BN.
  expected += 256 * 10 + 10  # Head.
  params = abstract_variables(models.cnn4(10), jnp.zeros(CIFAR))["params"]
  assert count(params) == expected == 1_638_762
  params = abstract_variables(models.mlp(10), jnp.zeros((1, 8, 8)))["params"]
  assert count(params) == 64 * 128 + 128 + 128 * 64 + 64 + 64 * 10 + 10


# --- Blocks --------------------------------------------------------------------------------


def test_shortcut_a_subsamples_and_zero_pads_both_sides():
  x = jax.random.normal(KEY, (2, 8, 8, 16))
  y = blocks._pad_shortcut(x, 32, 2)
  assert y.shape == (2, 4, 4, 32)
  np.testing.assert_array_equal(y[..., 8:24], x[:, ::2, ::2, :])
  assert not np.any(y[..., :8]) and not np.any(y[..., 24:])


def test_shortcut_a_has_no_parameters_and_b_projects():
  x = jnp.zeros((1, 8, 8, 16))
  shapes = {}
  for shortcut in ("A", "B"):
    block = blocks.BasicBlock(32, 2, shortcut=shortcut)
    shapes[shortcut] = abstract_variables(block, x)["params"]
  assert set(shapes["A"]) == {"conv1", "bn1", "conv2", "bn2"}
  assert set(shapes["B"]) == {"conv1", "bn1", "conv2", "bn2", "proj_conv", "proj_bn"}
  assert shapes["B"]["proj_conv"]["kernel"].shape == (1, 1, 16, 32)


def test_zero_init_residual_is_off_by_default():
  x = jnp.zeros((1, 8, 8, 16))
  for zero_init, expected in ((False, 1.0), (True, 0.0)):
    block = blocks.BasicBlock(16, zero_init_residual=zero_init)
    params = block.init(KEY, x, train=False)["params"]
    np.testing.assert_array_equal(params["bn2"]["scale"], expected)
    np.testing.assert_array_equal(params["bn1"]["scale"], 1.0)


def test_bad_choices_are_answered_with_the_valid_ones():
  with pytest.raises(ValueError, match="valid choices: resnet8, resnet20, resnet32"):
    models.create_model("resnet33", 10)
  with pytest.raises(ValueError, match="linear, cosine"):
    abstract_variables(models.resnet8(10, head="softmax"), jnp.zeros(CIFAR))
  with pytest.raises(ValueError, match="A, B"):
    abstract_variables(models.resnet8(10, shortcut="C"), jnp.zeros(CIFAR))


# --- BatchNorm -----------------------------------------------------------------------------


def test_batch_norm_updates_running_stats_with_pytorch_momentum():
  bn = layers.batch_norm(True)
  x = 3.0 + 2.0 * jax.random.normal(KEY, (64, 5))
  variables = bn.init(KEY, x)
  _, state = bn.apply(variables, x, mutable=["batch_stats"])
  # PyTorch's momentum 0.1: running = 0.9 * running + 0.1 * batch (biased variance in flax).
  np.testing.assert_allclose(state["batch_stats"]["mean"], 0.1 * x.mean(axis=0), rtol=1e-5)
  np.testing.assert_allclose(state["batch_stats"]["var"], 0.9 + 0.1 * x.var(axis=0), rtol=1e-5)
  # Evaluation normalises with the running statistics and epsilon = 1e-5.
  stats = {"mean": jnp.full(5, 3.0), "var": jnp.full(5, 4.0)}
  y = layers.batch_norm(False).apply({**variables, "batch_stats": stats}, x)
  np.testing.assert_allclose(y, (x - 3.0) / np.sqrt(4.0 + 1e-5), rtol=1e-5, atol=1e-6)


def test_train_mode_updates_every_batch_norm():
  variables, _, train = resnet8_functions()
  _, state = train(variables, images(8))
  old, new = variables["batch_stats"], state["batch_stats"]
  assert jax.tree.structure(old) == jax.tree.structure(new)
  for before, after in zip(jax.tree.leaves(old), jax.tree.leaves(new)):
    assert not np.allclose(before, after)


def test_eval_mode_uses_running_stats():
  variables, evaluate, train = resnet8_functions()
  x = images(4, seed=1)
  # Evaluation is per sample: a sample's logits do not depend on the rest of the batch ...
  np.testing.assert_allclose(evaluate(variables, x)[:1], evaluate(variables, x[:1]), atol=1e-5)
  # ... whereas training normalises with the batch's statistics.
  assert not np.allclose(train(variables, x)[0][:1], train(variables, x[:1])[0], atol=1e-3)
  # Changing the running statistics changes evaluation, not training.
  shifted = dict(variables, batch_stats=jax.tree.map(lambda s: s + 0.5, variables["batch_stats"]))
  assert not np.allclose(evaluate(variables, x), evaluate(shifted, x), atol=1e-3)
  np.testing.assert_allclose(train(variables, x)[0], train(shifted, x)[0], atol=1e-5)


def test_batch_norm_defaults():
  bn = layers.batch_norm(True, axis_name="batch")
  assert (bn.momentum, bn.epsilon, bn.use_running_average, bn.axis_name) == (
    0.9,
    1e-5,
    False,
    "batch",
  )
  assert layers.batch_norm(False).use_running_average is True


@pytest.mark.skipif(jax.local_device_count() < 2, reason="needs several (simulated) devices")
def test_batch_norm_axis_name_gives_global_stats_under_pmap():
  devices = jax.local_device_count()
  x = images(2 * devices, seed=2, size=16)
  single = models.resnet8(10)
  mapped = models.resnet8(10, axis_name="batch")
  variables, _, _ = resnet8_functions()  # Parameter shapes do not depend on the image size.
  logits, state = jax.jit(functools.partial(single.apply, train=True, mutable=["batch_stats"]))(
    variables, x
  )

  def step(v, xs):
    return mapped.apply(v, xs, train=True, mutable=["batch_stats"])

  replicated = jax.tree.map(lambda a: jnp.broadcast_to(a, (devices, *a.shape)), variables)
  p_logits, p_state = jax.pmap(step, axis_name="batch")(
    replicated, x.reshape(devices, 2, *x.shape[1:])
  )
  np.testing.assert_allclose(p_logits.reshape(logits.shape), logits, rtol=1e-4, atol=1e-4)
  for ref, per_device in zip(jax.tree.leaves(state), jax.tree.leaves(p_state)):
    for d in range(devices):  # Every device holds the global statistics.
      np.testing.assert_allclose(per_device[d], ref, rtol=1e-4, atol=1e-5)


# --- Heads ---------------------------------------------------------------------------------


def test_cosine_head_is_a_cosine():
  head = models.CosineClassifier(4)
  x = jax.random.normal(KEY, (16, 8)) * 50.0
  params = head.init(KEY, x)
  logits = head.apply(params, x)
  assert logits.shape == (16, 4)
  assert np.all(np.abs(logits) <= 1.0)
  np.testing.assert_allclose(head.apply(params, x / 50.0), logits, atol=1e-5)  # Scale-free.
  w = params["params"]["kernel"]
  np.testing.assert_allclose(jnp.diag(head.apply(params, 3.0 * w.T)), 1.0, atol=1e-5)
  # A zero feature vector gives zero logits, not NaN.
  np.testing.assert_array_equal(head.apply(params, jnp.zeros((1, 8))), 0.0)


def test_cosine_head_on_resnet_logits_within_unit_interval():
  model, variables = resnet8_variables(head="cosine")
  logits = jax.jit(functools.partial(model.apply, train=False))(variables, images(8) * 10.0)
  assert np.all(np.abs(logits) <= 1.0)
  assert set(variables["params"]["head"]) == {"kernel"}


# --- Freezing masks ------------------------------------------------------------------------


def selected(mask) -> set[str]:
  """Top-level names with a True leaf, after checking that each is all-True or all-False."""
  names = set()
  for name, sub in mask.items():
    leaves = set(jax.tree.leaves(sub))
    assert len(leaves) == 1
    if leaves.pop():
      names.add(name)
  return names


@pytest.mark.parametrize(
  "name,last",
  [
    ("resnet8", "stage3_block1"),
    ("resnet32", "stage3_block5"),
    ("resnet18", "stage4_block2"),
    ("resnet50", "stage4_block3"),
    ("resnet152", "stage4_block3"),
    ("cnn4", "block4"),
    ("mlp", "block2"),
  ],
)
def test_trainable_mask_selects_head_and_last_block(name, last):
  shape, kwargs = INPUTS[name]
  params = abstract_variables(models.create_model(name, 10, **kwargs), jnp.zeros(shape))["params"]
  assert models.last_block_name(params) == last
  assert selected(models.trainable_mask(params, "all")) == set(params)
  assert selected(models.trainable_mask(params, "fc")) == {"head"}
  assert selected(models.trainable_mask(params, "fc+lb")) == {"head", last}
  assert jax.tree.structure(models.trainable_mask(params, "fc")) == jax.tree.structure(params)


def test_trainable_mask_errors():
  params = {"block1": {"w": 1.0}, "head": {"w": 1.0}}
  with pytest.raises(ValueError, match="all, fc, fc\\+lb"):
    models.trainable_mask(params, "lb")
  with pytest.raises(ValueError, match="not the whole variables"):
    models.trainable_mask({"params": params}, "fc")
  assert selected(models.trainable_mask(params, "fc+lb", last_block="block1")) == {"block1", "head"}


def test_trainable_mask_freezes_with_optax():
  model = models.mlp(10)
  x = jax.random.normal(KEY, (4, 8, 8))
  params = model.init(KEY, x, train=False)["params"]
  labels = jax.tree.map(
    lambda t: "train" if t else "freeze", models.trainable_mask(params, "fc+lb")
  )
  tx = optax.multi_transform({"train": optax.sgd(0.1), "freeze": optax.set_to_zero()}, labels)
  grads = jax.tree.map(jnp.ones_like, params)
  updates, _ = tx.update(grads, tx.init(params), params)
  new = optax.apply_updates(params, updates)
  np.testing.assert_array_equal(new["block1"]["kernel"], params["block1"]["kernel"])
  assert not np.allclose(new["block2"]["kernel"], params["block2"]["kernel"])
  assert not np.allclose(new["head"]["kernel"], params["head"]["kernel"])
