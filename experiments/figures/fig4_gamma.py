"""Figure 4, left: ABSGD's test accuracy against gamma on CIFAR-10-LT, SGD as a dashed line.

    python -m experiments.figures.fig4_gamma [--seeds 0 1 2]     # resumable, then the PNG
    python -m experiments.figures.fig4_gamma --report             # the PNG from the records

The CIFAR-10-LT of ``experiments/cifar_table.py`` at the 20-epoch ``short`` protocol (rho =
100, 16 x 16 images, ResNet-8; ``common.short_lt``) with the values its validation sweep chose: lr
0.1, and for ABSGD (CE) lam = 2 from epoch 16. ABSGD runs gamma in {0.1, 0.3, 0.5, 0.7, 0.9}
(the paper's grid), momentum SGD once per seed. About 3.5 CPU core-minutes a run, 6 runs a
seed. Every finished run is a line of ``experiments/results/fig4_gamma.jsonl``.

``--lam-from E`` switches lam on at epoch E instead (same lam, not tuned for it), so that s
averages over more steps at a higher lr; its ABSGD runs are records of their own and its PNG
is ``fig4_gamma_lam_from{E}.png``. SGD has no lam, so the SGD runs serve every E.
"""

from __future__ import annotations

import os
import statistics

from absgd_jax.train.protocols import PROTOCOLS
from experiments.common import (
  CACHE,
  figure_parser,
  load_jsonl,
  short_lt,
  train_record,
)

GAMMAS = (0.1, 0.3, 0.5, 0.7, 0.9)
TINY_GAMMAS = (0.5,)  # --tiny: SGD and one gamma.
# The epoch the validation sweep chose lam 2 for: the short protocol's first decay.
LAM_FROM = PROTOCOLS["cifar-imbalance"]["short"]["stage2_epoch"]


def _lam_from(rec: dict) -> int:
  return rec.get("stage2_epoch", LAM_FROM)  # Records of the default carry no such field.


def run(records: str, data_dir: str, seeds, tiny: bool = False, lam_from: int = LAM_FROM) -> None:
  from absgd_jax.train.compile_cache import use_compile_cache

  use_compile_cache(CACHE)
  done = load_jsonl(records)
  gammas = TINY_GAMMAS if tiny else GAMMAS
  for seed in seeds:  # Seed-major: a stopped run leaves whole seeds behind it.
    for method, gamma in [("sgd", None)] + [("absgd", g) for g in gammas]:
      over = dict(method=method, seed=seed, **({} if gamma is None else dict(gamma=gamma)))
      fields = dict(method=method, gamma=gamma, seed=seed, tiny=tiny)
      if gamma is not None and lam_from != LAM_FROM:
        over["stage2_epoch"] = fields["stage2_epoch"] = lam_from
      config = short_lt(data_dir, tiny, **over)
      rec = train_record(records, fields, config, done)
      print(
        f"{method:5} gamma {gamma} seed {seed}: test {rec['test_acc']:.4f} "
        f"({rec['cpu_s']:.0f} s CPU)",
        flush=True,
      )


def plot(records: str, out: str, tiny: bool = False, lam_from: int = LAM_FROM) -> dict:
  recs = [r for r in load_jsonl(records).values() if r.get("tiny", False) == tiny]
  sgd = [100 * r["test_acc"] for r in recs if r["method"] == "sgd"]
  by_gamma = {
    g: [
      100 * r["test_acc"]
      for r in recs
      if r["method"] == "absgd" and r["gamma"] == g and _lam_from(r) == lam_from
    ]
    for g in GAMMAS
  }
  gammas = [g for g in GAMMAS if by_gamma[g]]
  from absgd_jax.train.plots import _pyplot

  plt = _pyplot()
  fig, ax = plt.subplots(figsize=(5, 3.6))
  mean = [statistics.mean(by_gamma[g]) for g in gammas]
  std = [statistics.stdev(by_gamma[g]) if len(by_gamma[g]) > 1 else 0.0 for g in gammas]
  ax.errorbar(
    gammas,
    mean,
    yerr=std,
    marker="o",
    capsize=3,
    color="tab:red",
    label=f"ABSGD (CE), lam=2 from epoch {lam_from}",
  )
  if sgd:
    m = statistics.mean(sgd)
    ax.axhline(m, color="tab:green", ls="--", label=f"momentum SGD ({m:.2f})")
    if len(sgd) > 1:
      s = statistics.stdev(sgd)
      ax.axhspan(m - s, m + s, color="tab:green", alpha=0.12)
  n = sorted({len(v) for v in by_gamma.values() if v} | ({len(sgd)} if sgd else set()))
  ax.set_xlabel("gamma"), ax.set_ylabel("test accuracy (%)"), ax.set_xticks(GAMMAS)
  ax.set_title(
    f"CIFAR-10-LT rho=100, 16 px, ResNet-8, 20 epochs; seeds per point: {', '.join(map(str, n))}",
    fontsize=8,
  )
  ax.legend(fontsize=7)
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  fig.savefig(out, dpi=100)
  plt.close(fig)
  print(f"wrote {out}")
  summary = {"sgd": sgd, **{f"gamma={g}": v for g, v in by_gamma.items()}}
  for k, v in summary.items():
    if v:
      print(
        f"{k:10} {statistics.mean(v):.2f}"
        + (f" +- {statistics.stdev(v):.2f}" if len(v) > 1 else "")
        + f" (n={len(v)})"
      )
  return summary


def main(argv=None):
  ap = figure_parser(__doc__, "fig4_gamma")
  ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
  ap.add_argument("--report", action="store_true", help="only the PNG, from the records")
  ap.add_argument(
    "--lam-from",
    type=int,
    default=LAM_FROM,
    help=f"the epoch lam switches on (default {LAM_FROM}, the tuned one)",
  )
  args = ap.parse_args(argv)
  out = args.out
  if args.lam_from != LAM_FROM and out == ap.get_default("out"):
    out = out.replace(".png", f"_lam_from{args.lam_from}.png")
  if not args.report:
    run(args.records, args.data_dir, args.seeds, args.tiny, args.lam_from)
  plot(args.records, out, args.tiny, args.lam_from)


if __name__ == "__main__":
  main()
