"""Settings that cannot work, refused before any data is read, each naming its reason.

The config's validation calls these one per line; they take plain values (not a
:class:`~absgd_jax.train.config.Config`) so that this module imports nothing of the kit.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Mapping
from typing import Any

# Below this fraction of the batch, the effective sample size is a warning (kl_budget).
LOW_ESS_FRACTION = 0.1


def kl_budget(budget: float, batch_size: int) -> None:
  """Refuses a KL budget that no weighting of a batch can reach; warns when it starves the batch.

  The weights over a batch of B samples are a distribution p; the budget holds
  KL(p || uniform) = log B - H(p) near ``budget``, where H is the Shannon entropy.

  - H(p) >= 0, with equality only for all the weight on one sample, so KL <= log B, and a
    budget at or above log B cannot be met by any weighting with finite lam: refused.
  - The effective sample size is ESS = 1 / sum p_i^2 = exp(H_2(p)), H_2 the collision (Renyi
    order-2) entropy. Renyi entropies do not increase with the order, H_2 <= H, so
    ESS <= exp(H) = B exp(-KL), with equality when p is uniform over B exp(-KL) samples (the
    two-level distribution: weight on some samples, none on the rest). At the budget, then,
    ESS <= B exp(-budget), and ESS < B / 10 is certain once budget > log 10 = 2.30, whatever B:
    warned.

  Args:
    budget: ``kl_budget`` (0: off).
    batch_size: the global batch the weights are normalised over.

  Raises:
    ValueError: for ``budget >= log(batch_size)``, naming both and the largest budget allowed.

  Examples:
    >>> kl_budget(0.01, 64)
    >>> kl_budget(10.0, 64)
    Traceback (most recent call last):
    ...
    ValueError: kl_budget=10 cannot be met with batch_size=64: the weights' KL divergence from
    uniform over 64 samples is at most log(64) = 4.159 (all weight on one sample). Choose
    kl_budget < 4.159 (0.01 is the tested choice; below log(10) = 2.303 the effective sample
    size can stay above a tenth of the batch), or a larger batch_size.
  """
  if budget <= 0:
    return
  top = math.log(batch_size)
  if budget >= top:
    raise ValueError(
      f"kl_budget={budget:g} cannot be met with batch_size={batch_size}: the weights' KL "
      f"divergence from uniform over {batch_size} samples is at most log({batch_size}) = "
      f"{top:.3f} (all weight on one sample). Choose kl_budget < {top:.3f} (0.01 is the "
      f"tested choice; below log(10) = {math.log(1 / LOW_ESS_FRACTION):.3f} the effective "
      "sample size can stay above a tenth of the batch), or a larger batch_size."
    )
  if budget > -math.log(LOW_ESS_FRACTION):
    warnings.warn(
      f"kl_budget={budget:g} lets the weights' effective sample size fall to at most "
      f"batch_size * exp(-kl_budget) = {batch_size * math.exp(-budget):.1f} of {batch_size}, "
      f"below a tenth of the batch: most samples would barely count. Budgets up to "
      f"log(10) = {-math.log(LOW_ESS_FRACTION):.3f} keep it possible to stay above a tenth; "
      "0.01 is the tested choice.",
      UserWarning,
      stacklevel=2,
    )


def tfds_data_dir(dataset: str, source: str, data_dir: str) -> None:
  """Refuses ``source="tfds"`` pointed at a local folder that holds no prepared ``dataset``.

  A TFDS data directory holds one folder per data set (``cifar100/<version>/...``). An empty
  ``data_dir`` leaves the choice to tensorflow-datasets (``$TFDS_DATA_DIR``, else
  ``~/tensorflow_datasets``), and a URL (gs://) is left to it too.

  Raises:
    FileNotFoundError: naming ``data_dir`` and what it should hold.
  """
  if source != "tfds" or not data_dir or "://" in data_dir:
    return
  if not os.path.isdir(os.path.join(data_dir, dataset)):
    what = (
      "does not exist"
      if not os.path.exists(data_dir)
      else (f"is not a TFDS data directory: it has no {dataset}/ folder")
    )
    raise FileNotFoundError(
      f"data_dir={data_dir} {what}. With source='tfds', point data_dir at the folder that "
      f"holds the prepared {dataset}/<version>/ files (written by `tfds build {dataset} "
      "--file_format=array_record` on a machine with a network), or set data_dir= (empty) "
      "to use $TFDS_DATA_DIR or ~/tensorflow_datasets."
    )


def moved_schedule(
  out_dir: str,
  saved_epochs: Any,
  epochs: int,
  differ: Mapping[str, tuple[Any, Any]],
  epoch_fields: tuple[str, ...],
) -> str | None:
  """Why a resume with another ``epochs`` is refused, when only the schedule it moved differs.

  Overriding a preset's ``epochs`` moves its epoch-valued fields with it; resuming a run
  with them moved would change the epochs already trained (a longer run with the same
  schedule follows the shorter one epoch for epoch, so extending it is allowed). The message
  names ``epochs`` and the ``--set`` that extends the run with its schedule kept.

  Args:
    out_dir: the run's folder.
    saved_epochs: ``epochs`` in the saved run's settings.
    epochs: ``epochs`` asked for now.
    differ: the differing result fields, each with its (saved, requested) values.
    epoch_fields: the fields that follow ``epochs``.

  Returns:
    The message, or None when other settings differ too (or ``epochs`` did not change).

  Examples:
    >>> print(moved_schedule("runs/a", 4, 6, {"drw_epoch": (3, 5)}, ("drw_epoch",)))
    runs/a holds a run of epochs=4; epochs=6 comes with another schedule (drw_epoch: 3 in the
    saved run, 5 now; a preset's schedule follows epochs unless set), which would change the
    epochs already trained. To train that run on to epochs=6 with its schedule, keep the
    schedule: --set epochs=6 --set drw_epoch=3. Or start afresh with the new schedule:
    --new-run (or another --out).
  """
  if (
    saved_epochs is None
    or int(saved_epochs) == epochs
    or not differ
    or not set(differ) <= set(epoch_fields)
  ):
    return None

  def text(v):
    return ",".join(str(x) for x in v) if isinstance(v, (list, tuple)) else str(v)

  lines = "; ".join(
    f"{k}: {text(old) or 'none'} in the saved run, {text(new) or 'none'} now"
    for k, (old, new) in sorted(differ.items())
  )
  keep = " ".join(f"--set {k}={text(old)}" for k, (old, _) in sorted(differ.items()))
  return (
    f"{out_dir} holds a run of epochs={saved_epochs}; epochs={epochs} comes with another "
    f"schedule ({lines}; a preset's schedule follows epochs unless set), which would "
    "change the epochs already trained. To "
    f"train that run on to epochs={epochs} with its schedule, keep the schedule: "
    f"--set epochs={epochs} {keep}. Or start afresh with the new schedule: --new-run "
    "(or another --out)."
  )
