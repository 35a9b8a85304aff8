"""The member axis: M models trained side by side in one compiled program.

The :class:`~absgd_jax.train.Trainer` runs M >= 1 members. One member is a plain run: its
step is :func:`absgd_jax.train.step.make_train_step`'s, jitted. Several (a sweep,
:mod:`absgd_jax.train.sweep`) stack their states along a leading axis, and the same step runs
over it (:func:`over_members`), vectorised (``vmap``) or one member after another (``map``),
compiled once either way. What may differ between members inside one program is what does
not change its shapes: lam (a traced scalar), gamma (a ``lax.switch`` over one weigher per
value) and the seed (init, augmentation key, batch order, seeded data).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

import absgd_jax
from absgd_jax.train import weighting
from absgd_jax.train.step import cast_images, make_train_step

MEMBER_MODES = ("auto", "vmap", "map")


def resolve_mode(mode: str) -> str:
  """``auto`` is ``vmap`` on accelerators and ``map`` on the CPU.

  Under vmap the members' convolutions become one grouped convolution (each member has its
  own kernels), which XLA:CPU runs far slower than M separate ones (docs/results/sweeps.md);
  a GPU or TPU, launch-bound on a small model, gains from it. ``map`` runs the members one
  after another inside the same compiled program (about M times one step).

  Examples:
    >>> resolve_mode("vmap")
    'vmap'
  """
  if mode not in MEMBER_MODES:
    raise ValueError(f"mode={mode!r} is not one of {', '.join(MEMBER_MODES)}.")
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
) -> weighting.Weighting:
  """ABSGD's weighting with a (possibly traced) lam and one of ``gammas`` chosen per member.

  gamma is a Python float inside :func:`absgd_jax.absgd_weights`, so it cannot be traced:
  each gamma gets its own weigher, and ``gamma_index`` (an int32 scalar, traced under vmap)
  picks one with ``lax.switch`` (under vmap every branch runs and a select keeps the
  member's: a few vector operations per step). Their states share one layout.
  """
  if len(gammas) == 1:
    return weighting.absgd(lam, gammas[0])
  transforms = [absgd_jax.absgd_weights(lam, g) for g in gammas]

  def branch(transform, losses, state, mask):
    return transform.update(losses, state, mask=mask)

  def update(losses, state, *, mask=None):
    return jax.lax.switch(
      gamma_index, [functools.partial(branch, t) for t in transforms], losses, state, mask
    )

  return weighting.as_weighting(absgd_jax.Weigher(transforms[0].init, update))


def make_sweep_step(
  model: Any,
  tx: Any,
  loss_fn: Any,
  weighting_for: Callable[[dict[str, jax.Array]], weighting.Weighting],
  preprocess: Any = cast_images,
  *,
  num_classes: int,
  shared_batch: bool = True,
  mode: str = "vmap",
) -> Callable:
  """``sweep_step(states, batch, hyper) -> (states, metrics)`` over a leading member axis.

  Each member runs :func:`absgd_jax.train.step.make_train_step`'s step, with the weighting
  ``weighting_for(hyper)`` builds from its own hyper-parameters (scalars, traced).
  ``states`` and ``hyper``'s arrays lead with the member axis ``M``; ``batch`` is ``[B, ...]``
  and shared (``shared_batch``) or ``[M, B, ...]``. ``mode``: see :func:`resolve_mode`.
  Not jitted: wrap it in ``jax.jit``.
  """

  def member_step(state, batch, hyper):
    step = make_train_step(
      model, tx, loss_fn, weighting_for(hyper), preprocess, num_classes=num_classes
    )
    return step(state, batch)

  return over_members(member_step, mode, (False, shared_batch, False))


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
