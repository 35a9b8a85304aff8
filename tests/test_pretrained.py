"""Tests of absgd_jax.models.pretrained: torchvision-layout weights in and out of the ResNets.

The torch tests build a ResNet with torchvision's module names and architecture (written here,
not imported: torchvision is not a dependency) and check that our model, given its converted
weights, computes the same evaluation-mode logits. The others need numpy alone.
"""

from __future__ import annotations

import functools
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from absgd_jax import models
from absgd_jax.models import pretrained

KEY = jax.random.key(0, impl="rbg")  # Cheaper to compile than threefry; values do not matter.

STAGES = {  # depth -> (block, stage sizes), as torchvision's resnet18 ... resnet152.
  18: ("basic", (2, 2, 2, 2)),
  34: ("basic", (3, 4, 6, 3)),
  50: ("bottleneck", (3, 4, 6, 3)),
  101: ("bottleneck", (3, 4, 23, 3)),
  152: ("bottleneck", (3, 8, 36, 3)),
}


def flax_resnet(depth: int, num_classes: int, **kwargs) -> models.ResNet:
  block, sizes = STAGES[depth]
  return models.ResNet(num_classes=num_classes, stage_sizes=sizes, block=block, **kwargs)


def abstract_variables(model, size: int = 32):
  """The variables' shapes and dtypes, traced without computing anything."""
  init = functools.partial(model.init, train=False)
  return jax.eval_shape(init, KEY, jnp.zeros((1, size, size, 3)))


@functools.cache
def resnet_template(depth: int, num_classes: int):
  """``abstract_variables`` of torchvision's resnet<depth>, traced once for all the tests."""
  return abstract_variables(flax_resnet(depth, num_classes))


def random_like(tree, seed: int = 0):
  """Concrete numpy values of the shapes in ``tree``: a stand-in for trained variables."""
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda s: rng.normal(size=s.shape).astype(s.dtype), tree)


def tiny(block: str = "basic", num_classes: int = 5, **kwargs) -> models.ResNet:
  """A ResNet small enough for fast tests, with every kind of parameter (projections too)."""
  return models.ResNet(
    num_classes=num_classes, stage_sizes=(1, 2, 1, 1), block=block, widths=(4, 8, 8, 16), **kwargs
  )


def assert_trees_equal(got, want):
  assert jax.tree.structure(got) == jax.tree.structure(want)
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    assert g.shape == w.shape and g.dtype == w.dtype
    np.testing.assert_array_equal(np.asarray(g), np.asarray(w))


# ----------------------------------------------------------------------------- numpy only


@pytest.mark.parametrize("block", ["basic", "bottleneck"])
def test_npz_round_trip(tmp_path, block):
  template = abstract_variables(tiny(block))
  variables = random_like(template)
  path = tmp_path / "weights.npz"
  np.savez(path, **models.flax_to_torch_state_dict(variables))
  assert_trees_equal(models.load_pretrained(path, template), variables)


@pytest.mark.parametrize("depth", [18, 34, 50, 101, 152])
def test_torchvision_names_and_shapes(depth):
  # The keys and torch-layout shapes of torchvision's resnet<depth> for 1000 classes, counted
  # from its definition: BN layers hold 4 tensors, convs 1, fc 2.
  block, sizes = STAGES[depth]
  template = resnet_template(depth, 1000)
  state = models.flax_to_torch_state_dict(
    jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), template)
  )
  convs_per_block = 2 if block == "basic" else 3
  n_convs = 1 + convs_per_block * sum(sizes) + (3 if block == "basic" else 4)  # + projections
  assert len(state) == 5 * n_convs + 2
  expansion = 1 if block == "basic" else 4
  assert state["conv1.weight"].shape == (64, 3, 7, 7)
  assert state["bn1.running_var"].shape == (64,)
  assert state["layer1.0.conv1.weight"].shape == (
    (64, 64, 3, 3) if block == "basic" else (64, 64, 1, 1)
  )
  assert state["layer3.0.conv1.weight"].shape == (
    (256, 128, 3, 3) if block == "basic" else (256, 512, 1, 1)
  )
  assert state["layer3.0.conv2.weight"].shape == (256, 256, 3, 3)
  assert state["layer4.0.downsample.0.weight"].shape == (512 * expansion, 256 * expansion, 1, 1)
  assert state["layer4.0.downsample.1.running_mean"].shape == (512 * expansion,)
  assert f"layer3.{sizes[2] - 1}.bn2.weight" in state
  assert f"layer3.{sizes[2]}.bn2.weight" not in state
  assert state["fc.weight"].shape == (1000, 512 * expansion)
  assert state["fc.bias"].shape == (1000,)


def test_head_drop_keeps_the_template_head():
  source = random_like(abstract_variables(tiny(num_classes=7)), seed=1)
  state = models.flax_to_torch_state_dict(source)
  template = random_like(abstract_variables(tiny(num_classes=3)), seed=2)
  loaded = models.torch_state_dict_to_flax(state, template, head="drop")
  assert_trees_equal(loaded["params"]["head"], template["params"]["head"])
  body = {k: v for k, v in loaded["params"].items() if k != "head"}
  assert_trees_equal(body, {k: v for k, v in source["params"].items() if k != "head"})
  assert_trees_equal(loaded["batch_stats"], source["batch_stats"])
  # A file without fc (e.g. timm's num_classes=0 export) loads too when the head is dropped.
  no_fc = {k: v for k, v in state.items() if not k.startswith("fc.")}
  loaded = models.torch_state_dict_to_flax(no_fc, template, head="drop")
  assert_trees_equal(loaded["params"]["head"], template["params"]["head"])


def test_head_drop_into_a_cosine_head():
  state = models.flax_to_torch_state_dict(random_like(abstract_variables(tiny())))
  template = random_like(abstract_variables(tiny(head="cosine")))
  loaded = models.torch_state_dict_to_flax(state, template, head="drop")
  assert_trees_equal(loaded["params"]["head"], template["params"]["head"])
  with pytest.raises(ValueError, match=r"(?s)unexpected in the state dict: fc\.bias.*cosine"):
    models.torch_state_dict_to_flax(state, template)


def test_head_drop_needs_concrete_head_values():
  state = models.flax_to_torch_state_dict(random_like(abstract_variables(tiny())))
  with pytest.raises(ValueError, match="abstract"):
    models.torch_state_dict_to_flax(state, abstract_variables(tiny()), head="drop")


def test_nested_checkpoint_and_dataparallel_prefix():
  template = abstract_variables(tiny())
  variables = random_like(template)
  state = models.flax_to_torch_state_dict(variables)
  wrapped = {"epoch": 90, "state_dict": {f"module.{k}": v for k, v in state.items()}}
  wrapped["state_dict"]["module.bn1.num_batches_tracked"] = np.array(7)
  assert_trees_equal(models.torch_state_dict_to_flax(wrapped, template), variables)
  assert_trees_equal(models.torch_state_dict_to_flax({"model": state}, template), variables)


@pytest.fixture(scope="module")
def tiny_case():
  template = abstract_variables(tiny())
  return template, models.flax_to_torch_state_dict(random_like(template))


def convert(state, template, **kwargs):
  return models.torch_state_dict_to_flax(state, template, **kwargs)


def test_error_missing_key(tiny_case):
  template, state = tiny_case
  state = dict(state)
  del state["layer2.1.bn1.running_mean"]
  with pytest.raises(
    ValueError, match=r"missing from the state dict: layer2\.1\.bn1\.running_mean"
  ):
    convert(state, template)


def test_error_unexpected_key(tiny_case):
  template, state = tiny_case
  with pytest.raises(ValueError, match=r"unexpected in the state dict: layer1\.0\.se\.weight"):
    convert({**state, "layer1.0.se.weight": np.zeros(3)}, template)


def test_error_shape_mismatch_names_both_sides(tiny_case):
  template, state = tiny_case
  state = {**state, "layer3.0.conv2.weight": np.zeros((8, 8, 5, 5), np.float32)}
  with pytest.raises(
    ValueError,
    match=r"layer3\.0\.conv2\.weight \(8, 8, 5, 5\) -> "
    r"params/stage3_block1/conv2/kernel expects \(3, 3, 8, 8\)",
  ):
    convert(state, template)


def test_error_class_count_suggests_head_drop(tiny_case):
  template, state = tiny_case
  template_7 = abstract_variables(tiny(num_classes=7))
  with pytest.raises(
    ValueError,
    match=r"(?s)fc\.weight \(5, 16\).*7 classes.*"
    r"fc has 5.*head='drop'",
  ):
    convert(state, template_7)


def test_error_wrong_depth():
  state = models.flax_to_torch_state_dict(
    jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), resnet_template(50, 10))
  )
  with pytest.raises(
    ValueError,
    match=r"ResNet-50 \(bottleneck blocks, stages 3-4-6-3\) but "
    r"the template is ResNet-18 .*create_model\('resnet50', num_classes\)",
  ):
    convert(state, resnet_template(18, 10))
  with pytest.raises(
    ValueError,
    match=r"ResNet-50 .* but the template is ResNet-101 .*"
    r"create_model\('resnet50'",
  ):
    convert(state, resnet_template(101, 10))


def test_error_cifar_stem_and_cifar_resnet(tiny_case):
  _, state = tiny_case
  for model in (tiny(cifar_stem=True), models.create_model("resnet20", 10)):
    with pytest.raises(ValueError, match=r"stem conv is 3x3.*cifar_stem=False"):
      convert(state, abstract_variables(model))


def test_error_not_a_resnet_state_dict(tiny_case):
  template, _ = tiny_case
  with pytest.raises(ValueError, match=r"does not look like .*its keys: args, net"):
    convert({"net": {"conv1.weight": np.zeros(1)}, "args": np.zeros(1)}, template)


def test_error_bad_template_and_head_mode(tiny_case):
  template, state = tiny_case
  with pytest.raises(ValueError, match=r"not variables\['params'\]"):
    convert(state, template["params"])
  with pytest.raises(ValueError, match="Unknown head 'replace'"):
    convert(state, template, head="replace")
  with pytest.raises(ValueError, match="ImageNet-style ResNet"):
    models.flax_to_torch_state_dict(abstract_variables(models.create_model("cnn4", 10)))


def test_unknown_suffix(tmp_path, tiny_case):
  template, _ = tiny_case
  with pytest.raises(ValueError, match=r"Unknown weights file type .*\.npz"):
    models.load_pretrained(tmp_path / "weights.h5", template)


def test_torch_file_without_torch_explains_the_npz_route(tmp_path, monkeypatch, tiny_case):
  template, _ = tiny_case
  monkeypatch.setitem(sys.modules, "torch", None)  # Makes `import torch` fail.
  with pytest.raises(ImportError, match=r"(?s)needs PyTorch.*np\.savez"):
    models.load_pretrained(tmp_path / "resnet50.pth", template)


def test_safetensors(tmp_path, tiny_case):
  safetensors_numpy = pytest.importorskip(
    "safetensors.numpy", reason="the optional safetensors package"
  )
  template, state = tiny_case
  path = tmp_path / "model.safetensors"
  safetensors_numpy.save_file(state, str(path))
  loaded = models.load_pretrained(path, template)
  assert_trees_equal(models.flax_to_torch_state_dict(loaded), state)


# ----------------------------------------------------------------------------- with torch


def torch_resnet(depth: int, num_classes: int):
  """A torch ResNet with torchvision's module names and architecture (v1.5 bottlenecks)."""
  torch = pytest.importorskip("torch", reason="builds the reference model in PyTorch")
  nn = torch.nn

  def bn(channels):
    return nn.BatchNorm2d(channels)

  class Basic(nn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride, downsample):
      super().__init__()
      self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
      self.bn1 = bn(planes)
      self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
      self.bn2 = bn(planes)
      self.relu = nn.ReLU()
      self.downsample = downsample

    def forward(self, x):
      y = self.relu(self.bn1(self.conv1(x)))
      y = self.bn2(self.conv2(y))
      return self.relu(y + (x if self.downsample is None else self.downsample(x)))

  class Neck(nn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, stride, downsample):
      super().__init__()
      self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
      self.bn1 = bn(planes)
      self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)  # Stride here: v1.5.
      self.bn2 = bn(planes)
      self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
      self.bn3 = bn(planes * 4)
      self.relu = nn.ReLU()
      self.downsample = downsample

    def forward(self, x):
      y = self.relu(self.bn1(self.conv1(x)))
      y = self.relu(self.bn2(self.conv2(y)))
      y = self.bn3(self.conv3(y))
      return self.relu(y + (x if self.downsample is None else self.downsample(x)))

  class Net(nn.Module):
    def __init__(self):
      super().__init__()
      kind, sizes = STAGES[depth]
      block = Basic if kind == "basic" else Neck
      self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
      self.bn1 = bn(64)
      self.relu = nn.ReLU()
      self.maxpool = nn.MaxPool2d(3, 2, 1)
      inplanes = 64
      for k, (size, planes) in enumerate(zip(sizes, (64, 128, 256, 512)), start=1):
        blocks = []
        for i in range(size):
          stride = 2 if (k > 1 and i == 0) else 1
          downsample = None
          if stride != 1 or inplanes != planes * block.expansion:
            downsample = nn.Sequential(
              nn.Conv2d(inplanes, planes * block.expansion, 1, stride, bias=False),
              bn(planes * block.expansion),
            )
          blocks.append(block(inplanes, planes, stride, downsample))
          inplanes = planes * block.expansion
        setattr(self, f"layer{k}", nn.Sequential(*blocks))
      self.avgpool = nn.AdaptiveAvgPool2d(1)
      self.fc = nn.Linear(inplanes, num_classes)

    def forward(self, x):
      x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
      for k in range(1, 5):
        x = getattr(self, f"layer{k}")(x)
      return self.fc(torch.flatten(self.avgpool(x), 1))

  return torch, Net()


def randomise(torch, net, seed: int):
  """Random weights and BN statistics (not the defaults 0 / 1), so the conversion of each
  tensor matters; scaled so that the activations stay O(1) through the depth."""
  gen = torch.Generator().manual_seed(seed)

  def uniform(t, low, high):
    t.copy_(low + (high - low) * torch.rand(t.shape, generator=gen))

  with torch.no_grad():
    for name, module in net.named_modules():
      if isinstance(module, torch.nn.Conv2d):
        fan_in = module.weight[0].numel()
        module.weight.copy_(torch.randn(module.weight.shape, generator=gen) * (2 / fan_in) ** 0.5)
      elif isinstance(module, torch.nn.BatchNorm2d):
        # A block's last BN (and its projection's) small, as trained ResNets have it, so the
        # residual sum does not grow with the depth.
        last = name.endswith(("bn2", "bn3", "downsample.1")) and name != "bn2"
        uniform(module.weight, 0.1, 0.4) if last else uniform(module.weight, 0.7, 1.3)
        module.bias.copy_(0.1 * torch.randn(module.bias.shape, generator=gen))
        module.running_mean.copy_(0.2 * torch.randn(module.running_mean.shape, generator=gen))
        uniform(module.running_var, 0.5, 2.0)
      elif isinstance(module, torch.nn.Linear):
        module.weight.copy_(torch.randn(module.weight.shape, generator=gen) / 8)
        module.bias.copy_(torch.randn(module.bias.shape, generator=gen))
  return net.eval()


@functools.cache
def torch_case(depth: int, num_classes: int = 10):
  torch, net = torch_resnet(depth, num_classes)
  return torch, randomise(torch, net, seed=depth)


@pytest.mark.parametrize("depth,size", [(18, 64), (18, 57), (50, 64)])
def test_logits_match_torch(depth, size):
  # 57: an odd size, where a stride-2 conv or pool that pads differently would shift the grid.
  torch, net = torch_case(depth)
  x = np.random.default_rng(0).normal(size=(2, 3, size, size)).astype(np.float32)
  with torch.no_grad():
    want = net(torch.from_numpy(x)).numpy()
  model = flax_resnet(depth, 10)
  variables = models.torch_state_dict_to_flax(net.state_dict(), resnet_template(depth, 10))
  forward = jax.jit(functools.partial(model.apply, train=False))  # One compile, not one per op.
  got = np.asarray(forward(variables, jnp.asarray(x.transpose(0, 2, 3, 1))))
  assert 0.5 < np.std(want) < 50  # The comparison means something at this scale.
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_flax_to_torch_loads_strictly_into_torch():
  torch, net = torch_case(18)
  variables = models.torch_state_dict_to_flax(net.state_dict(), resnet_template(18, 10))
  state = models.flax_to_torch_state_dict(variables)
  _, other = torch_resnet(18, 10)
  other.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=True)
  for key, value in net.state_dict().items():
    if not key.endswith("num_batches_tracked"):
      assert torch.equal(other.state_dict()[key], value), key


def test_load_pretrained_pth_checkpoint(tmp_path):
  torch, net = torch_case(18)
  template = resnet_template(18, 10)
  want = models.torch_state_dict_to_flax(net.state_dict(), template)
  # A training checkpoint: DataParallel names under "state_dict", beside other entries.
  path = tmp_path / "model_best.pth.tar"
  torch.save(
    {"epoch": 90, "state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}}, path
  )
  assert_trees_equal(models.load_pretrained(path, template), want)
  # weights_only=True refuses arbitrary objects; the error says what to do instead.
  path = tmp_path / "with_args.pth"
  torch.save({"state_dict": net.state_dict(), "args": Opaque()}, path)
  with pytest.raises(ValueError, match="weights_only=False"):
    models.load_pretrained(path, template)


class Opaque:
  """A pickled object that torch.load(weights_only=True) must refuse."""


def test_npz_command_converts_a_pth(tmp_path):
  torch, net = torch_case(18)
  template = resnet_template(18, 10)
  pth, npz = tmp_path / "in.pth", tmp_path / "out.npz"
  torch.save(net.state_dict(), pth)
  command = pretrained.NPZ_COMMAND.replace("python", sys.executable, 1)
  command = command.replace("in.pth out.npz", f"{pth} {npz}")
  subprocess.run(command, shell=True, check=True)
  assert_trees_equal(
    models.load_pretrained(npz, template),
    models.torch_state_dict_to_flax(net.state_dict(), template),
  )
