"""The argument checks of the core, written once: every weigher, loss and optimizer calls these.

Each check runs in Python, at construction or at trace time, so a bad value is refused before
anything is compiled, with a message that names the argument and what to change. A value that
is traced (a lam swept under ``vmap``, a hyper-parameter under ``inject_hyperparams``) has no
value yet and is let through: :func:`concrete` says which is which.

The messages about a wrong kind of object (a weigher passed as its own state, a state restored
by orbax as a dict) exist because these are the mix-ups users make; they name the fix.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from absgd_jax.weigher import Weigher

# The errors jax raises when Python asks a traced value for its value.
_TRACED = (
  jax.errors.ConcretizationTypeError,
  jax.errors.TracerArrayConversionError,
  jax.errors.TracerIntegerConversionError,
  jax.errors.TracerBoolConversionError,
)


def concrete(x: Any) -> np.ndarray | None:
  """``x`` as a NumPy array, or None when it is traced and has no value yet.

  Inside ``jit``, ``jnp.asarray`` stages even a NumPy constant into a tracer; converting with
  NumPy instead keeps a closed-over constant (class counts, say) checkable there.
  """
  try:
    return np.asarray(x)
  except _TRACED:
    return None


def concrete_float(x: Any) -> float | None:
  """``x`` as a Python float, or None when it is traced."""
  value = concrete(x)
  return None if value is None else float(value)


def in_interval(name: str, value: Any, interval: str, hint: str = "") -> float:
  """``float(value)``, refused unless it lies in ``interval`` ("(0, 1]", "[0, inf)", ...)."""
  try:
    v = float(value)
  except (TypeError, *_TRACED) as e:
    raise ValueError(
      f"{name} must be a Python number (it is a static hyper-parameter); got {value!r}."
    ) from e
  low, high = (float(b) for b in interval[1:-1].split(","))
  ok = (v > low if interval[0] == "(" else v >= low) and (
    v < high if interval[-1] == ")" else v <= high
  )
  if math.isnan(v) or not ok:
    raise ValueError(f"{name} must lie in {interval}; got {value!r}.{hint}")
  return v


def gamma(value: Any) -> float:
  """The moving-average rate of s, in (0, 1] (Algorithm 1, step 4)."""
  return in_interval("gamma", float(value), "(0, 1]")


def lam_value(lam: Any, what: str = "lam") -> float:
  """A concrete lam: nonzero and not NaN as the float32 it is computed in (+-inf is ERM)."""
  lam = float(lam)
  # 1e-46 is nonzero as a Python float and 0 in float32.
  if math.isnan(lam) or float(np.float32(lam)) == 0.0:
    raise ValueError(
      f"{what} must be a nonzero number (lam > 0 for imbalance, lam < 0 for label noise, "
      f"+-inf for plain ERM) representable in float32; got {lam}."
    )
  return lam


def lam_at_update(lam_t: jax.Array, count: jax.Array) -> None:
  """A schedule's lam at this update, when it is known (an eager, un-jitted update)."""
  value = concrete_float(lam_t)
  if value is not None and (math.isnan(value) or value == 0.0):
    raise ValueError(
      f"lam is {value} at update {int(count)}; lam must be nonzero and not NaN. Give that "
      "stage of the schedule a nonzero lam, or +-inf for plain (unweighted) ERM."
    )


def lam_schedule(lam: Any, num_steps: int | None) -> Callable[[jax.Array], Any]:
  """lam as a function of the update count, each value that is concrete now checked."""
  if callable(lam):
    if num_steps is not None:
      _schedule_values(lam, int(num_steps))
    first = concrete_float(lam(jnp.zeros([], jnp.int32)))
    if first is not None:
      lam_value(first, "lam schedule's value at step 0")
    return lam
  if isinstance(lam, (jax.Array, np.ndarray)):
    if jnp.shape(lam) != ():
      raise ValueError(
        f"lam must be a scalar; got an array of shape {jnp.shape(lam)}. To sweep "
        "several lam values, jax.vmap over them."
      )
    value = concrete_float(lam)
    if value is None:  # Traced (under vmap or jit): a value of the program, checked nowhere.
      traced = jnp.asarray(lam, jnp.float32)
      return lambda count: traced
    lam = value
  value = lam_value(lam)
  return lambda count: value


def _schedule_values(schedule: Callable, num_steps: int) -> None:
  """Every value of a schedule over ``num_steps`` updates, refused at the first 0 or NaN.

  A schedule that closes over a traced value cannot be evaluated now, and is left to the
  documented run-time behaviour.
  """
  steps = jnp.arange(num_steps, dtype=jnp.int32)
  try:
    values = jax.vmap(schedule)(steps)
  except _TRACED:  # Python control flow on the count: one call per step instead.
    values = jnp.stack([jnp.asarray(schedule(t), jnp.float32) for t in steps])
  values = concrete(values)
  if values is None:
    return
  values = values.astype(np.float32)
  bad = np.flatnonzero(np.isnan(values) | (values == 0))
  if bad.size:
    raise ValueError(
      f"the lam schedule is {values[bad[0]]} at step {bad[0]} (of {num_steps}); lam must "
      "be nonzero and not NaN at every step. Give that stage a nonzero lam, or +-inf "
      "for plain (unweighted) ERM."
    )


def losses_and_mask(name: str, losses: Any, mask: Any) -> tuple[jax.Array, jax.Array]:
  """A weigher's inputs as float32 losses without gradient and the boolean ``valid [B]``.

  A sample is valid when its loss is finite and ``mask`` (if given) marks it real: a NaN or
  infinite loss, or padding, gets weight 0 and is left out of every batch statistic.
  """
  losses = jnp.asarray(losses)
  if losses.ndim != 1:
    raise ValueError(
      f"{name} expects a 1-D vector of per-sample losses of shape [batch]; got shape "
      f"{losses.shape}. Reduce the other axes (e.g. mean over tokens) before weighting."
    )
  if losses.shape[0] == 0:
    raise ValueError(f"{name} got an empty batch (losses of shape (0,)).")
  if not jnp.issubdtype(losses.dtype, jnp.floating):
    raise ValueError(f"losses must be floating point; got dtype {losses.dtype}.")
  losses = jax.lax.stop_gradient(losses).astype(jnp.float32)
  valid = jnp.isfinite(losses)
  if mask is not None:
    mask = jnp.asarray(mask)
    if mask.shape != losses.shape:
      raise ValueError(f"mask must have the shape of losses {losses.shape}; got {mask.shape}.")
    boolean_mask("mask", mask)
    valid = valid & mask
  return losses, valid


def boolean_mask(name: str, mask: jax.Array, fix: str | None = None) -> None:
  """A mask marks real samples; a float mask of 0.5 would silently count as True."""
  if mask.dtype != jnp.bool_:
    raise ValueError(
      f"{name} must be boolean (True for a real sample, False for padding); got dtype "
      f"{mask.dtype}. Pass `{fix or name + ' > 0'}` for a 0/1 mask; to weigh samples, scale "
      "the losses."
    )


def no_init_args(name: str, args: tuple, kwargs: dict) -> None:
  """optax.chain and optax.MultiSteps call ``init(params)``: name that mix-up."""
  if args or kwargs:
    raise TypeError(
      f"{name}(...).init() takes no arguments: the weigher is not an optax "
      "GradientTransformation and does not go in optax.chain or optax.MultiSteps (a "
      "transform sees only the averaged gradient, too late to weight each sample). Weight "
      "the loss instead: `loss, (w_state, w) = absgd_jax.weighted_mean(losses, w_state, "
      "weigher)` inside the function you differentiate, and give the optimizer alone "
      "(absgd_jax.absgd / abadam, or any optax one) to optax."
    )


# The core's weigher states, each registered where it is defined (:func:`weigher_state_class`),
# so that a state handed to the wrong weigher, or in the wrong argument, is named as such.
STATE_CLASSES: list[type] = []


def weigher_state_class(cls: type) -> type:
  """Registers ``cls`` as one of the core's weigher states (a class decorator)."""
  STATE_CLASSES.append(cls)
  return cls


def describe(x: Any) -> str:
  """What ``x`` is, in the words an error message about a swapped argument needs."""
  if isinstance(x, Weigher):
    maker = getattr(x.update, "__qualname__", "").split(".")[0]
    if maker in ("absgd_weights", "kl_absgd_weights"):
      return f"a weigher (the Weigher from {maker}(...))"
    return "a weigher (a Weigher)"
  name = type(x).__name__
  article = "an" if name[0] in "AEIOUaeiou" else "a"
  if isinstance(x, tuple) and hasattr(x, "_fields"):
    return f"{article} {name} (a weigher's state)"
  return f"{article} {name}"


def weigher_state(name: str, value: Any, cls: type) -> None:
  """Refuses the ways a wrong object reaches ``update`` as the state, naming the fix of each.

  Only these are refused (the weigher itself, another weigher's state, a dict): any other
  kind is let through, as a custom weigher's state may be a pytree of its own.
  """
  if isinstance(value, cls):
    return
  if isinstance(value, Weigher):
    raise TypeError(
      f"{name}(...).update(losses, state): the state argument is {describe(value)}; pass "
      f"the weigher's state instead (weigher.init(), or the state the last update "
      f"returned). Did you swap the weigher and its state?"
    )
  if isinstance(value, tuple(STATE_CLASSES)):
    raise TypeError(
      f"{name}(...).update got {describe(value)}, the state of another weigher; pass the "
      f"state this weigher's init() returned (a {cls.__name__})."
    )
  if isinstance(value, Mapping):
    raise TypeError(
      f"{name}(...).update got a dict as its state, which is what orbax gives back for a "
      f"{cls.__name__} restored without a target: restore it with "
      f"absgd_jax.{cls.__name__}.from_dict(...) (or pass orbax the target "
      f"{{..., 'w_state': weigher.init()}}). Got keys {sorted(value)}."
    )


def state_from_dict(cls: type, tree: Any, dtypes: Mapping[str, Any]) -> Any:
  """``cls`` (a weigher's state) from the dict of its fields, each cast to its dtype."""
  name = cls.__name__
  article = "an" if name[0] in "AEIOU" else "a"
  if not isinstance(tree, Mapping):
    raise TypeError(f"{name}.from_dict takes a dict; got {type(tree).__name__}.")
  missing = [k for k in cls._fields if k not in tree]
  extra = [k for k in tree if k not in cls._fields]
  if missing or extra:
    raise ValueError(
      f"not {article} {name}: missing keys {missing}, unexpected keys {extra} (the state has "
      f"{list(cls._fields)}). Restore the right sub-tree of the checkpoint."
    )
  return cls(**{k: jnp.asarray(tree[k], dtypes[k]) for k in cls._fields})


_WEIGHTED_MEAN = "weighted_mean(losses, state, weigher, where=None)"


def weighted_mean_arguments(losses: Any, state: Any, weigher: Any) -> None:
  """Refuses arguments of the wrong kind to weighted_mean, naming which argument is which."""
  for i, arg in ((1, losses), (2, state)):
    if isinstance(arg, Weigher):
      which = (
        "the per-sample losses [B]"
        if i == 1
        else "the weigher's state (weigher.init(), or the state the last step returned)"
      )
      raise TypeError(
        f"{_WEIGHTED_MEAN}: the {('first', 'second')[i - 1]} argument must be {which}; got "
        f"{describe(arg)}. Did you swap the arguments? The weigher comes third."
      )
  states = tuple(STATE_CLASSES)
  if isinstance(losses, states):
    raise TypeError(
      f"{_WEIGHTED_MEAN}: the first argument must be the per-sample losses [B]; got "
      f"{describe(losses)}. The state comes second."
    )
  # A dict with a known state's keys; any other dict may be a custom weigher's own state.
  kind = isinstance(state, Mapping) and next(
    (cls for cls in states if set(state) == set(cls._fields)), None
  )
  if kind:
    raise TypeError(
      f"{_WEIGHTED_MEAN}: the second argument (the weigher's state) is a dict, which is what "
      f"orbax gives back for a state restored without a target: restore it with "
      f"absgd_jax.{kind.__name__}.from_dict(...), or pass orbax the target "
      f"{{..., 'w_state': weigher.init()}}."
    )
  if not callable(getattr(weigher, "update", None)):
    hint = " Did you swap the state and the weigher?" if isinstance(weigher, states) else ""
    raise TypeError(
      f"{_WEIGHTED_MEAN}: the third argument must be the weigher (from absgd_jax.absgd_weights "
      f"or kl_absgd_weights); got {describe(weigher)}.{hint}"
    )
