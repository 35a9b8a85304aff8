"""A run is its settings: ``out_dir`` holds the resolved config, and a resume must match it.

``config.json`` in ``out_dir`` records every setting and the fingerprint of those that change
the result (:func:`absgd_jax.train.config.fingerprint`). A later run in the same ``out_dir``
resumes only when its fingerprint is the same; otherwise, when there are checkpoints to resume
from, it refuses, naming the settings that differ, unless a new run is asked for.
"""

from __future__ import annotations

import json
from typing import Any

from etils import epath

from absgd_jax.train import config as config_lib
from absgd_jax.train.config import Config

RECORDS = ("checkpoints", "metrics.jsonl", "summary.json", "config.json")


class SettingsMismatchError(ValueError):
  """``out_dir`` holds a run with other settings than the ones asked for."""


def write_atomically(path: epath.Path, text: str) -> None:
  """Writes ``text`` to ``path`` through a temporary file (local disk, GCS, ...)."""
  tmp = path.parent / (path.name + ".tmp")
  tmp.write_text(text)
  tmp.replace(path)


def _settings(config: Config) -> dict[str, Any]:
  return {k: list(v) if isinstance(v, tuple) else v for k, v in vars(config).items()}


def prepare(out: epath.Path, config: Config, *, new_run: bool = False,
            write: bool = True) -> None:
  """Checks that ``out`` holds no run with other settings, then records this run's.

  Raises:
    SettingsMismatchError: naming each differing setting with its two values, when ``out``
      holds a run with other settings and ``new_run`` is False.
  """
  record = out / "config.json"
  ckpts = out / "checkpoints"
  has_checkpoints = ckpts.exists() and any(ckpts.iterdir())
  if new_run:
    if write:
      for name in RECORDS:
        path = out / name
        if path.is_dir():
          path.rmtree()
        elif path.exists():
          path.unlink()
  elif has_checkpoints and record.exists():
    stored = json.loads(record.read_text())["config"]
    diff = config_lib.diff_configs(stored, config)
    if diff:
      was, now = config_lib.result_fields(stored), config_lib.result_fields(config)
      changes = ", ".join(f"{k}: {was.get(k)!r} -> {now.get(k)!r}" for k in diff)
      raise SettingsMismatchError(
          f"{out} holds a run with other settings ({changes}). Resuming it would mix two "
          f"runs. Choose another out_dir, or ask for a new run (--new-run, "
          f"Trainer(..., new_run=True)) to discard the old one.")
  elif has_checkpoints:
    raise SettingsMismatchError(
        f"{out / 'checkpoints'} holds checkpoints but no config.json to say what run made "
        f"them. Choose another out_dir, or ask for a new run to discard them.")
  if write:
    out.mkdir(parents=True, exist_ok=True)
    write_atomically(record, json.dumps({"config": _settings(config),
                                         "fingerprint": config_lib.fingerprint(config)},
                                        indent=1))
