"""``--new-run``: clears a run folder of what a run writes, whatever state those files are in.

Nothing is read first: a damaged ``config.json``, a checkpoint whose metrics record is garbage
or a cut-short ``metrics.jsonl`` are exactly the folders a user starts afresh in. Only the
names a run writes are removed, never the folder itself or anything else in it (``out_dir``
may be a folder that holds other things).
"""

from __future__ import annotations

import jax
from etils import epath
from jax.experimental import multihost_utils

# What a run writes into its folder (absgd_jax.train.trainer, run_folder, plots; a sweep's
# own folder: sweep.jsonl), and the temporary files it writes them through.
RUN_FILES = (
  "config.json",
  "metrics.jsonl",
  "summary.json",
  "sweep.jsonl",
  "curves.png",
  "class_accuracy.png",
  "class_weights.png",
)
RUN_FOLDERS = ("checkpoints",)


def start_afresh(out_dir: str) -> list[str]:
  """Removes a run's files and checkpoints from ``out_dir``; returns what was removed.

  Args:
    out_dir: the run's folder (local or a URL such as gs://...).

  Returns:
    The names removed, in the order of :data:`RUN_FILES` and :data:`RUN_FOLDERS`.

  Examples:
    >>> import os, tempfile
    >>> d = tempfile.mkdtemp()
    >>> for name in ("config.json", "notes.txt"):
    ...   with open(os.path.join(d, name), "w") as f:
    ...     _ = f.write("{bad")
    >>> os.makedirs(os.path.join(d, "checkpoints", "3"))
    >>> start_afresh(d), sorted(os.listdir(d))
    (['config.json', 'checkpoints/'], ['notes.txt'])
  """
  out = epath.Path(out_dir)
  removed = []
  if not out.exists():
    return removed
  for name in RUN_FILES:
    for path in (out / name, out / (name + ".tmp")):
      if path.exists():
        path.unlink()
        if path.name == name:
          removed.append(name)
  for name in RUN_FOLDERS:
    if (out / name).exists():
      (out / name).rmtree()
      removed.append(name + "/")
  return removed


def start_afresh_on_every_host(out_dirs: list[str]) -> list[list[str]]:
  """:func:`start_afresh` for each folder, on process 0 only; then every process waits there.

  Without the wait, another host of a pod could read the old ``config.json`` or restore the
  old checkpoints before process 0 has removed them, and train from another state than
  process 0's.

  Returns:
    Per folder, the names removed (empty on the other processes).
  """
  removed = [start_afresh(d) if jax.process_index() == 0 else [] for d in out_dirs]
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices("absgd_jax: --new-run has cleared the run folders")
  return removed
