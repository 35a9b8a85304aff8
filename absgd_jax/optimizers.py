"""The optimizer half of ABSGD and ABAdam, built from optax's own transforms.

The attentional weights enter through the loss (``mean(w * L)``, see
:mod:`absgd_jax.weights`), so what is left here is the update rule that the paper pairs them
with: heavy-ball momentum with an L2 term (Eq. 2) and Adam with the L2 gradient outside the
adaptive scaling (Eq. 9).

Both are chains of optax parts, so everything optax does to a transform applies:
``optax.inject_hyperparams(absgd)(learning_rate=0.1, momentum=0.9)`` puts the hyper-parameters
in the state, where a schedule or a jitted step can read and change them. The range checks run
at construction on concrete values only; a traced value (under ``inject_hyperparams`` inside
``jit``, or ``vmap`` over a hyper-parameter) is the caller's to keep in range.

References:
  Qi, Q., Xu, Y., Jin, R., Yin, W., Yang, T. (2020). Attentional-Biased Stochastic Gradient
  Descent. arXiv:2012.06951.
"""

from __future__ import annotations

from typing import Any, Literal, NamedTuple, get_args

import jax
import jax.numpy as jnp
import optax

from absgd_jax._checks import concrete_float

ScalarOrSchedule = optax.ScalarOrSchedule


def _check_nonnegative(name: str, value: Any, upper: float | None = None) -> None:
  """Range check of a hyper-parameter, on its concrete value (a schedule's at step 0).

  A traced value (``optax.inject_hyperparams`` calls the factory inside ``jit`` with traced
  hyper-parameters) cannot be checked, and is let through.
  """
  where = ""
  if callable(value):
    try:
      value = value(jnp.zeros([], jnp.int32))
    except TypeError:  # A schedule that takes more than a count is checked nowhere.
      return
    where = " (the schedule's value at step 0)"
  if jnp.ndim(value) != 0:
    raise ValueError(f"{name} must be a scalar; got shape {jnp.shape(value)}.")
  value = concrete_float(value)
  if value is None:
    return
  if not value >= 0.0 or (upper is not None and not value < upper):
    rng = f"[0, {upper:g})" if upper is not None else "[0, inf)"
    raise ValueError(f"{name} must lie in {rng}; got {value}{where}.")


MomentumForm = Literal["pytorch", "paper"]
MOMENTUM_FORMS: tuple[MomentumForm, ...] = get_args(MomentumForm)  # the type, as a tuple


def absgd(
  learning_rate: ScalarOrSchedule,
  momentum: float = 0.9,
  weight_decay: float = 0.0,
  nesterov: bool = False,
  *,
  momentum_form: MomentumForm = "pytorch",
  weight_decay_mask: Any = None,
) -> optax.GradientTransformation:
  r"""Momentum SGD with an L2 term: the paper's Eq. (2).

  .. math::
     w_{t+1} = w_t - \eta_t (G_t + \mu w_t) + \beta (w_t - w_{t-1})

  where :math:`G_t` is the gradient of ``mean(weights * losses)`` and :math:`\mu` the weight
  decay (L2 on the gradient). With a constant learning rate the two ``momentum_form`` s are the
  same update; they differ when the rate changes:

  - ``"pytorch"`` (default): ``torch.optim.SGD`` and ``optax.sgd``. The trace sums raw
    gradients and the current rate scales all of it, so a drop of the rate takes effect at
    once. This is what the authors' experiments ran (``torch.optim.SGD``).
  - ``"paper"``: Eq. (2) to the letter. The rate scales each step's gradient before it enters
    the momentum trace, so after a drop the trace still carries steps taken at the old rate
    and keeps moving the weights at that scale for the ~1/(1 - beta) steps it takes to decay
    (the parity results page measures what that does after a 100x drop). Kept for exact
    reproductions of Eq. (2).

  Args:
    learning_rate: :math:`\eta`, a float or an optax schedule.
    momentum: :math:`\beta` in [0, 1).
    weight_decay: :math:`\mu \ge 0`, added to the gradient as :math:`\mu w`.
    nesterov: use Nesterov momentum instead of heavy-ball.
    momentum_form: ``"pytorch"`` (default) or ``"paper"``, as above.
    weight_decay_mask: optional pytree (or callable) of booleans, as for
      ``optax.add_decayed_weights``: where False, no weight decay (e.g. BatchNorm scales).
      Under ``optax.inject_hyperparams`` a callable mask must be named in ``static_args``
      (``inject_hyperparams(absgd, static_args=("weight_decay_mask",))``), or it would be
      taken for a schedule.

  Returns:
    An ``optax.GradientTransformation``: ``chain(add_decayed_weights, trace,
    scale_by_learning_rate)`` (``"paper"``: the last two swapped).

  Raises:
    ValueError: for a negative or NaN learning rate (a schedule's: at step 0), momentum
      outside [0, 1), a negative weight decay or an unknown ``momentum_form``; concrete
      values only.

  References:
    Qi et al., Attentional-Biased Stochastic Gradient Descent, arXiv:2012.06951, Eq. (2).

  Examples:
    >>> import jax.numpy as jnp, optax, absgd_jax
    >>> opt = absgd_jax.absgd(0.1, momentum=0.5)
    >>> params = {"w": jnp.array([1.0])}
    >>> state = opt.init(params)
    >>> grads = {"w": jnp.array([1.0])}
    >>> u, state = opt.update(grads, state, params)
    >>> u["w"]  # -0.1 * 1
    Array([-0.1], dtype=float32)
    >>> u, state = opt.update(grads, state, params)
    >>> u["w"]  # -0.1 * 1 + 0.5 * (-0.1)
    Array([-0.15], dtype=float32)
  """
  _check_nonnegative("learning_rate", learning_rate)
  _check_nonnegative("momentum", momentum, 1.0)
  _check_nonnegative("weight_decay", weight_decay)
  if momentum_form not in MOMENTUM_FORMS:
    raise ValueError(f"momentum_form must be one of {MOMENTUM_FORMS}; got {momentum_form!r}.")
  decay = optax.add_decayed_weights(weight_decay, weight_decay_mask)
  trace = optax.trace(decay=momentum, nesterov=nesterov)
  rate = optax.scale_by_learning_rate(learning_rate)
  if momentum_form == "paper":
    return optax.chain(decay, rate, trace)
  return optax.chain(decay, trace, rate)


class ScaleByAdamNoBiasCorrectionState(NamedTuple):
  """State of Eq. (9)'s moment estimates, without bias correction."""

  mu: optax.Updates  # First moment v_t, like the params.
  nu: optax.Updates  # Second moment u_t, like the params.


def _scale_by_adam_without_bias_correction(
  b1: float, b2: float, eps: float
) -> optax.GradientTransformation:
  # optax.scale_by_adam always bias-corrects; Eq. (9) as printed does not.
  def init_fn(params):
    zeros = optax.tree.zeros_like(params)
    return ScaleByAdamNoBiasCorrectionState(mu=zeros, nu=zeros)

  def update_fn(updates, state, params=None):
    del params
    mu = optax.tree.update_moment(updates, state.mu, b1, 1)
    nu = optax.tree.update_moment_per_elem_norm(updates, state.nu, b2, 2)
    new_updates = jax.tree.map(lambda m, v: m / (jnp.sqrt(v) + eps), mu, nu)
    return new_updates, ScaleByAdamNoBiasCorrectionState(mu=mu, nu=nu)

  return optax.GradientTransformation(init_fn, update_fn)


def abadam(
  learning_rate: ScalarOrSchedule,
  b1: float = 0.9,
  b2: float = 0.999,
  eps: float = 1e-8,
  weight_decay: float = 0.0,
  bias_correction: bool = True,
  *,
  weight_decay_mask: Any = None,
) -> optax.GradientTransformation:
  r"""Adam for ABSGD's weighted gradient, as in the paper's Eq. (9).

  .. math::
     v_{t+1} = \beta_1 v_t + (1-\beta_1) G_t,\quad
     u_{t+1} = \beta_2 u_t + (1-\beta_2) G_t^2,\quad
     w_{t+1} = w_t - \eta \Big(\frac{v_{t+1}}{\sqrt{u_{t+1}} + G_0} + \mu w_t\Big)

  The L2 gradient :math:`\mu w_t` sits outside the adaptive scaling (decoupled, as in AdamW).
  With ``bias_correction=True`` (default) :math:`v, u` are bias-corrected as in Adam, which
  makes this ``optax.adamw``; with ``False`` it is Eq. (9) to the letter.

  Args:
    learning_rate: :math:`\eta`, a float or an optax schedule.
    b1: :math:`\beta_1` in [0, 1).
    b2: :math:`\beta_2` in [0, 1).
    eps: :math:`G_0 \ge 0`, added to :math:`\sqrt{u}` for stability.
    weight_decay: :math:`\mu \ge 0`.
    bias_correction: whether to bias-correct the moments.
    weight_decay_mask: optional pytree (or callable) of booleans, as for
      ``optax.add_decayed_weights`` (a callable one: see :func:`absgd` about
      ``inject_hyperparams``).

  Returns:
    An ``optax.GradientTransformation``: ``chain(scale_by_adam, add_decayed_weights,
    scale_by_learning_rate)``, which is ``optax.adamw`` with ``bias_correction=True``.

  Raises:
    ValueError: for a negative or NaN learning rate (a schedule's: at step 0), b1 or b2
      outside [0, 1), or a negative eps or weight decay; concrete values only.

  References:
    Qi et al., Attentional-Biased Stochastic Gradient Descent, arXiv:2012.06951, Eq. (9).

  Examples:
    >>> import jax.numpy as jnp, absgd_jax
    >>> opt = absgd_jax.abadam(0.1, bias_correction=False)
    >>> params = {"w": jnp.array([1.0])}
    >>> u, _ = opt.update({"w": jnp.array([2.0])}, opt.init(params), params)
    >>> u["w"]  # -0.1 * (0.1 * 2) / sqrt(0.001 * 4)
    Array([-0.316228], dtype=float32)
  """
  _check_nonnegative("learning_rate", learning_rate)
  _check_nonnegative("b1", b1, 1.0)
  _check_nonnegative("b2", b2, 1.0)
  _check_nonnegative("eps", eps)
  _check_nonnegative("weight_decay", weight_decay)
  if bias_correction:
    scale = optax.scale_by_adam(b1=b1, b2=b2, eps=eps)
  else:
    scale = _scale_by_adam_without_bias_correction(b1, b2, eps)
  return optax.chain(
    scale,
    optax.add_decayed_weights(weight_decay, weight_decay_mask),
    optax.scale_by_learning_rate(learning_rate),
  )
