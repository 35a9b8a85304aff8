"""The member axis: M >= 1 models trained side by side in one compiled program.

The :class:`~absgd_jax.train.Trainer` runs M members, whose states are stacked along a
leading axis: a plain run is one member, a sweep (:mod:`absgd_jax.train.sweep`) several. The
step of :func:`absgd_jax.train.step.make_train_step` runs over that axis
(:func:`make_member_step`), vectorised (``vmap``) or one member after another (``map``),
compiled once either way; one member runs as the plain step itself. What may differ between
members inside one program is what does not change its shapes: lam (a traced scalar), gamma
(a ``lax.switch`` over one weigher per value) and the seed (init, augmentation key, batch
order, seeded data).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

import absgd_jax
from absgd_jax.train import batch_weigher, setup
from absgd_jax.train.step import cast_images, make_eval_step, make_train_step

MEMBER_MODES = ("auto", "vmap", "map")


def resolve_mode(mode: str, members: int = 2) -> str:
  """``auto`` is ``vmap`` on accelerators and ``map`` on the CPU; one member is ``map``.

  Under vmap the members' convolutions become one grouped convolution (each member has its
  own kernels), which XLA:CPU runs far slower than M separate ones (docs/results/sweeps.md);
  a GPU or TPU, launch-bound on a small model, gains from it. ``map`` runs the members one
  after another inside the same compiled program (about M times one step), and a single
  member under ``map`` is exactly the plain step.

  Examples:
    >>> resolve_mode("vmap"), resolve_mode("vmap", members=1)
    ('vmap', 'map')
  """
  if mode not in MEMBER_MODES:
    raise ValueError(f"mode={mode!r} is not one of {', '.join(MEMBER_MODES)}.")
  if members == 1:
    return "map"
  if mode == "auto":
    return "map" if jax.default_backend() == "cpu" else "vmap"
  return mode


def stack(trees: Sequence[Any]) -> Any:
  """The trees stacked along a new leading (member) axis."""
  return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def take(tree: Any, i: int) -> Any:
  """Member ``i`` of a stacked tree."""
  return jax.tree.map(lambda x: x[i], tree)


def over_members(fn: Callable, mode: str, shared: tuple[bool, ...]) -> Callable:
  """``fn`` over a leading member axis of its arguments, except those marked ``shared``:
  vectorised (``vmap``) or one member after another (``map``), in one program either way."""
  if resolve_mode(mode) == "vmap":
    return jax.vmap(fn, in_axes=tuple(None if s else 0 for s in shared))

  def mapped(*args):
    # Unrolled rather than lax.map: XLA:CPU ran a ResNet step inside lax.map's loop many
    # times slower than the same step alone (docs/results/sweeps.md).
    size = jax.tree.leaves(args[0])[0].shape[0]
    return stack([fn(*(a if s else take(a, i) for a, s in zip(args, shared))) for i in range(size)])

  return mapped


def swept_absgd(
  lam: Any, gammas: Sequence[float], gamma_index: jax.Array | None = None
) -> batch_weigher.BatchWeigher:
  """ABSGD's batch weigher with a (possibly traced) lam and one of ``gammas`` chosen per member.

  gamma is a Python float inside :func:`absgd_jax.absgd_weights`, so it cannot be traced:
  each gamma gets its own weigher, and ``gamma_index`` (an int32 scalar, traced under vmap)
  picks one with ``lax.switch`` (under vmap every branch runs and a select keeps the
  member's: a few vector operations per step). Their states share one layout.
  """
  if len(gammas) == 1:
    return batch_weigher.absgd(lam, gammas[0])
  transforms = [absgd_jax.absgd_weights(lam, g) for g in gammas]

  def branch(transform, losses, state, mask):
    return transform.update(losses, state, mask=mask)

  def update(losses, state, *, mask=None):
    return jax.lax.switch(
      gamma_index, [functools.partial(branch, t) for t in transforms], losses, state, mask
    )

  return batch_weigher.as_batch_weigher(absgd_jax.Weigher(transforms[0].init, update))


def make_member_step(
  model: Any,
  tx: Any,
  loss_fn: Any,
  configs: Sequence[Any],
  steps_per_epoch: int,
  preprocess: Any = cast_images,
  *,
  num_classes: int,
  shared_batch: bool = True,
  mode: str = "vmap",
) -> Callable:
  """``step(states, batch) -> (states, metrics)`` over a leading member axis of ``states``.

  Each member runs :func:`absgd_jax.train.step.make_train_step`'s step with its own
  hyper-parameters (lam, gamma) where they differ between ``configs``, traced per member; the
  rest is the first config's. ``batch`` is ``[B, ...]`` and shared (``shared_batch``) or
  ``[M, B, ...]``. ``mode``: see :func:`resolve_mode`. Not jitted: wrap it in ``jax.jit``.
  """
  hyper, gammas = member_hyper(configs)
  shared = setup.make_batch_weigher(configs[0], steps_per_epoch, model.apply, loss_fn)

  def member_step(state, batch, h):
    if h:  # lam or gamma differ: this member's, traced, over the first config's schedule
      lam = setup.lam_schedule(configs[0], steps_per_epoch, h.get("lam"))
      weigher = swept_absgd(lam, gammas, h.get("gamma_index"))
    else:
      weigher = shared
    step = make_train_step(model, tx, loss_fn, weigher, preprocess, num_classes=num_classes)
    return step(state, batch)

  step = over_members(member_step, resolve_mode(mode, len(configs)), (False, shared_batch, False))
  return lambda states, batch: step(states, batch, hyper)


def make_member_eval_step(
  model: Any,
  members: int,
  preprocess: Any = cast_images,
  *,
  num_classes: int,
  shared_batch: bool = True,
  mode: str = "vmap",
) -> Callable:
  """``eval_step(states, batch)`` (:func:`absgd_jax.train.step.make_eval_step`'s) over the
  member axis: per-class sums ``[M, C]``."""
  step = make_eval_step(model, num_classes=num_classes, preprocess=preprocess)
  return over_members(step, resolve_mode(mode, members), (False, shared_batch))


def member_hyper(configs: Sequence[Any]) -> tuple[dict[str, jax.Array], tuple[float, ...]]:
  """The per-member arrays of the hyper-parameters that differ between ``configs`` (lam,
  an index into the distinct gammas), and those gammas (EG's is 1)."""
  hyper = {}
  lams = [c.weighting.lam for c in configs]
  if len(set(lams)) > 1:
    hyper["lam"] = jnp.asarray(lams, jnp.float32)
  each = [1.0 if c.method == "eg" else c.weighting.gamma for c in configs]
  gammas = tuple(dict.fromkeys(each))
  if len(gammas) > 1:
    hyper["gamma_index"] = jnp.asarray([gammas.index(g) for g in each], jnp.int32)
  return hyper, gammas


class Member(NamedTuple):
  """One model of a run: its swept values, its name and its whole config (a plain run is one
  member with no values and an empty label)."""

  values: dict[str, Any]  # e.g. {"lam": 5.0, "seed": 1}
  label: str  # e.g. "lam=5,seed=1": also its folder under the sweep's out_dir
  config: Any  # its Config, out_dir its own folder

  @property
  def prefix(self) -> str:
    """How messages about this member begin: ``"member lam=5: "``, or nothing for a run."""
    return f"member {self.label}: " if self.label else ""
