"""A hyper-parameter sweep as one program: M members trained side by side under one ``jax.jit``.

``absgd-train --config digits-lt --sweep lam=1,2,5,10`` trains four models at once. The train
step of :mod:`absgd_jax.train.step` is ``jax.vmap``-ed over a leading member axis of (state,
batch, hyper-parameters) and compiled once, so a small model that leaves an accelerator idle
(ResNet-32 at batch 128 is launch-bound on a GPU) trains M members for little more than the
price of one. Each member computes exactly what its own single run computes (``Trainer`` with
that member's config); ``tests/test_sweep.py`` checks it to the tolerance of the one-vs-eight
device tests.

What may vary inside one program (``SWEEPABLE``):

- ``lam``: a traced scalar per member (``absgd_weights`` accepts one), also inside the stage-2
  schedule (lam = inf before ``stage2_epoch``). A member with lam = inf trains as plain SGD,
  so a sweep can hold the SGD baseline beside ABSGD.
- ``gamma``: ``absgd_weights`` takes gamma as a Python float, so each distinct gamma gets its
  own weigher and a member picks its own with ``lax.switch`` on a per-member index (under vmap
  every branch runs and a select keeps the member's: a few vector operations per step).
- ``seed``: the init, the augmentation key, the batch order and the seeded data (imbalanced
  subset, validation split, label noise) are each member's own; the members' batches are then
  stacked as ``[M, B, ...]``. Without a seed sweep the members share each batch.

Anything else (the model, the batch size, the data set, ...) changes the program's shapes or
structure, and is refused, naming the key: run such values as separate runs.

On the CPU the members run one after another inside the program instead (``mode="map"``,
the default there): vmapped convolutions with per-member kernels become grouped convolutions,
which XLA:CPU runs far slower than separate ones
(:func:`~absgd_jax.train.members.resolve_mode`).

A sweep is the :class:`~absgd_jax.train.Trainer` run over a member axis
(:mod:`absgd_jax.train.members`): the same loop, checkpoints, resume, settings check, health
checks and records. Its folder is a run folder: ``out_dir/config.json`` holds the base
settings and the grid; a rerun with other settings (or another grid) is refused, naming the
keys (``--new-run`` starts afresh); an interrupted sweep resumes from its members'
checkpoints. Each member's folder ``out_dir/<label>`` holds what a single run's holds
(``config.json``, ``metrics.jsonl``, ``summary.json``, ``checkpoints/``), and
``out_dir/sweep.jsonl`` a row per member: its swept values, resolved config, final metrics,
status and whether it won; ``out_dir/sweep.png`` plots the members' final scores against the
swept values (:func:`~absgd_jax.train.plots.plot_sweep`).

The winner is the healthy member with the best final balanced accuracy on the validation
split (``val_fraction > 0``); without a validation split it is chosen on the test split, and
every record and the printed table say so. A member that diverges is marked ``diverged``
(with the reason) and left out of the choice; the others carry on.
"""

from __future__ import annotations

import itertools
import math
import time
import warnings
from collections.abc import Sequence
from typing import Any

from etils import epath

from absgd_jax.train import console, run_folder
from absgd_jax.train.config import WEIGHTED_METHODS, Config
from absgd_jax.train.members import Member
from absgd_jax.train.health import DivergenceError
from absgd_jax.train.trainer import Trainer

# The settings a member may change inside one compiled program, with their value types.
SWEEPABLE = {"lam": float, "gamma": float, "seed": int}


def parse_sweep(items: Sequence[str]) -> dict[str, tuple[str, ...]]:
  """``["lam=1,2,5", "seed=0,1"]`` -> ``{"lam": ("1", "2", "5"), "seed": ("0", "1")}``.

  Raises:
    ValueError: naming the key, for a malformed item, an unknown or non-sweepable setting, a
      key given twice, an empty list or a repeated value.

  Examples:
    >>> parse_sweep(["lam=1, 2,5"])
    {'lam': ('1', '2', '5')}
  """
  fields = set(Config.settings())
  grid: dict[str, tuple[str, ...]] = {}
  sweepable = ", ".join(SWEEPABLE)
  for item in items:
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key:
      raise ValueError(f"--sweep expects KEY=V1,V2,...; got {item!r} (e.g. lam=1,2,5).")
    if key not in fields:
      raise ValueError(
        f"--sweep {key}: unknown setting {key!r}; the settings a sweep can vary "
        f"in one program are {sweepable}."
      )
    if key not in SWEEPABLE:
      raise ValueError(
        f"--sweep {key}: {key!r} cannot vary inside one compiled program (it changes the "
        f"program's shapes, structure or data); the sweepable settings are {sweepable}. "
        f"Run one absgd-train --set {key}=... per value instead."
      )
    if key in grid:
      raise ValueError(
        f"--sweep {key} is given twice; list all its values in one --sweep {key}=V1,V2,..."
      )
    values = tuple(v.strip() for v in text.split(",") if v.strip())
    if not values:
      raise ValueError(
        f"--sweep {key}= has no values; give a comma-separated list, e.g. "
        f"{key}={'1,2,5' if SWEEPABLE[key] is float else '0,1,2'}."
      )
    grid[key] = values
  if not grid:
    raise ValueError("a sweep needs at least one --sweep KEY=V1,V2,...")
  return grid


def _typed(key: str, text: str) -> Any:
  try:
    return SWEEPABLE[key](text)
  except ValueError:
    raise ValueError(
      f"--sweep {key}: {text!r} is not {'a number' if SWEEPABLE[key] is float else 'an integer'}."
    ) from None


def member_configs(config: Config, grid: dict[str, Sequence[Any]]) -> list[Member]:
  """The sweep's members: the product of the grid's values over ``config``, in grid order.

  Each member's ``out_dir`` is its label's folder under the sweep's: ``config.run.out_dir``, or,
  when none is given (a single run's default would name one lam),
  ``runs/<preset>/<method>-sweep-<keys>-<fingerprint>``.

  Raises:
    ValueError: naming the key, for a value its setting refuses (through :class:`Config`), or
      a setting the method does not use (lam and gamma without ABSGD's weights, gamma with EG).

  Examples:
    >>> from absgd_jax.train import make_config
    >>> cfg = make_config("digits-lt", out_dir="runs/s")
    >>> members = member_configs(cfg, {"lam": ["1", "5"]})
    >>> [(m.label, m.config.weighting.lam, m.config.run.out_dir) for m in members]
    [('lam=1', 1.0, 'runs/s/lam=1'), ('lam=5', 5.0, 'runs/s/lam=5')]
  """
  if not grid:
    raise ValueError("a sweep needs at least one swept setting.")
  typed: dict[str, list[Any]] = {}
  for key, values in grid.items():
    if key not in SWEEPABLE:  # parse_sweep names it; a grid built in Python lands here.
      parse_sweep([f"{key}=" + ",".join(map(str, values))])
    if not values:
      parse_sweep([f"{key}="])
    typed[key] = [_typed(key, v) if isinstance(v, str) else SWEEPABLE[key](v) for v in values]
    if len(set(typed[key])) != len(typed[key]):
      raise ValueError(
        f"--sweep {key}: the values {list(values)} repeat one; each member must differ."
      )
  if config.weighting.kl_budget > 0:
    # The budget's weigher has its own state layout and no traced-lam form: one run each.
    raise ValueError(
      f"--sweep with kl_budget={config.weighting.kl_budget}: a sweep varies a fixed "
      "lam; run a budget as a single run (or sweep with kl_budget=0)."
    )
  if ("lam" in typed or "gamma" in typed) and config.method not in WEIGHTED_METHODS:
    key = "lam" if "lam" in typed else "gamma"
    raise ValueError(
      f"--sweep {key}: method={config.method!r} has no ABSGD weights, so "
      f"{key} changes nothing; sweep it with method absgd, abadam or eg."
    )
  if "gamma" in typed and config.method == "eg":
    raise ValueError(
      "--sweep gamma: method='eg' fixes gamma = 1 (the current batch alone); "
      "sweep gamma with method absgd or abadam."
    )
  root = sweep_dir(config, list(typed))
  members = []
  for combo in itertools.product(*typed.values()):
    values = dict(zip(typed, combo))
    label = ",".join(
      f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items()
    )
    try:
      cfg = config.replace(**values, out_dir=str(epath.Path(root) / label))
    except ValueError as e:
      raise ValueError(f"--sweep member {label}: {e}") from None
    members.append(Member(values, label, cfg))
  return members


def sweep_dir(config: Config, keys: Sequence[str]) -> str:
  """The sweep's folder: ``config.run.out_dir``, else one named by the swept keys and settings."""
  if config.run.out_dir:
    return config.run.out_dir
  return (
    f"runs/{config.run.preset or config.data.dataset}/{config.method}-sweep-{'-'.join(keys)}-"
    f"{run_folder.fingerprint(config)[:8]}"
  )


class Sweep(Trainer):
  """The :class:`~absgd_jax.train.Trainer` over a sweep's members, and the winner's choice.

  ``fit()`` trains every member, as a Trainer's does, and returns each member's summary;
  the sweep's own summary (each member's row, what they were compared on, the winner) is then
  ``result``, written to ``sweep.jsonl``, drawn in ``sweep.png`` and printed as a table.

  Args:
    config: the base config (a preset plus overrides); its ``out_dir`` holds the sweep
      (:func:`sweep_dir` names one when empty).
    grid: ``{key: values}`` (strings or numbers), as :func:`parse_sweep` returns it.
    exp, progress, log, devices, new_run, mode, console: as
      :class:`~absgd_jax.train.Trainer`'s.

  Examples:
    >>> from absgd_jax.train import make_config
    >>> cfg = make_config("digits-lt", epochs=1, checkpoint=False, out_dir="/tmp/absgd-sweep-doc")
    >>> sweep = Sweep(cfg, {"lam": [1, 5]}, progress=False, new_run=True)
    >>> len(sweep.fit()), [m["label"] for m in sweep.result["members"]]
    (2, ['lam=1', 'lam=5'])
    >>> sweep.result["selected_on"]
    'test_balanced_acc'
  """

  def __init__(
    self,
    config: Config,
    grid: dict[str, Sequence[Any]],
    *,
    exp: Any = None,
    progress: bool = True,
    log: bool = True,
    devices: list | None = None,
    new_run: bool = False,
    mode: str = "auto",
    console: bool | None = None,
  ):
    members = member_configs(config, grid)
    config = config.replace(out_dir=sweep_dir(config, list(grid)))
    swept = {k: list(dict.fromkeys(m.values[k] for m in members)) for k in grid}
    self.root = run_folder.RunFolder(config, log=log, checkpoints=False, extra={"sweep": swept})
    self.result: dict[str, Any] | None = None
    super().__init__(
      config,
      exp=exp,
      progress=progress,
      log=log,
      devices=devices,
      new_run=new_run,
      members=members,
      mode=mode,
      console=console,
    )

  def _claim(self, new_run: bool, folders=()) -> None:
    # The sweep's own folder first: its base settings and grid, then every member's.
    super()._claim(new_run, folders=[self.root, *folders])

  def fit(self) -> list[dict[str, Any] | None]:
    """Trains every member to the config's epochs; returns each member's summary (None for
    one that diverged), having set :attr:`result` and written ``sweep.jsonl``.

    Raises:
      DivergenceError: when every member has diverged (``sweep.jsonl`` says so first).
    """
    t0 = time.perf_counter()
    try:
      summaries = super().fit()
    except DivergenceError:
      self._finish(time.perf_counter() - t0)
      raise
    self._finish(time.perf_counter() - t0)
    return summaries

  def _finish(self, wall_time_s: float) -> None:
    key = self.selected_on
    scores = [
      h[-1].get(key) if s == "ok" and h else None for s, h in zip(self.status, self.histories)
    ]
    ok = [i for i, x in enumerate(scores) if x is not None and math.isfinite(x)]
    winner = max(ok, key=lambda i: scores[i]) if ok else None  # ties: the first listed
    rows = [
      {
        "member": i,
        "label": m.label,
        "sweep": m.values,
        "status": self.status[i] + _blown_up(self.histories[i]),
        "selected_on": key,
        "score": scores[i],
        "winner": i == winner,
        "config": run_folder.config_to_dict(m.config),
        "final": self.histories[i][-1] if self.histories[i] else {},
      }
      for i, m in enumerate(self.members)
    ]
    self.root.write("sweep.jsonl", "".join(run_folder.to_json(r) + "\n" for r in rows))
    if self.root.log:
      _plot(rows, key, str(self.root.path / "sweep.png"))
    self.result = {
      "members": rows,
      "selected_on": key,
      "winner": None if winner is None else self.members[winner].label,
      "wall_time_s": wall_time_s,
    }
    self._print(console.sweep_table(self.result))


def _blown_up(history: Sequence[dict[str, Any]]) -> str:
  """What a member's status adds for the blow-ups it survived."""
  epochs = [r["epoch"] for r in history if r.get("blow_up")]
  return f", blew up in epoch {', '.join(map(str, epochs))}" if epochs else ""


def _plot(rows: list[dict[str, Any]], selected_on: str, path: str) -> None:
  """``sweep.png`` (:func:`absgd_jax.train.plots.plot_sweep`); without matplotlib, a warning:
  the sweep's results are in ``sweep.jsonl`` whether or not it can be drawn."""
  try:
    import matplotlib  # noqa: F401
  except ImportError:
    warnings.warn(
      f"matplotlib is not installed, so the sweep writes no {path}: pip install matplotlib "
      "(it comes with absgd_jax[train]).",
      RuntimeWarning,
      stacklevel=3,
    )
    return
  from absgd_jax.train.plots import plot_sweep

  plot_sweep(rows, selected_on, path)


def table(summary: dict[str, Any]) -> str:
  """The sweep's members as a text table (:attr:`Sweep.result`), the winner starred."""
  return console.sweep_table(summary)
