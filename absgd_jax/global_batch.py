"""The loss and gradient of the global batch, from a function that sees one device's shard.

Under ``pmap`` or ``shard_map`` each device holds its shard of the batch, and
:func:`absgd_jax.weighted_mean` (with a weigher built with ``axis_name``) returns each
device's share of the global loss: its samples' weighted sum over the global count. The global
gradient is then the sum of the devices' gradients. Whether that sum must be written depends
on the mode: under ``pmap`` and ``shard_map(check_vma=False)`` each device's gradient is its
own term and needs a ``psum``; under ``shard_map``'s default ``check_vma=True`` the gradient
with respect to replicated parameters is already summed by jax (the transpose of using one
value on every device), and a ``psum`` would count it once per device, silently.
:func:`global_value_and_grad` is right in every mode: it marks the parameters as varying
across devices before differentiating them, so each device's gradient is its own term, then
sums the terms.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax

from absgd_jax.weigher import AxisName


def device_varying(tree: Any, axis_name: AxisName) -> Any:
  """``tree`` marked as a per-device value of the mapped axis, so that a gradient with respect
  to it is each device's own term.

  Only ``shard_map`` tracks which values vary; under ``pmap`` the marking is a no-op, and
  under ``vmap`` with an axis name, where jax refuses it, the tree is returned as it is (a
  gradient there is each member's own already).
  """
  pcast = getattr(jax.lax, "pcast", None)

  def mark(t):
    if pcast is not None:
      return pcast(t, axis_name, to="varying")
    return jax.lax.pvary(t, axis_name)  # jax releases before pcast

  try:
    return mark(tree)
  except ValueError:  # "should be called under jax.shard_map": a vmapped axis
    return tree


def global_value_and_grad(
  fun: Callable, axis_name: AxisName | None, *, has_aux: bool = False
) -> Callable:
  """``jax.value_and_grad(fun, has_aux=...)`` over the global batch, inside ``pmap`` or
  ``shard_map`` (with or without ``check_vma``).

  ``fun(params, *args)`` returns one device's share of the global loss, as
  :func:`absgd_jax.weighted_mean` with a weigher built with ``axis_name`` does. The returned
  function gives the global loss (the shares summed over ``axis_name``) and its gradient with
  respect to ``params``, the same on every device and equal to one device holding the whole
  batch; ``aux`` is each device's own. ``axis_name=None`` (one device, or ``jax.jit`` over a
  sharded batch, where XLA reduces) is ``jax.value_and_grad`` itself.

  Examples:
    >>> import jax, jax.numpy as jnp, absgd_jax
    >>> sharded = absgd_jax.absgd_weights(lam=1.0, axis_name="i")
    >>> def loss(w, x):  # one shard's share of the global weighted mean
    ...   return absgd_jax.weighted_mean(w * x, sharded.init(), sharded)[0]
    >>> step = absgd_jax.global_value_and_grad(loss, "i")
    >>> x = jnp.arange(8.0).reshape(2, 4) / 8  # 2 shards of a batch of 8 (vmap stands in)
    >>> value, grad = jax.vmap(step, in_axes=(None, 0), axis_name="i")(jnp.float32(1.0), x)
    >>> one = absgd_jax.absgd_weights(lam=1.0)  # one device with the whole batch
    >>> whole = lambda w, x: absgd_jax.weighted_mean(w * x, one.init(), one)[0]
    >>> bool(jnp.allclose(grad, jax.grad(whole)(jnp.float32(1.0), x.reshape(-1))))
    True
  """

  if axis_name is None:
    return jax.value_and_grad(fun, has_aux=has_aux)

  def value_and_grad(params, *args):
    params = device_varying(params, axis_name)
    value, grads = jax.value_and_grad(fun, has_aux=has_aux)(params, *args)
    if has_aux:
      value, aux = value
      value, grads = jax.lax.psum((value, grads), axis_name)
      return (value, aux), grads
    return jax.lax.psum((value, grads), axis_name)

  return value_and_grad
