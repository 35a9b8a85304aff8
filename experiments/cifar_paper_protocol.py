"""Issue 5, table 3: the paper's full CIFAR-10 protocol, SGD (CE) vs ABSGD (CE), for a GPU.

    python experiments/cifar_paper_protocol.py --data-dir DIR [--seeds 0 1 2] [--lam 5]
    python experiments/cifar_paper_protocol.py --report        # the table from the records
    python experiments/cifar_paper_protocol.py --set epochs=1 --set image_size=8 \
        --results /tmp/smoke.jsonl                              # a smoke run

Runs the presets ``cifar10-lt`` and ``cifar10-st`` (Section 4.1: ResNet-32, 200 epochs, lr
0.1 after a 5-epoch warm-up, divided by 100 at epochs 160 and 180, batch 128, weight decay
2e-4, torch's momentum form; ABSGD's lam switched on at epoch 160) with momentum SGD and with
ABSGD, for each seed. Every run checkpoints each epoch, so running the command again resumes
where it stopped; a finished run appends its record to
``experiments/results/cifar_paper_protocol.jsonl``, and ``--report`` rebuilds the table
(final and best-epoch test accuracy beside the paper's Table 1) from those records alone.
About 1.5 minutes per run on an H100 (0.45 s an epoch), about 10 hours on 2 CPU cores.
"""

from __future__ import annotations

import argparse

import common
from common import mean_std

EXPERIMENT = "cifar_paper_protocol"

PAPER = {("cifar10-lt", "sgd"): "71.75 +- 0.75", ("cifar10-lt", "absgd"): "72.43 +- 0.31",
         ("cifar10-st", "sgd"): "63.12 +- 0.63", ("cifar10-st", "absgd"): "66.24 +- 0.35"}


def run(results: str, data_dir: str, seeds, lam: float, overrides: dict[str, str]) -> None:
  from absgd_jax.train import make_config
  for preset in ("cifar10-lt", "cifar10-st"):
    for method in ("sgd", "absgd"):
      for seed in seeds:
        name = f"{preset}__{method}__seed{seed}"
        cfg = make_config(preset, overrides, method=method, lam=lam, seed=seed,
                          data_dir=data_dir, checkpoint=True,
                          out_dir=common.run_dir(results, name))
        rec = common.train_once(results, name, cfg, dict(preset=preset, method=method, seed=seed))
        if rec is not None:
          print(f"{name}: test {rec['test_acc']:.4f} ({rec['wall_s']:.0f} s)", flush=True)


def report(results: str) -> str:
  recs = common.read_records(results)
  lines = ["| setting | method | ours, final | ours, best epoch | paper (Table 1) |",
           "| --- | --- | --- | --- | --- |"]
  for preset in ("cifar10-lt", "cifar10-st"):
    for method in ("sgd", "absgd"):
      mine = [r for r in recs if r["preset"] == preset and r["method"] == method]
      final = [100 * r["test_acc"] for r in mine]
      best = [100 * max(h["test_acc"] for h in r["history"] if h["test_acc"] is not None)
              for r in mine]
      lines.append(f"| {preset} | {method} | {mean_std(final)} | {mean_std(best)} | "
                   f"{PAPER[(preset, method)]} |")
  text = "\n".join(lines) + "\n"
  print(text)
  return text


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--data-dir", default="../shared/data/cifar10-jpeg")
  ap.add_argument("--results", default=common.results_path(EXPERIMENT),
                  help="the records (JSONL)")
  ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
  ap.add_argument("--lam", type=float, default=5.0, help="ABSGD's lam (the paper: 1..10)")
  ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                  help="override a setting of both presets (for smoke runs)")
  ap.add_argument("--report", action="store_true")
  args = ap.parse_args(argv)
  if not args.report:
    overrides = dict(item.split("=", 1) for item in args.set)
    run(args.results, args.data_dir, args.seeds, args.lam, overrides)
  report(args.results)


if __name__ == "__main__":
  main()
