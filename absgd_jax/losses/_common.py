"""What every loss shares: the checks of its inputs and the pieces of the softmax losses.

The checks run in Python at call or trace time; value checks are skipped for traced arrays,
whose values do not exist yet (:func:`absgd_jax._checks.concrete`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from absgd_jax import _checks


def check_number(
  name: str, value: float, lo: float, hi: float, *, lo_open: bool = False, hi_open: bool = False
) -> float:
  """Returns ``float(value)`` if it lies in the interval, else raises a ValueError."""
  interval = f"{'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
  return _checks.in_interval(name, value, interval)


def check_inputs(
  logits: jax.typing.ArrayLike, labels: jax.typing.ArrayLike, fn: str
) -> tuple[jax.Array, jax.Array]:
  """Checks shapes and dtypes, upcasts logits to at least float32."""
  labels_value = _checks.concrete(labels)
  logits = jnp.asarray(logits)
  labels = jnp.asarray(labels)
  if logits.ndim != 2:
    raise ValueError(f"{fn}: logits must be 2-D [batch, num_classes]; got shape {logits.shape}.")
  if logits.shape[1] < 1:
    raise ValueError(f"{fn}: logits need at least one class; got shape {logits.shape}.")
  if not jnp.issubdtype(logits.dtype, jnp.floating):
    raise ValueError(f"{fn}: logits must be floating point; got dtype {logits.dtype}.")
  if labels.ndim != 1 or labels.shape[0] != logits.shape[0]:
    raise ValueError(
      f"{fn}: labels must be 1-D of length batch = {logits.shape[0]} "
      f"(logits shape {logits.shape}); got shape {labels.shape}."
    )
  if not jnp.issubdtype(labels.dtype, jnp.integer):
    raise ValueError(f"{fn}: labels must be integer class indices; got dtype {labels.dtype}.")
  num_classes = logits.shape[1]
  if labels_value is not None and labels_value.size:
    with jax.ensure_compile_time_eval():
      lo, hi = int(jnp.min(labels_value)), int(jnp.max(labels_value))
    if lo < 0 or hi >= num_classes:
      bad = lo if lo < 0 else hi
      raise ValueError(f"{fn}: labels must lie in [0, {num_classes}); got label {bad}.")
  # Half-precision softmax loses too much for small probabilities; float64 stays float64.
  dtype = jnp.promote_types(logits.dtype, jnp.float32)
  return logits.astype(dtype), labels


def prepare(
  logits: jax.typing.ArrayLike,
  labels: jax.typing.ArrayLike,
  class_weights: jax.typing.ArrayLike | None,
  fn: str,
) -> tuple[jax.Array, jax.Array, jax.Array | None]:
  """The checks every loss opens with: logits and labels (:func:`check_inputs`) and the
  optional ``[C]`` class weights, cast to the logits' dtype."""
  logits, labels = check_inputs(logits, labels, fn)
  if class_weights is not None:
    class_weights = check_class_vector(
      class_weights, logits.shape[1], "class_weights", fn, logits.dtype
    )
  return logits, labels, class_weights


def check_class_vector(
  x: jax.typing.ArrayLike, num_classes: int, name: str, fn: str, dtype: jnp.dtype
) -> jax.Array:
  value = _checks.concrete(x)
  x = jnp.asarray(x)
  if x.shape != (num_classes,):
    raise ValueError(
      f"{fn}: {name} must have shape ({num_classes},), one entry per class; got shape {x.shape}."
    )
  if value is not None:
    with jax.ensure_compile_time_eval():
      finite = bool(jnp.all(jnp.isfinite(value)))
    if not finite:
      raise ValueError(f"{fn}: {name} must be finite; got {value}.")
  return x.astype(dtype)


def check_counts(class_counts: jax.typing.ArrayLike, fn: str) -> jax.Array:
  value = _checks.concrete(class_counts)
  counts = jnp.asarray(class_counts)
  if counts.ndim != 1 or counts.shape[0] == 0:
    raise ValueError(
      f"{fn}: class_counts must be a non-empty 1-D array [num_classes]; got shape {counts.shape}."
    )
  if not (jnp.issubdtype(counts.dtype, jnp.integer) or jnp.issubdtype(counts.dtype, jnp.floating)):
    raise ValueError(f"{fn}: class_counts must be numeric; got dtype {counts.dtype}.")
  if value is not None:
    with jax.ensure_compile_time_eval():
      bad = ~(jnp.isfinite(value) & (value > 0))
      j = int(jnp.argmax(bad)) if bool(jnp.any(bad)) else -1
      bad_count = value[j].item()
    if j >= 0:
      raise ValueError(
        f"{fn}: every class count must be a finite number > 0; class {j} has count {bad_count}."
      )
  return counts.astype(jnp.float32)


def true_class(values: jax.Array, labels: jax.Array) -> jax.Array:
  """values[i, labels[i]]. Out-of-range labels are turned into NaN losses by `finish`."""
  return jnp.take_along_axis(values, labels[:, None], axis=-1)[:, 0]


def log_p_true(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """log p_y, the log-softmax of each sample's true class."""
  return true_class(jax.nn.log_softmax(logits, axis=-1), labels)


def finish(
  loss: jax.Array, labels: jax.Array, num_classes: int, class_weights: jax.Array | None
) -> jax.Array:
  if class_weights is not None:
    loss = loss * class_weights[labels]
  # A traced out-of-range label cannot raise; without this a negative label would wrap to a
  # real class in the gathers above (jnp indexing semantics) and give a plausible but wrong
  # loss.
  ok = (labels >= 0) & (labels < num_classes)
  return jnp.where(ok, loss, jnp.nan)


def integer_label_ce(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """optax's integer-label cross-entropy, on logits shifted so that the row maximum is 0.

  optax forms logsumexp(z) - z_y, which cancels catastrophically for large logits (at 1e4
  the float32 spacing is 1e-3, so a loss of log 2 came out as 0.6934). CE is invariant to
  a per-row shift; after it both terms are O(log C) and exact to float32 precision. The
  shift carries no gradient, which is exact for a shift-invariant function.
  """
  shift = jax.lax.stop_gradient(jnp.max(logits, axis=-1, keepdims=True))
  return optax.losses.softmax_cross_entropy_with_integer_labels(logits - shift, labels)


def one_minus_exp(log_p: jax.Array) -> jax.Array:
  """1 - p from log p, accurate when p is close to 1 (where 1 - exp() cancels)."""
  return -jnp.expm1(log_p)
