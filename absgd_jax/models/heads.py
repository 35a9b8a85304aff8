"""Classifier heads: a linear layer, or a cosine (normalised) layer for LDAM.

Every model in :mod:`absgd_jax.models` ends in a submodule named ``"head"`` built by
:func:`classifier_head`, so ``params["head"]`` is always the classifier (the paper's "FC")
whichever kind it is. That is what :func:`absgd_jax.models.trainable_mask` selects.

* ``"linear"``: ``nn.Dense(num_classes)``; params ``kernel`` (D, K) and ``bias`` (K,).
* ``"cosine"``: :class:`CosineClassifier`; params ``kernel`` (D, K), no bias.

The cosine head returns cosine similarities in [-1, 1], as the ``NormedLinear`` layer of the
LDAM authors' code does. LDAM's ``scale`` (s = 30 in their code) multiplies the margin-shifted
logits *in the loss*, not here, so the same model serves CE at test time and LDAM in training,
and the loss keeps all of its hyper-parameters in one place.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from absgd_jax.models.layers import Dtype, Initializer, torch_linear_default

HEAD_KINDS = ("linear", "cosine")


def _uniform_pm1(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
  # Only the direction of each class vector matters to a cosine head; a symmetric uniform
  # start (as in LDAM's NormedLinear) spreads the directions without favouring any class.
  return jax.random.uniform(key, shape, dtype, minval=-1.0, maxval=1.0)


def _l2_normalize(x: jax.Array, axis: int, eps: float = 1e-12) -> jax.Array:
  # x / max(||x||, eps) as torch.nn.functional.normalize: a zero vector stays zero (no NaN).
  norm = jnp.sqrt(jnp.sum(jnp.square(x), axis=axis, keepdims=True))
  return x / jnp.maximum(norm, eps)


class CosineClassifier(nn.Module):
  """Cosine-similarity classifier: ``normalize(x) @ normalize(W)``, logits in [-1, 1].

  Both the features (per sample) and the class vectors (columns of ``kernel``) are scaled to
  unit L2 norm, so a logit is the cosine of the angle between a feature and a class vector.
  The norms are taken in float32 even under a bfloat16 ``dtype``: a bfloat16 sum of squares
  over hundreds of features loses the precision that the normalisation is there to provide.
  The result is clipped to [-1, 1] so that rounding never leaves the documented range.

  Attributes:
    num_classes: number of outputs K.
    dtype: dtype of the matrix product and the logits.
    param_dtype: dtype of ``kernel``.
    kernel_init: initialiser of the (D, K) kernel.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> head = CosineClassifier(num_classes=3)
    >>> x = jnp.ones((2, 5))
    >>> logits, _ = head.init_with_output(jax.random.key(0), x)
    >>> logits.shape, bool(jnp.all(jnp.abs(logits) <= 1.0))
    ((2, 3), True)
  """

  num_classes: int
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  kernel_init: Initializer = _uniform_pm1

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.param(
      "kernel", self.kernel_init, (x.shape[-1], self.num_classes), self.param_dtype
    )
    x = _l2_normalize(x.astype(jnp.float32), axis=-1).astype(self.dtype)
    w = _l2_normalize(kernel.astype(jnp.float32), axis=0).astype(self.dtype)
    return jnp.clip(x @ w, -1.0, 1.0)


def classifier_head(
  kind: str,
  num_classes: int,
  *,
  dtype: Dtype = jnp.float32,
  param_dtype: Dtype = jnp.float32,
  linear_init: Initializer | None = None,
  name: str = "head",
) -> Callable[[jax.Array], jax.Array]:
  """The classifier named ``kind`` ("linear" or "cosine"), as a submodule called ``name``.

  Args:
    kind: "linear" (a dense layer with bias) or "cosine" (:class:`CosineClassifier`).
    num_classes: number of outputs.
    dtype: computation dtype, raised to at least float32: the logits feed the losses and
      the ABSGD weights exp(L / lam), where bfloat16 would round a logit of 20 by 0.06.
    param_dtype: dtype of the parameters.
    linear_init: kernel initialiser of the "linear" head; None for PyTorch's ``nn.Linear``
      default. The "cosine" head always starts from U(-1, 1): only directions matter to it.
    name: the submodule's name; keep "head" so that freezing masks find it.

  Returns:
    An unbound Linen module mapping (B, D) features to (B, num_classes) logits.

  Raises:
    ValueError: for an unknown ``kind``, listing the valid ones.
  """
  dtype = jnp.promote_types(dtype, jnp.float32)
  if kind == "linear":
    return nn.Dense(
      num_classes,
      dtype=dtype,
      param_dtype=param_dtype,
      kernel_init=linear_init or torch_linear_default,
      name=name,
    )
  if kind == "cosine":
    return CosineClassifier(num_classes, dtype=dtype, param_dtype=param_dtype, name=name)
  raise ValueError(f"Unknown head {kind!r}; valid choices: {', '.join(HEAD_KINDS)}.")
