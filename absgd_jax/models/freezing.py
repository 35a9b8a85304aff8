"""Which parameters train: masks for optax, for the two-stage fine-tuning of Section 3.6.

The paper's second stage may train only the classifier ("FC") or the classifier and the last
block of feature layers ("LB"), with everything else frozen. Every model in
:mod:`absgd_jax.models` names its top-level submodules so that both are found by name:

* the classifier is ``"head"``;
* feature blocks are ``"stage{s}_block{b}"`` (ResNets) or ``"block{k}"`` (CNN, MLP), numbered
  from 1 in the order the input meets them, so the last block is the highest-numbered one:
  ``stage3_block5`` in ResNet-32, ``stage4_block3`` in ResNet-50, ``stage4_block2`` in
  ResNet-18, ``block4`` (dense 256 + BN) in the CNN, ``block2`` in the digits MLP.

Stems (``stem_conv``, ``stem_bn``) never count as blocks.

A mask is a pytree of bools with the structure of the params, True where a parameter trains.
Pair it with ``optax.masked`` (freeze by skipping the update: wrap the whole chain, weight
decay included, so frozen weights do not decay) or with ``optax.multi_transform``::

    labels = jax.tree.map(lambda t: "train" if t else "freeze", trainable_mask(params, "fc"))
    tx = optax.multi_transform({"train": tx, "freeze": optax.set_to_zero()}, labels)

Freezing parameters does not freeze BatchNorm statistics: those change whenever the model runs
with ``train=True`` and ``mutable=["batch_stats"]``. To keep a frozen part's statistics as
they are, as the decoupling baselines do, apply the model with ``train=False`` there.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import jax

HEAD_NAME = "head"
MASK_CHOICES = ("all", "fc", "fc+lb")
_BLOCK_RE = re.compile(r"^(?:stage(\d+)_)?block(\d+)$")


def last_block_name(params: Mapping[str, Any]) -> str:
  """The name of the last feature block ("LB") among the top-level keys of ``params``.

  Examples:
    >>> last_block_name({"stem_conv": 0, "stage1_block1": 0, "stage3_block5": 0,
    ...                  "stage3_block10": 0, "head": 0})
    'stage3_block10'

  Raises:
    ValueError: if no top-level key is a block name.
  """
  found = []
  for key in params:
    match = _BLOCK_RE.match(str(key))
    if match:
      stage, block = match.groups()
      found.append(((int(stage or 0), int(block)), key))
  if not found:
    raise ValueError(
      f"No block (stage<s>_block<b> or block<k>) among the top-level parameter "
      f"names {sorted(map(str, params))}."
    )
  return max(found)[1]


def trainable_mask(
  params: Mapping[str, Any], which: str = "all", last_block: str | None = None
) -> Any:
  """A pytree of bools like ``params``: True for the parameters that train.

  Args:
    params: the model's ``"params"`` collection (not the whole variables dict).
    which: "all" (everything trains), "fc" (only the classifier ``head``) or "fc+lb" (the
      classifier and the last feature block).
    last_block: the top-level name of the last block, for a model that does not follow the
      naming of :mod:`absgd_jax.models`; None to find it with :func:`last_block_name`.

  Returns:
    A pytree of bools with the same structure (and container types) as ``params``.

  Raises:
    ValueError: for an unknown ``which`` (listing the choices), or if ``params`` has no
      ``head`` (or no blocks, for "fc+lb").

  Examples:
    >>> params = {"stage1_block1": {"w": 1.0}, "stage2_block1": {"w": 1.0},
    ...           "head": {"kernel": 1.0, "bias": 1.0}}
    >>> trainable_mask(params, "fc+lb")
    {'head': {'bias': True, 'kernel': True}, 'stage1_block1': {'w': False},
     'stage2_block1': {'w': True}}
  """
  if which not in MASK_CHOICES:
    raise ValueError(f"Unknown trainable set {which!r}; valid choices: {', '.join(MASK_CHOICES)}.")
  if which == "all":
    return jax.tree.map(lambda _: True, params)
  if HEAD_NAME not in params:
    hint = " (pass variables['params'], not the whole variables dict)" if "params" in params else ""
    raise ValueError(
      f"No {HEAD_NAME!r} among the top-level parameter names {sorted(map(str, params))}{hint}."
    )
  selected = {HEAD_NAME}
  if which == "fc+lb":
    if last_block is None:
      last_block = last_block_name(params)
    elif last_block not in params:
      raise ValueError(
        f"No {last_block!r} among the top-level parameter names {sorted(map(str, params))}."
      )
    selected.add(last_block)

  def top_key(path: tuple[Any, ...]) -> Any:
    entry = path[0]
    return getattr(entry, "key", getattr(entry, "name", entry))

  return jax.tree_util.tree_map_with_path(lambda path, _: top_key(path) in selected, params)
