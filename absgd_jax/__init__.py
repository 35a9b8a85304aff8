"""absgd_jax: ABSGD (attentional-biased SGD) for JAX and Optax.

The core, importable with jax and optax alone:

- :class:`Weigher`: what turns a batch's per-sample losses into weights (``init``, ``update``).
- :func:`absgd_weights`: per-sample weights exp(L_i / lam) / s with s carried in a state.
- :func:`kl_absgd_weights`: the same weights with lam set online by a KL budget rho.
- :func:`weighted_mean`: the loss of Eq. (2), mean(w * L) over the valid samples.
- :func:`absgd`, :func:`abadam`: the optimizers the weights are paired with (Eqs. 2 and 9).
- :func:`dro_objective`: the DRO risk ABSGD minimises (Eq. 6).
- :func:`global_value_and_grad`: the global batch's loss and gradient under ``pmap`` or
  ``shard_map``, right with or without ``check_vma``.
- diagnostics: :func:`effective_sample_size`, :func:`class_mean_weights`, :func:`weight_stats`.
- :mod:`absgd_jax.losses`: per-sample losses for imbalance and label noise.

References:
  Qi, Q., Xu, Y., Jin, R., Yin, W., Yang, T. (2020). Attentional-Biased Stochastic Gradient
  Descent. arXiv:2012.06951.
"""

from absgd_jax import losses
from absgd_jax.diagnostics import class_mean_weights, effective_sample_size, weight_stats
from absgd_jax.global_batch import global_value_and_grad
from absgd_jax.kl_weights import KlAbsgdWeightsState, kl_absgd_weights, kl_lam
from absgd_jax.objective import dro_objective
from absgd_jax.optimizers import abadam, absgd
from absgd_jax.weigher import Weigher
from absgd_jax.weighted_loss import weighted_mean
from absgd_jax.weights import AbsgdWeightsState, absgd_weights

__version__ = "0.1.0"  # The one place the version is written (pyproject.toml reads it).

__all__ = [
  "AbsgdWeightsState",
  "KlAbsgdWeightsState",
  "Weigher",
  "abadam",
  "absgd",
  "absgd_weights",
  "class_mean_weights",
  "dro_objective",
  "effective_sample_size",
  "global_value_and_grad",
  "kl_absgd_weights",
  "kl_lam",
  "losses",
  "weight_stats",
  "weighted_mean",
]
