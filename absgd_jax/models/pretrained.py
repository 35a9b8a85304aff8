"""ImageNet-pretrained weights for the ImageNet-style ResNets, from torchvision or timm files.

:class:`~absgd_jax.models.resnet.ResNet` (``create_model("resnet50", ...)``, the default 7x7
stem) has torchvision's layout, so torchvision's and timm's ResNet-18/34/50/101/152 weights
load into it exactly: in evaluation mode (``train=False``) the two give the same logits up to
float32 rounding. Nothing is downloaded here; fetch the file yourself, e.g. torchvision's
``resnet50-11ad3fa6.pth`` or timm's ``pytorch_model.bin`` / ``model.safetensors``::

    model = create_model("resnet50", num_classes=365)             # Places-LT: 365 classes
    template = model.init(jax.random.key(0), jnp.zeros((1, 224, 224, 3)), train=False)
    variables = load_pretrained("resnet50-11ad3fa6.pth", template, head="drop")

``head="drop"`` keeps the template's freshly initialised classifier, for a class count
other than ImageNet's 1000 (or a cosine head); ``head="keep"`` loads ``fc`` too.

Correspondence (torch name -> flax path; ``k`` = 1..4, block ``i`` from 0 -> ``b = i + 1``):

=====================================  =================================================
``conv1.weight``                       ``params/stem_conv/kernel``
``bn1.{weight,bias}``                  ``params/stem_bn/{scale,bias}``
``bn1.{running_mean,running_var}``     ``batch_stats/stem_bn/{mean,var}``
``layer{k}.{i}.conv{j}.weight``        ``params/stage{k}_block{b}/conv{j}/kernel``
``layer{k}.{i}.bn{j}.*``               ``.../stage{k}_block{b}/bn{j}/*``
``layer{k}.{i}.downsample.0.weight``   ``params/stage{k}_block{b}/proj_conv/kernel``
``layer{k}.{i}.downsample.1.*``        ``.../stage{k}_block{b}/proj_bn/*``
``fc.{weight,bias}``                   ``params/head/{kernel,bias}``
=====================================  =================================================

Conv kernels go from torch's OIHW to flax's HWIO, the linear weight (out, in) to (in, out).
``num_batches_tracked`` is ignored. Every other disagreement (a missing, unexpected or
misshapen tensor, another depth, a CIFAR stem) raises a ValueError that names the keys; nothing
is skipped silently.

Why the logits agree: every conv here pads ``kernel // 2`` on both sides as torch does (not
flax's ``"SAME"``, which pads a stride-2 conv on an even input by (0, 1)); the max-pool is
torch's ``MaxPool2d(3, 2, padding=1)``; a bottleneck strides on its 3x3 conv (torchvision's
"v1.5", also timm's); shortcuts are 1x1 conv + BN projections. BatchNorm's running
statistics are used as they are. Two things remain yours to match:

* Inputs are NHWC here: transpose a (B, C, H, W) batch with ``x.transpose(0, 2, 3, 1)``, and
  normalise it as the weights expect (torchvision: RGB in [0, 1], then mean (0.485, 0.456,
  0.406), std (0.229, 0.224, 0.225)).
* Training from the loaded statistics differs slightly: torch stores the unbiased batch
  variance in its running variance, flax the biased one (see :mod:`.layers`).

Files without torch: ``.npz`` archives keyed by the torch names load with numpy alone. Make
one from a ``.pth`` on any machine that has torch with :data:`NPZ_COMMAND` (``python -c ...
in.pth out.npz``), or from loaded variables with
``numpy.savez(path, **flax_to_torch_state_dict(variables))``.
"""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Iterable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

HEAD_MODES = ("keep", "drop")
TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".pth.tar")

# Printed when torch is missing: converts a torch checkpoint to an .npz this module reads
# with numpy alone. ``.float()`` because numpy has no bfloat16.
NPZ_COMMAND = (
  'python -c "import sys, numpy as np, torch; '
  "sd = torch.load(sys.argv[1], map_location='cpu', weights_only=True); "
  "sd = sd.get('state_dict', sd); "
  'np.savez(sys.argv[2], **{k: v.float().numpy() for k, v in sd.items()})" '
  "in.pth out.npz"
)

# Standard depths by (block, stage sizes); the depth counts convs and the fc layer.
_DEPTHS = {
  ("basic", (2, 2, 2, 2)): 18,
  ("basic", (3, 4, 6, 3)): 34,
  ("bottleneck", (3, 4, 6, 3)): 50,
  ("bottleneck", (3, 4, 23, 3)): 101,
  ("bottleneck", (3, 8, 36, 3)): 152,
}
_REGISTERED_DEPTHS = (18, 34, 50, 101, 152)  # Those with a factory in .registry.

_BLOCK_RE = re.compile(r"^stage(\d+)_block(\d+)$")
_LAYER_RE = re.compile(r"^layer(\d+)\.(\d+)\.")
# Block submodule (flax) -> torch attribute path.
_BLOCK_PARTS = {
  **{f"{kind}{j}": f"{kind}{j}" for kind in ("conv", "bn") for j in (1, 2, 3)},
  "proj_conv": "downsample.0",
  "proj_bn": "downsample.1",
}
_TOP_PARTS = {"stem_conv": "conv1", "stem_bn": "bn1", "head": "fc"}
# (collection, flax leaf name) -> torch tensor name.
_LEAVES = {
  ("params", "kernel"): "weight",
  ("params", "scale"): "weight",
  ("params", "bias"): "bias",
  ("batch_stats", "mean"): "running_mean",
  ("batch_stats", "var"): "running_var",
}
_COLLECTIONS = ("params", "batch_stats")
_LIST_AT_MOST = 8  # Keys listed per kind of problem in an error message.


def torch_state_dict_to_flax(
  state_dict: Mapping[str, Any], variables: Mapping[str, Any], *, head: str = "keep"
) -> dict[str, Any]:
  """A torchvision / timm ResNet state dict as variables of this package's :class:`ResNet`.

  Args:
    state_dict: torch name -> array (torch tensor, numpy or jax array). A checkpoint holding
      the weights under ``"state_dict"`` or ``"model"``, and ``"module."`` prefixes
      (DataParallel), are accepted; ``*.num_batches_tracked`` is ignored.
    variables: the target model's variables, ``{"params": ..., "batch_stats": ...}`` as
      ``model.init`` returns them; they give the structure, shapes and dtypes. With
      ``head="keep"`` they may be abstract (``jax.eval_shape(model.init, ...)``).
    head: ``"keep"`` loads ``fc.*`` into ``params["head"]``; ``"drop"`` keeps the template's
      own head values (e.g. 365 Places classes instead of ImageNet's 1000, or a cosine
      head) and ignores ``fc.*``.

  Returns:
    ``{"params": ..., "batch_stats": ...}`` (plain dicts of jax arrays) with the template's
    structure and dtypes.

  Raises:
    ValueError: for an unknown ``head``; a template that is not an ImageNet-stem ResNet of
      this package; a state dict of another depth or block type; and any missing,
      unexpected or misshapen tensor, naming the keys.

  Examples:
    >>> import functools, jax, jax.numpy as jnp, numpy as np
    >>> from absgd_jax.models import create_model
    >>> model = create_model("resnet18", num_classes=10)
    >>> init = functools.partial(model.init, train=False)
    >>> template = jax.eval_shape(init, jax.random.key(0), jnp.zeros((1, 64, 64, 3)))
    >>> zeros = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), template)
    >>> state_dict = flax_to_torch_state_dict(zeros)  # stands in for torch.load(...)
    >>> state_dict["conv1.weight"].shape, state_dict["layer2.0.downsample.0.weight"].shape
    ((64, 3, 7, 7), (128, 64, 1, 1))
    >>> variables = torch_state_dict_to_flax(state_dict, template)
    >>> variables["params"]["stem_conv"]["kernel"].shape
    (7, 7, 3, 64)
    >>> del state_dict["layer4.1.bn2.running_var"]
    >>> torch_state_dict_to_flax(state_dict, template)
    Traceback (most recent call last):
    ...
    ValueError: ... missing from the state dict: layer4.1.bn2.running_var ...
  """
  if head not in HEAD_MODES:
    raise ValueError(
      f"Unknown head {head!r}; valid choices: {', '.join(HEAD_MODES)} "
      "(keep: load fc.* into the head; drop: keep the template's head)."
    )
  state = _normalise_state_dict(state_dict)
  layout = _layout(variables)
  _check_architecture(state, variables["params"])

  out: dict[tuple[str, ...], Any] = {}
  used: set[str] = set()
  missing: list[str] = []
  misshapen: list[str] = []
  for path, key, leaf in layout:
    if path[1] == "head" and head == "drop":
      if isinstance(leaf, jax.ShapeDtypeStruct):
        raise ValueError(
          f"head='drop' keeps the template's {'/'.join(path)}, but the template "
          "is abstract (jax.eval_shape); pass the variables of model.init."
        )
      out[path] = jnp.asarray(leaf)
      continue
    if key not in state:
      missing.append(key)
      continue
    used.add(key)
    raw = _to_numpy(state[key])
    value = _torch_to_flax_layout(raw, len(leaf.shape))
    if value.shape != tuple(leaf.shape):
      misshapen.append(
        f"{key} {tuple(raw.shape)} -> {'/'.join(path)} "
        f"expects {tuple(leaf.shape)} (torch layout "
        f"{_flax_to_torch_shape(tuple(leaf.shape))})"
      )
      continue
    out[path] = jnp.asarray(value, dtype=leaf.dtype)
  ignored = {k for k in state if k.startswith("fc.")} if head == "drop" else set()
  unexpected = sorted(set(state) - used - ignored)
  if missing or misshapen or unexpected:
    raise ValueError(_mismatch_message(missing, misshapen, unexpected, variables["params"], state))
  return traverse_util.unflatten_dict(out)


def flax_to_torch_state_dict(variables: Mapping[str, Any]) -> dict[str, np.ndarray]:
  """The torchvision-layout state dict of a :class:`ResNet`'s variables (the inverse).

  Conv kernels become OIHW, the linear kernel (out, in); ``num_batches_tracked`` is left out
  (torch's ``load_state_dict`` fills it in). A cosine head gives ``fc.weight`` only.
  Save it for machines without torch with ``numpy.savez(path, **state_dict)``, or load it
  into a torchvision model with ``model.load_state_dict({k: torch.from_numpy(v) ...})``.

  Args:
    variables: ``{"params": ..., "batch_stats": ...}`` of an ImageNet-stem ResNet.

  Returns:
    torch name -> numpy array (bfloat16 leaves as float32, which numpy and torch both read).

  Raises:
    ValueError: if ``variables`` is not an ImageNet-stem :class:`ResNet`'s.
  """
  state: dict[str, np.ndarray] = {}
  for path, key, leaf in _layout(variables):
    value = np.array(leaf)  # A writable copy: torch.from_numpy warns on read-only arrays.
    if value.dtype == jnp.bfloat16:
      value = value.astype(np.float32)
    state[key] = _flax_to_torch_layout(value)
  return state


def read_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """The ResNet state dict in a ``.pth``/``.pt``/``.bin``, ``.npz`` or ``.safetensors`` file.

  Torch files are read with ``torch.load(map_location="cpu", weights_only=True)``, so only
  tensors and plain containers are unpickled; ``.npz`` needs numpy alone; ``.safetensors``
  needs the ``safetensors`` package. Weights nested under ``"state_dict"`` or ``"model"`` are
  unwrapped, ``"module."`` prefixes removed and ``num_batches_tracked`` dropped.

  Args:
    path: the file; its suffix picks the reader (``.pth.tar`` counts as a torch file).

  Returns:
    torch name -> numpy array, as in the file (no layout change).

  Raises:
    ImportError: torch (or safetensors) is needed for the file and missing; the message
      gives the one-line conversion to ``.npz``.
    ValueError: an unknown suffix, or a torch file that holds more than tensors.
  """
  name = os.fspath(path)
  lower = name.lower()
  if lower.endswith(TORCH_SUFFIXES):
    raw = _torch_load(name)
  elif lower.endswith(".npz"):
    with np.load(name, allow_pickle=False) as archive:
      raw = {k: archive[k] for k in archive.files}
  elif lower.endswith(".safetensors"):
    try:
      from safetensors.numpy import load_file  # Optional: only for this format.
    except ImportError as e:
      raise ImportError(
        f"Reading {name} needs the safetensors package (pip install "
        "safetensors); or convert the file to .npz where it is installed."
      ) from e
    raw = load_file(name)
  else:
    raise ValueError(
      f"Unknown weights file type {name!r}; expected one of "
      f"{', '.join(TORCH_SUFFIXES)}, .npz, .safetensors."
    )
  return {k: _to_numpy(v) for k, v in _normalise_state_dict(raw).items()}


def load_pretrained(
  path: str | os.PathLike, variables: Mapping[str, Any], *, head: str = "keep"
) -> dict[str, Any]:
  """Pretrained ResNet weights from a local file, as variables shaped like ``variables``.

  :func:`read_state_dict` followed by :func:`torch_state_dict_to_flax`; see both for the
  formats, the ``head`` modes and the errors.

  Args:
    path: a ``.pth``/``.pt``/``.bin``/``.pth.tar`` (needs torch), ``.npz`` or
      ``.safetensors`` (needs safetensors) file in torchvision's naming.
    variables: the target model's ``model.init`` variables (the template).
    head: ``"keep"`` (load ``fc``) or ``"drop"`` (keep the template's head).

  Returns:
    ``{"params": ..., "batch_stats": ...}`` for ``model.apply``.
  """
  return torch_state_dict_to_flax(read_state_dict(path), variables, head=head)


def _torch_load(name: str) -> Mapping[str, Any]:
  try:
    import torch  # Lazy: the package itself never needs torch.
  except ImportError as e:
    raise ImportError(
      f"Reading {name} needs PyTorch, which is not installed. On a machine that has it, "
      f"convert the file to .npz once and load that instead:\n  {NPZ_COMMAND}"
    ) from e
  try:
    return torch.load(name, map_location="cpu", weights_only=True)
  except pickle.UnpicklingError as e:
    # weights_only refuses arbitrary objects (e.g. an argparse.Namespace saved beside the
    # weights); unpickling those would run code from the file, so the choice is the user's.
    raise ValueError(
      f"{name} holds more than tensors, so torch.load(weights_only=True) refuses it. If you "
      "trust the file, load it yourself with torch.load(path, map_location='cpu', "
      "weights_only=False) and pass its state dict to torch_state_dict_to_flax."
    ) from e


def _normalise_state_dict(state_dict: Mapping[str, Any]) -> dict[str, Any]:
  """Unwraps ``state_dict``/``model`` nesting, strips ``module.``, drops counters."""
  if not isinstance(state_dict, Mapping):
    raise ValueError(
      f"Expected a state dict (a mapping of names to tensors), got {type(state_dict).__name__}."
    )
  state = state_dict
  while True:  # Terminates: every step goes one level deeper into a finite nest.
    inner = next(
      (state[k] for k in ("state_dict", "model") if isinstance(state.get(k), Mapping)), None
    )
    if inner is None:
      break
    state = inner
  out: dict[str, Any] = {}
  for key, value in state.items():
    key = str(key)
    if key.endswith(".num_batches_tracked"):
      continue
    stripped = key.removeprefix("module.")
    if stripped in out:
      raise ValueError(f"The state dict has both {key!r} and {stripped!r}; keep one of them.")
    out[stripped] = value
  return out


def _to_numpy(value: Any) -> np.ndarray:
  if hasattr(value, "detach"):  # A torch.Tensor, without importing torch.
    value = value.detach().cpu()
    if str(value.dtype) == "torch.bfloat16":  # numpy has no bfloat16.
      value = value.float()
    return value.numpy()
  return np.asarray(value)


def _torch_to_flax_layout(value: np.ndarray, flax_ndim: int) -> np.ndarray:
  # Decided by the template's rank, so a torch tensor of the wrong rank fails the shape check.
  if flax_ndim == 4 and value.ndim == 4:
    return value.transpose(2, 3, 1, 0)  # OIHW -> HWIO.
  if flax_ndim == 2 and value.ndim == 2:
    return value.T  # (out, in) -> (in, out).
  return value


def _flax_to_torch_layout(value: np.ndarray) -> np.ndarray:
  if value.ndim == 4:
    return np.ascontiguousarray(value.transpose(3, 2, 0, 1))  # HWIO -> OIHW.
  if value.ndim == 2:
    return np.ascontiguousarray(value.T)
  return value


def _flax_to_torch_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
  if len(shape) == 4:
    return (shape[3], shape[2], shape[0], shape[1])
  return shape[::-1] if len(shape) == 2 else shape


def _layout(variables: Mapping[str, Any]) -> list[tuple[tuple[str, ...], str, Any]]:
  """(flax path with its collection, torch key, template leaf) for every leaf of the template.

  Also checks that the template is an ImageNet-stem ResNet of this package.
  """
  if not isinstance(variables, Mapping) or "params" not in variables:
    keys = sorted(map(str, variables)) if isinstance(variables, Mapping) else type(variables)
    hint = (
      " (pass the whole variables of model.init, not variables['params'])"
      if isinstance(variables, Mapping) and "stem_conv" in variables
      else ""
    )
    raise ValueError(f"Expected {{'params': ..., 'batch_stats': ...}}, got {keys}{hint}.")
  extra = sorted(set(map(str, variables)) - set(_COLLECTIONS))
  if extra or "batch_stats" not in variables:
    raise ValueError(
      f"Expected exactly the collections params and batch_stats, got "
      f"{sorted(map(str, variables))}; pass the variables of model.init."
    )
  params = variables["params"]
  stem = params.get("stem_conv", {}).get("kernel") if isinstance(params, Mapping) else None
  if stem is None:
    raise ValueError(
      "The template has no params/stem_conv/kernel; it must be the variables of "
      "an ImageNet-style ResNet, e.g. create_model('resnet50', num_classes)."
    )
  if tuple(stem.shape[:2]) != (7, 7):
    raise ValueError(
      f"The template's stem conv is {stem.shape[0]}x{stem.shape[1]} (a CIFAR stem: "
      "cifar_stem=True, or a resnet8/20/32); ImageNet weights need the 7x7 stem with its "
      "max-pool: build the model with cifar_stem=False (the default of resnet18/34/50/152)."
    )
  layout = []
  for collection in _COLLECTIONS:
    for path, leaf in traverse_util.flatten_dict(variables[collection]).items():
      full = (collection, *map(str, path))
      layout.append((full, _torch_key(full), leaf))
  return layout


def _torch_key(full: tuple[str, ...]) -> str:
  """The torch name of the flax leaf at ``full`` = (collection, module..., leaf)."""
  collection, *modules, leaf = full
  bad = ValueError(
    f"The template's {'/'.join(full)} has no torchvision counterpart; the "
    "template must be an ImageNet-style ResNet of absgd_jax.models."
  )
  tensor = _LEAVES.get((collection, leaf))
  if tensor is None:
    raise bad
  if len(modules) == 1 and modules[0] in _TOP_PARTS:
    return f"{_TOP_PARTS[modules[0]]}.{tensor}"
  match = _BLOCK_RE.match(modules[0]) if len(modules) == 2 else None
  if match is None or modules[1] not in _BLOCK_PARTS:
    raise bad
  stage, block = map(int, match.groups())
  return f"layer{stage}.{block - 1}.{_BLOCK_PARTS[modules[1]]}.{tensor}"


def _architecture_of_state(state: Mapping[str, Any]) -> tuple[str, tuple[int, ...]]:
  blocks: dict[int, int] = {}
  bottleneck = False
  for key in state:
    match = _LAYER_RE.match(key)
    if match:
      stage, index = map(int, match.groups())
      blocks[stage] = max(blocks.get(stage, 0), index + 1)
      bottleneck |= key.startswith(f"layer{stage}.{index}.conv3.")
  if not blocks or "conv1.weight" not in state:
    shown = ", ".join(_shorten(sorted(state)))
    raise ValueError(
      "This does not look like a torchvision / timm ResNet state dict (no "
      f"conv1.weight and layer<k>.<i>.* keys); its keys: {shown}. If the weights "
      "sit under another key of a checkpoint, pass that entry."
    )
  sizes = tuple(blocks.get(s, 0) for s in range(1, max(blocks) + 1))
  return ("bottleneck" if bottleneck else "basic"), sizes


def _architecture_of_params(params: Mapping[str, Any]) -> tuple[str, tuple[int, ...]]:
  blocks: dict[int, int] = {}
  bottleneck = False
  for name, module in params.items():
    match = _BLOCK_RE.match(str(name))
    if match:
      stage, block = map(int, match.groups())
      blocks[stage] = max(blocks.get(stage, 0), block)
      bottleneck |= "conv3" in module
  sizes = tuple(blocks.get(s, 0) for s in range(1, max(blocks, default=0) + 1))
  return ("bottleneck" if bottleneck else "basic"), sizes


def _describe(arch: tuple[str, tuple[int, ...]]) -> str:
  kind, sizes = arch
  depth = _DEPTHS.get(arch)
  stages = "-".join(map(str, sizes))
  name = f"ResNet-{depth}" if depth else "a ResNet"
  return f"{name} ({kind} blocks, stages {stages})"


def _build_hint(arch: tuple[str, tuple[int, ...]]) -> str:
  depth = _DEPTHS.get(arch)
  if depth in _REGISTERED_DEPTHS:
    return f"create_model('resnet{depth}', num_classes)"
  return f"ResNet(num_classes, stage_sizes={arch[1]}, block={arch[0]!r})"


def _check_architecture(state: Mapping[str, Any], params: Mapping[str, Any]) -> None:
  source, target = _architecture_of_state(state), _architecture_of_params(params)
  if source != target:
    raise ValueError(
      f"The state dict is {_describe(source)} but the template is "
      f"{_describe(target)}; build the model as {_build_hint(source)} to load "
      "these weights."
    )


def _shorten(keys: Iterable[str]) -> list[str]:
  keys = list(keys)
  if len(keys) <= _LIST_AT_MOST:
    return keys
  return keys[:_LIST_AT_MOST] + [f"... ({len(keys)} in all)"]


def _mismatch_message(
  missing: list[str],
  misshapen: list[str],
  unexpected: list[str],
  params: Mapping[str, Any],
  state: Mapping[str, Any],
) -> str:
  lines = ["The state dict does not fit the template:"]
  if missing:
    lines.append(f"  missing from the state dict: {', '.join(_shorten(missing))}")
  if misshapen:
    lines.append(f"  shapes differ: {'; '.join(_shorten(misshapen))}")
  if unexpected:
    lines.append(f"  unexpected in the state dict: {', '.join(_shorten(unexpected))}")
  if all(p.startswith("fc.") for p in missing + misshapen + unexpected):
    # Only the classifier disagrees: another class count or head kind than the file's.
    kind = "linear" if "bias" in params["head"] else "cosine (no bias)"
    ours = params["head"]["kernel"].shape[-1]
    theirs = f"{_to_numpy(state['fc.weight']).shape[0]}" if "fc.weight" in state else "no"
    lines.append(
      f"  Only the classifier differs: the template's head is {kind} with {ours} "
      f"classes, the file's fc has {theirs}. Pass head='drop' to keep the "
      "template's own head, or build the model with the file's num_classes and "
      "head='linear'."
    )
  else:
    lines.append(
      "  The template must be the variables of create_model('resnet<depth>', ...) "
      "with the default widths and cifar_stem=False, as torchvision's ResNets; "
      "ResNeXt, wide and deep-stem variants do not fit."
    )
  return "\n".join(lines)
