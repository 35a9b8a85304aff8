"""The KL budget's batch guard on each side of lam: which bound lets the budget be met, and
which protects a batch from one sample taking its weight.

    python -m experiments.kl_guard fixed      # fixed batches, every candidate, both signs
    python -m experiments.kl_guard digits     # digits with 40% label noise, lam < 0, 3 seeds
    python -m experiments.kl_guard report     # the tables from the records

The candidates (docs/kl_budget.md, section 4 derives them):

- ``range``: |lam| >= R / sqrt(8 cap rho), R the batch's loss range (Hoeffding's lemma);
- ``low_end``: |lam| >= (mean L - min L) / (cap rho) for lam < 0 ((max L - mean L) for
  lam > 0), the one-sided bound KL <= (max z - mean z);
- ``quantile``: the range guard on the 10%-90% quantile range, a robust range;
- ``low_half``: the range guard on median - min with the cap less log 2 (lam < 0: the upper
  half, down-weighted, may cost at most log 2);
- ``kl``: the smallest |lam| whose batch KL is cap rho, by bisection (exact);
- ``none``: no guard.

``fixed`` runs the budget's update on a fixed batch until lam settles and reports the KL
reached against the budget, then feeds one batch with an outlier (one loss far above the rest
for lam > 0, one far below for lam < 0) and reports that batch's KL and largest weight. The
library's guards (``range``, ``kl``, ``none``) run through ``kl_absgd_weights``; the others
through a float64 NumPy copy of the same update, which also runs ``range`` and ``kl`` so that
the two can be compared. ``digits`` trains the kit's ``digits-noise`` preset with the budget
(``kl_budget``, lam < 0) for each library guard and budget, beside the fixed lam = -1 and SGD.
Records: ``experiments/results/kl_guard.jsonl``.
"""

from __future__ import annotations

import argparse
import math
import statistics

import numpy as np

from experiments import common

RESULTS = common.results_path("kl_guard")
CAP = 4.0
RHOS = (0.1, 0.25, 0.5)
LIBRARY = ("range", "kl", "none")
CANDIDATES = ("range", "low_end", "quantile", "low_half", "kl", "none")


def batches(seed: int = 0) -> dict[str, np.ndarray]:
  """The fixed batches of 128 losses: calm ones, and one loss-shape per side."""
  rng = np.random.default_rng(seed)
  return {
    # The batch of the KL-budget page: exponential losses with mean 0.5.
    "exponential": rng.exponential(0.5, 128),
    # CE under 40% label noise: clean losses near 0, flipped ones large.
    "noisy CE": np.concatenate([rng.exponential(0.3, 77), 2.5 + rng.exponential(1.5, 51)]),
  }


def outlier(losses: np.ndarray, sign: int) -> np.ndarray:
  """The batch with its first loss moved far from the rest, on the side that sign favours."""
  out = losses.copy()
  out[0] = losses.max() + 60.0 if sign > 0 else losses.min() - 60.0
  return out


def _kl(losses: np.ndarray, lam: float) -> float:
  z = losses / lam
  p = np.exp(z - z.max())
  p /= p.sum()
  return float(np.sum(p * np.log(len(p) * p + 1e-300)))


def _root(losses: np.ndarray, budget: float, sign: int) -> float:
  """|lam| with KL(softmax(L / lam) || u) = budget (KL falls as |lam| grows)."""
  lo, hi = -30.0, 30.0
  for _ in range(200):
    mid = 0.5 * (lo + hi)
    lo, hi = (mid, hi) if _kl(losses, sign * math.exp(mid)) > budget else (lo, mid)
  return math.exp(hi)


def guard_lam(name: str, losses: np.ndarray, sign: int, lam: float, budget: float) -> float:
  """The |lam| each candidate guard asks for on this batch (0: no lift)."""
  L = np.asarray(losses, np.float64)
  if name == "none":
    return 0.0
  if name == "range":
    return (L.max() - L.min()) / math.sqrt(8 * budget)
  if name == "low_end":
    return ((L.mean() - L.min()) if sign < 0 else (L.max() - L.mean())) / budget
  if name == "quantile":
    return (np.quantile(L, 0.9) - np.quantile(L, 0.1)) / math.sqrt(8 * budget)
  if name == "low_half":
    if sign > 0:
      return guard_lam("range", L, sign, lam, budget)
    return (np.median(L) - L.min()) / math.sqrt(8 * max(budget - math.log(2), 1e-3))
  if name == "kl":
    return _root(L, budget, sign) if _kl(L, sign * lam) > budget else 0.0
  raise ValueError(name)


def numpy_run(losses, rho, sign, guard, steps=600, gamma=0.9, lam_lr=0.05):
  """The budget's update (docs/kl_budget.md, section 2) in float64 with a candidate guard;
  returns the last |lam| used and that batch's weights."""
  L = np.asarray(losses, np.float64)
  lam_dual, s, w, lam = L.std() / math.sqrt(2 * rho), None, None, None
  for _ in range(steps):
    lam, restart = lam_dual, s is None
    g = guard_lam(guard, L, sign, lam_dual, CAP * rho)
    if g > lam:
      lam, restart = g, True
    e = np.exp(L / (sign * lam))
    s = e.mean() if restart else (1 - gamma) * s + gamma * e.mean()
    w = e / s
    kl = np.mean(w * np.log(w) - w + 1)
    new = lam * math.exp(float(np.clip(lam_lr * (kl - rho) / rho, -0.5, 0.5)))
    s = math.exp((lam * math.log(s) - kl * (new - lam)) / new)
    lam_dual = new
  return lam_dual, lam, w


def library_run(losses, rho, sign, guard, steps=600):
  """The same with ``kl_absgd_weights``; returns the state and a jitted update."""
  import jax
  import jax.numpy as jnp

  import absgd_jax

  kw = dict(batch_cap=None) if guard == "none" else dict(batch_guard=guard)
  wt = absgd_jax.kl_absgd_weights(rho, 0.9, sign=sign, **kw)
  update = jax.jit(wt.update)
  state = wt.init()
  x = jnp.asarray(losses, jnp.float32)
  for _ in range(steps):
    _, state = update(x, state)
  return state, update


def fixed(results: str = RESULTS) -> None:
  import jax.numpy as jnp

  import absgd_jax

  done = common.load_jsonl(results)
  for batch_name, losses in batches().items():
    for rho in RHOS:
      for sign in (1, -1):
        for guard in CANDIDATES:
          for impl in ("library", "numpy") if guard in LIBRARY else ("numpy",):
            fields = dict(
              study="fixed", batch=batch_name, rho=rho, sign=sign, guard=guard, impl=impl
            )
            key = common.run_key(fields)
            if key in done:
              continue
            spiky = outlier(losses, sign).astype(np.float32)
            if impl == "library":
              state, update = library_run(losses, rho, sign, guard)
              lam = float(absgd_jax.kl_lam(state))
              w, _ = update(jnp.asarray(spiky), state)
              w = np.asarray(w, np.float64)
            else:
              dual, _, _ = numpy_run(losses, rho, sign, guard)
              lam = sign * dual
              # The outlier batch: the guard's lift at that dual lam, on the spiky losses.
              g = guard_lam(guard, spiky, sign, dual, CAP * rho)
              used = max(dual, g)
              e = np.exp(spiky / (sign * used) - (spiky / (sign * used)).max())
              w = len(e) * e / e.sum()
            p = w / w.sum()
            rec = dict(
              fields,
              key=key,
              lam=lam,
              kl_reached=_kl(np.asarray(losses, np.float64), lam),
              outlier_kl=float(np.sum(p * np.log(len(p) * p + 1e-300))),
              outlier_max_weight=float(w.max() / w.mean()),
            )
            common.append_record(results, rec)
            done[key] = rec
            print(
              f"{batch_name} rho={rho} sign={sign:+d} {guard:9s} {impl:7s}: KL "
              f"{rec['kl_reached']:.3f}; outlier batch KL {rec['outlier_kl']:.3f}, max weight "
              f"{rec['outlier_max_weight']:.1f}",
              flush=True,
            )


def digits(results: str = RESULTS, seeds=(0, 1, 2)) -> None:
  from absgd_jax.train import make_config

  done = common.load_jsonl(results)
  rows = [("SGD", dict(method="sgd")), ("ABSGD lam=-1", dict(method="absgd", lam=-1.0))]
  rows += [
    (f"KL rho={rho:g} {guard}", dict(method="absgd", lam=-1.0, kl_budget=rho, kl_guard=guard))
    for rho in RHOS
    for guard in LIBRARY
  ]
  for seed in seeds:
    for row, over in rows:
      fields = dict(study="digits", row=row, seed=seed)
      config = make_config(
        "digits-noise", **over, seed=seed, checkpoint=False, out_dir="/tmp/absgd-kl-guard"
      )
      rec = common.train_record(results, fields, config, done)
      last = rec["history"][-1]
      print(
        f"digits {row:22s} seed {seed}: test {100 * rec['test_acc']:.2f} lam {last['lam']:.3g} "
        f"KL {last.get('kl_mean')} ESS {last['ess_mean']:.1f}",
        flush=True,
      )


def report(results: str = RESULTS) -> str:
  recs = common.read_records(results)
  lines = [
    "Fixed batches of 128 losses, batch_cap = 4: the KL the budget's lam reached (target: rho),",
    "then the KL and largest weight (relative to the mean) of one batch with an outlier.",
    "",
    "| batch | rho | sign | guard | KL reached | outlier batch KL | outlier max weight |",
    "| --- | --- | --- | --- | --- | --- | --- |",
  ]
  for r in recs:
    if r.get("study") == "fixed" and (r["impl"] == "library" or r["guard"] not in LIBRARY):
      lines.append(
        f"| {r['batch']} | {r['rho']:g} | {r['sign']:+d} | {r['guard']} | {r['kl_reached']:.3f} "
        f"| {r['outlier_kl']:.3f} | {r['outlier_max_weight']:.1f} |"
      )
  pairs = {}
  for r in recs:
    if r.get("study") == "fixed" and r["guard"] in ("range", "kl"):
      k = (r["batch"], r["rho"], r["sign"], r["guard"])
      pairs.setdefault(k, {})[r["impl"]] = r["lam"]
  gaps = [abs(v["library"] / v["numpy"] - 1) for v in pairs.values() if len(v) == 2]
  if gaps:
    lines += ["", f"Library against the float64 copy: lam within {max(gaps):.1e} (relative)."]
  digit = [r for r in recs if r.get("study") == "digits"]
  if digit:
    lines += [
      "",
      "digits-noise (40% symmetric noise, MLP, lam < 0 from epoch 22 of 30), test accuracy %,",
      "mean +- std over seeds, and the last epoch's lam, mean KL of the weights and ESS (of 64):",
      "",
      "| row | test acc | lam | KL | ESS |",
      "| --- | --- | --- | --- | --- |",
    ]
    for row in dict.fromkeys(r["row"] for r in digit):
      rs = [r for r in digit if r["row"] == row]
      last = [r["history"][-1] for r in rs]
      kls = [h.get("kl_mean") for h in last if h.get("kl_mean") is not None]
      lines.append(
        f"| {row} | {common.mean_std([r['test_acc'] for r in rs], 100)} | "
        f"{statistics.mean(h['lam'] for h in last):.3g} | "
        f"{statistics.mean(kls) if kls else float('nan'):.3f} | "
        f"{statistics.mean(h['ess_mean'] for h in last):.1f} |"
      )
  text = "\n".join(lines) + "\n"
  print(text)
  return text


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("what", choices=["fixed", "digits", "report"])
  ap.add_argument("--results", default=RESULTS)
  ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
  args = ap.parse_args(argv)
  if args.what == "fixed":
    fixed(args.results)
  elif args.what == "digits":
    digits(args.results, tuple(args.seeds))
  report(args.results)


if __name__ == "__main__":
  main()
