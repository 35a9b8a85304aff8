"""The data of one experiment, from its config: source, imbalance, validation split, noise;
and the checks of a config that need the data (:func:`validate_for_data`)."""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from absgd_jax import data
from absgd_jax.data.facts import facts
from absgd_jax.train import checks
from absgd_jax.train.config import Config


@dataclasses.dataclass(frozen=True)
class ExperimentData:
  """Training set (possibly imbalanced and noisy), its clean labels, validation and test sets."""

  # In memory, or (file-list data sets) paths streamed from disk. Labels as trained on.
  train: data.ArrayDataset | data.FileDataset
  clean_labels: np.ndarray  # [N_train] the true labels.
  flipped: np.ndarray  # bool [N_train], True where the training label is wrong.
  val: data.ArrayDataset | data.FileDataset | None  # Carved out before noise, if asked.
  meta: data.ArrayDataset | None  # Learning to reweight's clean, balanced set, if needed.
  test: data.ArrayDataset | data.FileDataset  # Untouched.
  train_class_counts: np.ndarray  # [C] of the labels as trained on.


def _read_list(config: Config, name: str, default: str) -> data.FileDataset:
  path = name or default
  if not path:
    raise ValueError(f"dataset={config.data.dataset!r} needs train_list and test_list.")
  if not os.path.isabs(path):
    path = os.path.join(config.data.data_dir, path)
  if not os.path.exists(path):
    raise FileNotFoundError(
      f"split list {path} not found: set data_dir to the data set's "
      f"folder, or train_list / test_list to the lists' paths."
    )
  # Every listed file is stat'ed before a long run starts: a check of a sample of the files
  # can pass with one missing, which would then crash the loader mid-epoch.
  if path.endswith(".json"):
    ds = data.read_inat_json(path, config.data.data_dir, check_files=True)
  else:
    ds = data.read_split_list(
      path, config.data.data_dir, num_classes=config.num_classes, check_files=True
    )
  if ds.num_classes != config.num_classes:
    raise ValueError(
      f"{path} has {ds.num_classes} classes; dataset={config.data.dataset!r} has "
      f"{config.num_classes}."
    )
  return ds


def _missing_zip_message(config: Config, path: str) -> str:
  """Where a CIFAR run looked for its zips, and the two ways to give it the data."""
  where = (
    f"data_dir={config.data.data_dir!r}, so it looked for {os.path.abspath(path)}"
    if config.data.data_dir
    else f"data_dir is not set, so it looked for {path} in the working directory {os.getcwd()}"
  )
  return (
    f"dataset={config.data.dataset!r} needs its images, and {where}, which does not exist. "
    f"Either set data_dir (--set data_dir=DIR) to a folder holding train.zip and test.zip "
    f"with one folder per class, <class>/<NNNN>.jpg (class folders sorted by name give "
    f"the labels), or read the data through tensorflow-datasets: "
    f'pip install "absgd_jax[tfds]", prepare it once on a machine with a network with '
    f"`tfds build {config.data.dataset} --file_format=array_record`, and --set source=tfds (it "
    f"reads $TFDS_DATA_DIR or ~/tensorflow_datasets, or data_dir when set)."
  )


def _load_source(config: Config):
  if config.streamed:
    train_default, test_default = facts(config.data.dataset).default_lists
    return (
      _read_list(config, config.data.train_list, train_default),
      _read_list(config, config.data.test_list, test_default),
    )
  if config.data.dataset == "digits":
    return data.load_digits(seed=0)
  if config.data.source == "tfds":
    tfds_dir = config.data.data_dir or None  # None: $TFDS_DATA_DIR or ~/tensorflow_datasets.
    return (
      data.load_tfds(config.data.dataset, "train", data_dir=tfds_dir),
      data.load_tfds(config.data.dataset, "test", data_dir=tfds_dir),
    )
  paths = [os.path.join(config.data.data_dir, f"{split}.zip") for split in ("train", "test")]
  for p in paths:
    if not os.path.exists(p):
      raise FileNotFoundError(_missing_zip_message(config, p))
  train, test = (data.load_image_folder(p) for p in paths)
  if train.num_classes != config.num_classes:
    raise ValueError(
      f"{paths[0]} has {train.num_classes} classes; {config.data.dataset} needs "
      f"{config.num_classes}."
    )
  return train, test


def _split_validation(ds: data.ArrayDataset, fraction: float, seed: int):
  """Holds out ``fraction`` of every class (at least one sample of a class that has two)."""
  rng = np.random.default_rng([seed, 7])
  val_idx = []
  for c in range(ds.num_classes):
    members = np.flatnonzero(ds.labels == c)
    k = int(round(fraction * len(members)))
    k = max(k, 1) if len(members) >= 2 else 0
    val_idx.append(rng.choice(members, size=k, replace=False))
  val_idx = np.sort(np.concatenate(val_idx))
  keep = np.setdiff1d(np.arange(len(ds)), val_idx)
  return ds.subset(keep), ds.subset(val_idx)


def _split_meta(ds: data.ArrayDataset, per_class: int, seed: int):
  """Up to ``per_class`` samples of every class (at most half of it), as a balanced meta set."""
  rng = np.random.default_rng([seed, 11])
  meta_idx = []
  for c in range(ds.num_classes):
    members = np.flatnonzero(ds.labels == c)
    k = min(per_class, len(members) // 2)
    meta_idx.append(rng.choice(members, size=k, replace=False))
  meta_idx = np.sort(np.concatenate(meta_idx))
  return ds.subset(np.setdiff1d(np.arange(len(ds)), meta_idx)), ds.subset(meta_idx)


def build(config: Config) -> ExperimentData:
  """Loads, imbalances (seeded), downsamples, splits off validation, then adds noise (seeded)."""
  checks.tfds_data_dir(
    config.data.dataset, config.data.source, config.data.data_dir
  )  # Before any reading.
  train, test = _load_source(config)
  n_max = config.data.n_max or None
  # The subset before the downsampling: which images it keeps depends on the labels alone, so
  # the result is the same, and a CIFAR-10-LT of 12,406 (or a smoke test's few hundred) costs
  # a fraction of averaging all 50,000.
  if config.data.imbalance != "none":
    train = data.make_imbalanced(
      train, config.data.rho, profile=config.data.imbalance, seed=config.seed, n_max=n_max
    )
  elif n_max is not None:  # A balanced subset of n_max per class.
    train = data.make_imbalanced(train, 1.0, seed=config.seed, n_max=n_max)
  if config.data.test_per_class:
    per_class = [
      np.flatnonzero(test.labels == c)[: config.data.test_per_class]
      for c in range(config.num_classes)
    ]
    test = test.subset(np.sort(np.concatenate(per_class)))
  if config.input.image_size:
    size = config.input.image_size
    train, test = data.downsample(train, size), data.downsample(test, size)
  val = None
  if config.data.val_fraction > 0:
    train, val = _split_validation(train, config.data.val_fraction, config.seed)
  meta = None
  if config.method == "l2rw":
    train, meta = _split_meta(train, config.weighting.meta_per_class, config.seed)
  clean = train.labels.copy()
  flipped = np.zeros(len(train), bool)
  if config.data.noise == "sym":
    noisy, flipped = data.symmetric_noise(
      clean, config.data.noise_rate, config.num_classes, seed=config.seed
    )
    train = train.with_labels(noisy)
  elif config.data.noise == "asym":
    mapping = facts(config.data.dataset).asym_noise()
    noisy, flipped = data.asymmetric_noise(
      clean, config.data.noise_rate, mapping, seed=config.seed, num_classes=config.num_classes
    )
    train = train.with_labels(noisy)
  return ExperimentData(
    train=train,
    clean_labels=clean,
    flipped=np.asarray(flipped, bool),
    val=val,
    meta=meta,
    test=test,
    train_class_counts=np.bincount(train.labels, minlength=config.num_classes),
  )


def build_for_members(
  configs: list[Config], exp: ExperimentData | None = None
) -> list[ExperimentData]:
  """Each member's data: built once per seed (lam and gamma share it), ``exp`` for the first
  member's seed when given.

  Raises:
    ValueError: when members with other seeds would not fit one program: other (train, test,
      val) sizes, or other class counts where the loss uses them.
  """
  by_seed: dict[int, ExperimentData] = {}
  if exp is not None:
    by_seed[configs[0].seed] = exp
  for c in configs:
    if c.seed not in by_seed:
      by_seed[c.seed] = build(c)
  exps = [by_seed[c.seed] for c in configs]
  first = configs[0]
  uses_counts = first.loss.class_weighting != "none" or first.loss.name == "ldam"

  def sizes(e):
    return [len(e.train), len(e.test), 0 if e.val is None else len(e.val)]

  for c, e in zip(configs, exps):
    if sizes(e) != sizes(exps[0]):
      raise ValueError(
        f"--sweep seed: the member with seed={c.seed} has (train, test, val) sizes {sizes(e)} "
        f"where seed={first.seed} has {sizes(exps[0])}; one program needs equal shapes. Run "
        "these seeds as separate runs."
      )
    if uses_counts and not np.array_equal(e.train_class_counts, exps[0].train_class_counts):
      raise ValueError(
        f"--sweep seed: the class counts of the member with seed={c.seed} differ from "
        f"seed={first.seed}'s, and loss={first.loss.name!r} with class_weighting="
        f"{first.loss.class_weighting!r} depends on them. Run these seeds as separate runs."
      )
  return exps


def validate_for_data(config: Config, n_train: int, n_devices: int, n_processes: int = 1) -> None:
  """Checks the batch size against the training split and the devices, before the first step.

  Raises:
    ValueError: naming ``batch_size`` and what it must divide or not exceed.
  """
  B = config.optim.batch_size
  if n_train < 1:
    raise ValueError(
      f"the training split of {config.data.dataset} is empty (after imbalance, "
      "validation and meta splits): check n_max, rho and val_fraction."
    )
  if B > n_train:
    raise ValueError(
      f"batch_size={B} exceeds the {n_train} training examples of this run "
      f"({config.data.dataset} after imbalance and splits): choose batch_size <= "
      f"{n_train}."
    )
  if B % n_devices:
    fit = max(n_devices, B - B % n_devices)
    raise ValueError(
      f"batch_size={B} must be a multiple of the {n_devices} devices, so that "
      f"the batch splits evenly: e.g. batch_size={fit}."
    )
  if B % n_processes:
    raise ValueError(f"batch_size={B} must be a multiple of the {n_processes} processes.")
