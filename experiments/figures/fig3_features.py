"""Figure 3: penultimate features under two-stage lam vs a fixed small lam, CIFAR-10-LT, in 2-D.

    python -m experiments.figures.fig3_features [--embed tsne|pca] [--seed 0]

Two ABSGD (CE) runs on the CIFAR-10-LT of ``experiments/cifar_table.py`` at the 20-epoch
``short`` protocol (rho = 100, 16 x 16 images, ResNet-8; ``common.short_lt``), one seed:

- two-stage: lam = inf (momentum SGD) for epochs 0-15, then lam = 1 from epoch 16, the first
  learning-rate decay. The paper's first stage has lam = 100; the kit's two-stage schedule
  (``stage2_epoch``) runs lam = inf there, which the paper calls the same method (Section 3.6:
  momentum SGD is ABSGD with |lam| = inf), and which exp(L / 100) ~ 1 nearly is;
- fixed: lam = 1 from the first step.

After training, the input of the classifier (the global-average-pooled features) of a
class-stratified sample of training and test images is embedded in 2-D by scikit-learn's
t-SNE (or PCA), one embedding per panel, and coloured by true class. The panels' titles give
each run's test accuracy. Records go to ``experiments/results/fig3_features.jsonl``.
"""

from __future__ import annotations

import json
import os
import time

import numpy as np

from experiments.common import CACHE, figure_parser, short_lt

RUNS = {
  "two-stage lam: inf, then 1 from epoch 16": dict(lam=1.0, stage2_epoch=16),
  "fixed lam = 1": dict(lam=1.0, stage2_epoch=0),
}


def penultimate_features(trainer, images: np.ndarray, batch: int = 500) -> np.ndarray:
  """The classifier head's input for ``images`` (uint8 NHWC), in eval mode."""
  import flax.linen as nn
  import jax
  from absgd_jax.train import setup

  def features(params, batch_stats, x):
    found = []

    def grab(next_fun, args, kwargs, context):
      if context.module.name == "head" and context.method_name == "__call__":
        found.append(args[0])
      return next_fun(*args, **kwargs)

    x = preprocess({"images": x}, None, False)["images"]  # the eval step's normalisation
    with nn.intercept_methods(grab):
      trainer.model.apply({"params": params, "batch_stats": batch_stats}, x, train=False)
    return found[-1]

  preprocess = setup.make_preprocess(trainer.config)
  fn = jax.jit(features)
  s = trainer.member_state(0)
  return np.concatenate(
    [
      np.asarray(fn(s.params, s.batch_stats, images[i : i + batch]))
      for i in range(0, len(images), batch)
    ]
  )


def stratified(labels: np.ndarray, per_class: int, seed: int) -> np.ndarray:
  rng = np.random.default_rng([seed, 3])
  return np.sort(
    np.concatenate(
      [
        rng.choice(
          np.flatnonzero(labels == c), min(per_class, int(np.sum(labels == c))), replace=False
        )
        for c in np.unique(labels)
      ]
    )
  )


def embed(x: np.ndarray, how: str, seed: int) -> np.ndarray:
  if how == "pca":
    from sklearn.decomposition import PCA

    return PCA(2, random_state=seed).fit_transform(x)
  from sklearn.manifold import TSNE

  return TSNE(
    2, init="pca", perplexity=min(30.0, (len(x) - 1) / 3), random_state=seed
  ).fit_transform(x)


def main(argv=None):
  ap = figure_parser(__doc__, "fig3_features")
  ap.add_argument("--embed", choices=("tsne", "pca"), default="tsne")
  ap.add_argument("--seed", type=int, default=0)
  ap.add_argument(
    "--per-class",
    type=int,
    default=100,
    help="images per class embedded, from each of train and test",
  )
  args = ap.parse_args(argv)
  from absgd_jax.train import Trainer
  from absgd_jax.train.compile_cache import use_compile_cache
  from absgd_jax.train.plots import _pyplot

  use_compile_cache(CACHE)

  panels = []
  for name, over in RUNS.items():
    t0 = time.process_time()
    config = short_lt(args.data_dir, args.tiny, method="absgd", seed=args.seed, **over)
    trainer = Trainer(config, progress=False, log=False)
    final = trainer.fit()[0]["final"]
    row = {
      "run": name,
      **over,
      "seed": args.seed,
      "tiny": args.tiny,
      "test_acc": final["test_acc"],
      "test_balanced_acc": final["test_balanced_acc"],
      "test_class_acc": final["test_class_acc"],
      "cpu_s": time.process_time() - t0,
    }
    print(json.dumps(row), flush=True)
    os.makedirs(os.path.dirname(args.records), exist_ok=True)
    with open(args.records, "a") as f:
      f.write(json.dumps(row) + "\n")
    for split, ds in (("train", trainer.exp.train), ("test", trainer.exp.test)):
      idx = stratified(ds.labels, args.per_class, args.seed)
      feats = penultimate_features(trainer, ds.images[idx])
      panels.append(
        (name, split, embed(feats, args.embed, args.seed), ds.labels[idx], final["test_acc"])
      )

  plt = _pyplot()
  fig, axes = plt.subplots(1, 4, figsize=(16, 4.2))
  for ax, (name, split, xy, labels, acc) in zip(axes, panels):
    sc = ax.scatter(xy[:, 0], xy[:, 1], c=labels, cmap="tab10", vmin=-0.5, vmax=9.5, s=4)
    ax.set_title(f"{name}\n{split} features; test acc {100 * acc:.2f}%", fontsize=8)
    ax.set_xticks([]), ax.set_yticks([])
  fig.colorbar(sc, ax=axes, ticks=range(10), fraction=0.015, label="class (0 = head)")
  fig.suptitle(
    f"CIFAR-10-LT rho=100, 16 px, ResNet-8, 20 epochs, seed {args.seed}: "
    f"penultimate features ({args.embed.upper()}, {args.per_class} per class)",
    fontsize=9,
  )
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  fig.savefig(args.out, dpi=90)
  plt.close(fig)
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
