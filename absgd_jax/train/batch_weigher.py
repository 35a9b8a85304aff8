"""How the train step weighs its samples: one interface for none, ABSGD, EG and L2RW.

A :class:`BatchWeigher` is a pair ``init() -> state`` and ``for_batch(batch, variables, step) ->
Weigher``. The train step asks it, once per step, for the weigher of that batch and
hands the weigher to :func:`absgd_jax.weighted_mean`. ABSGD's and EG's weigher is the same
:func:`absgd_jax.absgd_weights` at every step; learning to reweight computes its weights from
the batch's validation rows (``val_images``, ``val_labels``) and the current variables before
the loss is formed. The state is an :class:`absgd_jax.AbsgdWeightsState` for all of them
(``log_s = 0`` where nothing is estimated), so one checkpoint layout fits every method.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

import absgd_jax
from absgd_jax.train.l2rw import l2rw_weights

Batch = dict[str, jax.Array]


class BatchWeigher(NamedTuple):
  """The weigher of each batch: its state's ``init``, and ``for_batch`` the batch's weigher."""

  init: Callable[[], absgd_jax.AbsgdWeightsState]
  # (batch after preprocessing, {"params", "batch_stats"}, step) -> the batch's weigher.
  for_batch: Callable[[Batch, dict[str, Any], jax.Array], absgd_jax.Weigher]
  axis_name: Any = None  # The mapped axis the weigher reduces over, or None.


def _constant(transform: absgd_jax.Weigher) -> BatchWeigher:
  return BatchWeigher(
    transform.init, lambda batch, variables, step: transform, getattr(transform, "axis_name", None)
  )


def uniform(axis_name: Any = None) -> BatchWeigher:
  """Every real sample weighs 1 (SGD, Adam): ABSGD's weights at lam = inf.

  Examples:
    >>> import jax.numpy as jnp, absgd_jax
    >>> w = uniform()
    >>> loss, (_, weights) = absgd_jax.weighted_mean(
    ...     jnp.array([1.0, 3.0, 9.0]), w.init(), w.for_batch({}, {}, 0),
    ...     where=jnp.array([True, True, False]))
    >>> float(loss), weights.tolist()
    (2.0, [1.0, 1.0, 0.0])
  """
  return _constant(absgd_jax.absgd_weights(jnp.inf, axis_name=axis_name))


def absgd(
  lam: float | Callable[[jax.Array], Any], gamma: float = 0.9, *, axis_name: Any = None
) -> BatchWeigher:
  """ABSGD's weights exp(L_i / lam) / s (:func:`absgd_jax.absgd_weights`); EG is gamma = 1."""
  return _constant(absgd_jax.absgd_weights(lam, gamma, axis_name=axis_name))


def kl_budget(
  rho: float,
  gamma: float = 0.9,
  *,
  sign: int = 1,
  start_step: int = 0,
  guard: str = "auto",
  axis_name: Any = None,
) -> BatchWeigher:
  """ABSGD's weights with lam set online by a KL budget (:func:`absgd_jax.kl_absgd_weights`);
  ``sign`` -1 puts the budget on the lam < 0 (label noise) side.

  Before ``start_step`` (Section 3.6's first stage) every real sample weighs 1 and the state
  waits untouched, so the budget's lam is first estimated from the batches of stage 2.
  ``guard`` is the batch guard: "auto" (the side's default), "range", "kl" or "none".
  """
  guard_kw = (
    dict(batch_cap=None)
    if guard == "none"
    else dict(batch_guard=None if guard == "auto" else guard)
  )
  kl = absgd_jax.kl_absgd_weights(rho, gamma, sign=sign, axis_name=axis_name, **guard_kw)

  def for_batch(batch, variables, step):
    del batch, variables

    def update(losses, state, *, mask=None):
      weights, new_state = kl.update(losses, state, mask=mask)
      if start_step <= 0:
        return weights, new_state
      on = step >= start_step
      flat = jnp.ones_like(weights) if mask is None else mask.astype(jnp.float32)
      return (
        jnp.where(on, weights, flat),
        jax.tree.map(lambda new, old: jnp.where(on, new, old), new_state, state),
      )

    return absgd_jax.Weigher(kl.init, update, axis_name)

  return BatchWeigher(kl.init, for_batch, axis_name)


def current_lam(w_state: Any) -> jax.Array:
  """The lam a weight state holds: ABSGD's ``lam``, or a KL budget's (inf until it is set)."""
  if isinstance(w_state, absgd_jax.KlAbsgdWeightsState):  # its sign is in the state
    return jnp.where(w_state.has_lam, absgd_jax.kl_lam(w_state), jnp.inf)
  return w_state.lam


def as_batch_weigher(weigher: BatchWeigher | absgd_jax.Weigher | None) -> BatchWeigher:
  """Accepts a :class:`BatchWeigher`, a bare ``absgd_weights(...)`` transform, or None (uniform)."""
  if weigher is None:
    return uniform()
  if isinstance(weigher, BatchWeigher):
    return weigher
  if isinstance(weigher, absgd_jax.Weigher):
    return _constant(weigher)
  raise TypeError(
    f"weigher must be a BatchWeigher, an absgd_jax.absgd_weights(...) transform or "
    f"None; got {type(weigher).__name__}."
  )


def l2rw(
  apply_fn: Callable[..., Any],
  loss_fn: Callable[..., jax.Array],
  inner_lr: Callable[[jax.Array], Any],
) -> BatchWeigher:
  """Learning to reweight (Ren et al., 2018): weights from a look-ahead step's validation loss.

  The batch carries ``val_images`` and ``val_labels``, a batch of the clean, balanced meta set.
  Runs under ``jax.jit`` only (it has no mapped-axis reductions).

  Args:
    apply_fn: the Linen ``model.apply``.
    loss_fn: the per-sample loss ``(logits, labels, step) -> [B]``.
    inner_lr: the look-ahead step's learning rate, a schedule of the step.
  """
  inert = absgd_jax.absgd_weights(jnp.inf)

  def for_batch(batch, variables, step):
    weights = l2rw_weights(
      apply_fn,
      variables["params"],
      variables["batch_stats"],
      lambda logits, labels: loss_fn(logits, labels, step),
      batch["images"],
      batch["labels"],
      batch["mask"],
      batch["val_images"],
      batch["val_labels"],
      inner_lr(step),
    )

    def update(losses, state, *, mask=None):
      del losses, mask  # the weights are already 0 on padding
      return weights, state

    return absgd_jax.Weigher(inert.init, update)

  return BatchWeigher(inert.init, for_batch, None)
