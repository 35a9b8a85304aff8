"""absgd_jax.data: imbalance, label noise, sources, batching and augmentation."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import types
import zipfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from absgd_jax import data
from absgd_jax.data import image_folder as image_folder_mod

# The CIFAR-10 zips: $ABSGD_CIFAR10_DIR, else a copy beside the checkout; tests skip without.
CIFAR_JPEG = Path(
  os.environ.get("ABSGD_CIFAR10_DIR")
  or Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpeg"
)


# ----------------------------------------------------------------------------- imbalance


def test_cifar10_long_tailed_counts_exact():
  counts = data.imbalanced_counts(5000, 10, 100)
  assert counts.tolist() == [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]


@pytest.mark.parametrize(
  "n_max, num_classes, rho, total",
  [
    (5000, 10, 100, 12406),
    (5000, 10, 10, 20431),
    (500, 100, 100, 10847),
    (500, 100, 10, 19573),
  ],
)
def test_long_tailed_totals_match_the_published_sizes(n_max, num_classes, rho, total):
  counts = data.imbalanced_counts(n_max, num_classes, rho)
  assert counts.sum() == total
  assert counts[0] == n_max and counts[-1] == int(n_max / rho)
  assert np.all(np.diff(counts) <= 0)


def test_step_counts():
  assert data.imbalanced_counts(5000, 10, 100, "step").tolist() == [5000] * 5 + [50] * 5
  assert data.imbalanced_counts(500, 100, 10, "step").tolist() == [500] * 50 + [50] * 50
  # Odd C: the majority has the extra class.
  assert data.imbalanced_counts(100, 5, 4, "step").tolist() == [100, 100, 100, 25, 25]
  assert data.imbalanced_counts(100, 4, 1).tolist() == [100] * 4  # rho = 1 is balanced.


@pytest.mark.parametrize("rho", [0.5, 0.999, -3.0, float("nan"), float("inf")])
def test_rho_below_one_or_not_finite_is_rejected(rho):
  with pytest.raises(ValueError, match=f"rho = {rho}"):
    data.imbalanced_counts(5000, 10, rho)


@pytest.mark.parametrize("profile", ["exp", "step"])
def test_profile_leaving_a_class_empty_is_rejected(profile):
  with pytest.raises(ValueError, match=r"leaves class (8|5) with zero samples"):
    data.imbalanced_counts(50, 10, 100, profile)
  with pytest.raises(ValueError, match="profile"):
    data.imbalanced_counts(50, 10, 10, "linear")


def test_subset_is_seeded_exact_and_sorted():
  labels = np.random.default_rng(0).permutation(np.repeat(np.arange(10), 100))
  counts = data.imbalanced_counts(100, 10, 10)
  a = data.imbalanced_subset(labels, counts, seed=3)
  b = data.imbalanced_subset(labels, counts, seed=3)
  c = data.imbalanced_subset(labels, counts, seed=4)
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)
  assert np.all(np.diff(a) > 0)  # Sorted, no duplicates.
  np.testing.assert_array_equal(np.bincount(labels[a], minlength=10), counts)


def test_subset_errors_name_the_class_and_value():
  labels = np.repeat(np.arange(3), 4)
  with pytest.raises(ValueError, match=r"counts\[1\] = 5 is more than the 4"):
    data.imbalanced_subset(labels, [4, 5, 1], seed=0)
  with pytest.raises(ValueError, match=r"labels\[12\] = 3 is outside \[0, 3\)"):
    data.imbalanced_subset(np.append(labels, 3), [1, 1, 1], seed=0)


def test_make_imbalanced_leaves_the_test_set_untouched():
  train, test = data.load_digits(seed=0)
  test_images, test_labels = test.images.copy(), test.labels.copy()
  lt = data.make_imbalanced(train, rho=10, seed=0)
  n_max = train.class_counts().min()
  np.testing.assert_array_equal(lt.class_counts(), data.imbalanced_counts(n_max, 10, 10))
  np.testing.assert_array_equal(test.images, test_images)
  np.testing.assert_array_equal(test.labels, test_labels)
  assert lt.meta["imbalance"]["rho"] == 10.0
  st = data.make_imbalanced(train, rho=10, profile="step", seed=0)
  assert st.class_counts().tolist() == [n_max] * 5 + [n_max // 10] * 5


def test_digits_split_is_stratified_and_seeded():
  train, test = data.load_digits(seed=1)
  train2, _ = data.load_digits(seed=1)
  other, _ = data.load_digits(seed=2)
  assert train.images.dtype == np.float32 and train.images.shape[1:] == (8, 8, 1)
  assert 0.0 <= train.images.min() and train.images.max() <= 1.0
  assert len(train) + len(test) == 1797
  np.testing.assert_array_equal(train.labels, train2.labels)
  np.testing.assert_array_equal(train.images, train2.images)
  assert not np.array_equal(train.images, other.images)
  frac = test.class_counts() / (test.class_counts() + train.class_counts())
  np.testing.assert_allclose(frac, 0.25, atol=0.01)
  flat, _ = data.load_digits(flatten=True)
  assert flat.images.shape == (len(train), 64)


# ----------------------------------------------------------------------------- label noise


def _balanced_labels(num_classes, per_class, seed=0):
  return np.random.default_rng(seed).permutation(np.repeat(np.arange(num_classes), per_class))


@pytest.mark.parametrize("rate", [0.0, 0.2, 0.4, 0.8])
def test_symmetric_noise_exact_per_class_and_never_the_same_class(rate):
  clean = _balanced_labels(10, 500)
  noisy, flipped = data.symmetric_noise(clean, rate, 10, seed=0)
  assert noisy.dtype == np.int32 and flipped.dtype == bool
  per_class = np.bincount(clean[flipped], minlength=10)
  np.testing.assert_array_equal(per_class, round(rate * 500))
  assert np.all(noisy[flipped] != clean[flipped])
  np.testing.assert_array_equal(noisy[~flipped], clean[~flipped])


def test_symmetric_noise_targets_are_uniform_over_the_other_classes():
  clean = _balanced_labels(10, 1000)
  noisy, flipped = data.symmetric_noise(clean, 0.45, 10, seed=1)
  shift = (noisy[flipped] - clean[flipped]) % 10  # 1..9, uniform if the targets are.
  freq = np.bincount(shift, minlength=10)[1:]
  expected = flipped.sum() / 9  # 500
  assert np.all(np.abs(freq - expected) < 5 * np.sqrt(expected))  # ~5 sigma.
  target_counts = np.bincount(noisy[flipped], minlength=10)
  assert np.all(np.abs(target_counts - 450) < 5 * np.sqrt(450))


def test_symmetric_noise_rounding_and_seed():
  clean = np.repeat(np.arange(3), [7, 10, 3])
  noisy, flipped = data.symmetric_noise(clean, 0.5, 3, seed=0)
  # 3.5 -> 4 (half up), 5, 1.5 -> 2: within half a sample of rate * n_c.
  assert np.bincount(clean[flipped], minlength=3).tolist() == [4, 5, 2]
  again, _ = data.symmetric_noise(clean, 0.5, 3, seed=0)
  np.testing.assert_array_equal(noisy, again)


def test_asymmetric_cifar10_flips_both_ways_at_the_rate():
  clean = _balanced_labels(10, 300)
  noisy, flipped = data.asymmetric_noise(clean, 0.4, data.CIFAR10_ASYM, seed=0)
  pairs = {}
  for c, n in zip(clean[flipped].tolist(), noisy[flipped].tolist()):
    pairs[(c, n)] = pairs.get((c, n), 0) + 1
  # truck -> automobile, bird -> airplane, deer -> horse, cat <-> dog; 120 = 0.4 * 300 each.
  assert pairs == {(9, 1): 120, (2, 0): 120, (4, 7): 120, (3, 5): 120, (5, 3): 120}
  untouched = np.isin(clean, [0, 1, 6, 7, 8])
  assert not flipped[untouched].any()
  np.testing.assert_array_equal(noisy[~flipped], clean[~flipped])
  names = data.CIFAR10_CLASSES
  assert {(names[s], names[t]) for s, t in data.CIFAR10_ASYM.items()} == {
    ("truck", "automobile"),
    ("bird", "airplane"),
    ("deer", "horse"),
    ("cat", "dog"),
    ("dog", "cat"),
  }


def test_asymmetric_noise_with_an_array_mapping_and_the_digit_mapping():
  clean = _balanced_labels(10, 50)
  noisy, flipped = data.asymmetric_noise(clean, 0.2, data.DIGITS_ASYM, seed=0, num_classes=10)
  assert np.bincount(clean[flipped], minlength=10).tolist() == [0, 0, 10, 10, 0, 10, 10, 10, 0, 0]
  np.testing.assert_array_equal(noisy[flipped], np.vectorize(data.DIGITS_ASYM.get)(clean[flipped]))
  as_array = np.arange(10)
  for s, t in data.DIGITS_ASYM.items():
    as_array[s] = t
  noisy2, flipped2 = data.asymmetric_noise(clean, 0.2, as_array, seed=0)
  np.testing.assert_array_equal(noisy, noisy2)
  np.testing.assert_array_equal(flipped, flipped2)


def test_cifar100_table_and_mapping_stay_within_superclasses_as_5_cycles():
  coarse = np.asarray(data.CIFAR100_COARSE)
  assert len(coarse) == 100 and np.bincount(coarse).tolist() == [5] * 20
  assert list(data.CIFAR100_CLASSES) == sorted(data.CIFAR100_CLASSES)
  named = {data.CIFAR100_CLASSES[f]: data.CIFAR100_COARSE_CLASSES[c] for f, c in enumerate(coarse)}
  assert named["dolphin"] == "aquatic_mammals" and named["tulip"] == "flowers"
  assert named["pickup_truck"] == "vehicles_1" and named["tractor"] == "vehicles_2"
  m = data.cifar100_asym_mapping()
  assert sorted(m.tolist()) == list(range(100))  # A permutation.
  np.testing.assert_array_equal(coarse[m], coarse)
  for c in range(100):  # Every class lies on a cycle of length exactly 5.
    orbit = [c]
    while (nxt := int(m[orbit[-1]])) != c:
      orbit.append(nxt)
    assert len(orbit) == 5 and set(orbit) == set(np.flatnonzero(coarse == coarse[c]))
  clean = _balanced_labels(100, 20)
  noisy, flipped = data.asymmetric_noise(clean, 0.4, m, seed=0)
  np.testing.assert_array_equal(np.bincount(clean[flipped], minlength=100), 8)
  np.testing.assert_array_equal(coarse[noisy], coarse[clean])


@pytest.mark.parametrize("rate", [-0.1, 1.0, 1.5, float("nan")])
def test_noise_rate_outside_unit_interval_is_rejected(rate):
  labels = np.arange(10)
  with pytest.raises(ValueError, match=f"rate = {rate}"):
    data.symmetric_noise(labels, rate, 10, seed=0)
  with pytest.raises(ValueError, match=f"rate = {rate}"):
    data.asymmetric_noise(labels, rate, data.CIFAR10_ASYM, seed=0)


def test_labels_outside_the_classes_are_rejected_by_value():
  with pytest.raises(ValueError, match=r"labels\[2\] = 10 is outside \[0, 10\)"):
    data.symmetric_noise(np.array([0, 9, 10]), 0.2, 10, seed=0)
  with pytest.raises(ValueError, match=r"labels\[0\] = -1 is outside"):
    data.asymmetric_noise(np.array([-1, 2]), 0.2, data.CIFAR10_ASYM, seed=0, num_classes=10)
  with pytest.raises(ValueError, match=r"= 2.5 is not an integer"):
    data.check_labels(np.array([0.0, 2.5]), 3)
  with pytest.raises(ValueError, match="target class 12"):
    data.asymmetric_noise(np.array([0, 1]), 0.2, {1: 12}, seed=0, num_classes=10)
  with pytest.raises(ValueError, match=r"labels\[1\] = 7 is outside \[0, 2\)"):
    data.ArrayDataset(np.zeros((2, 1)), np.array([1, 7]), 2, ("a", "b"))


# ----------------------------------------------------------------------------- image folders


def _jpeg(rng, size=(8, 6), quality=95) -> bytes:
  buf = io.BytesIO()
  pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
  Image.fromarray(pixels).save(buf, "JPEG", quality=quality)
  return buf.getvalue()


def _make_zip(path: Path, files: dict[str, bytes]) -> Path:
  with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
    for name, blob in files.items():
      z.writestr(name, blob)
  return path


def _toy_files(per_class=(4, 2, 3), prefix="", seed=0):
  rng = np.random.default_rng(seed)
  files = {}
  for cls, n in zip(["zebra", "ant", "cat"], per_class):  # Not in sorted order on purpose.
    for i in range(n):
      files[f"{prefix}{cls}/{i:03d}.jpg"] = _jpeg(rng)
  return files


def _decoded(blob: bytes) -> np.ndarray:
  with Image.open(io.BytesIO(blob)) as im:
    return np.asarray(im.convert("RGB"))


def _cache_listing(cache: Path) -> list[str]:
  return sorted(p.name for p in cache.iterdir()) if cache.exists() else []


def test_zip_round_trip_and_cache_hit(tmp_path, monkeypatch):
  files = _toy_files(prefix="train/")
  src = _make_zip(tmp_path / "toy.zip", files)
  cache = tmp_path / "cache"
  ds = data.load_image_folder(src, cache_dir=cache)
  assert ds.class_names == ("ant", "cat", "zebra")  # Label = sorted class-folder order.
  assert ds.labels.tolist() == [0, 0, 1, 1, 1, 2, 2, 2, 2]
  assert ds.images.shape == (9, 6, 8, 3) and ds.images.dtype == np.uint8
  order = sorted(files, key=lambda n: (n.split("/")[-2], n))
  np.testing.assert_array_equal(ds.images, np.stack([_decoded(files[n]) for n in order]))
  assert not ds.meta["cache_hit"] and ds.meta["decode_seconds"] > 0
  assert len(_cache_listing(cache)) == 1

  # A hit must not decode anything: make decoding fail and load again.
  def no_decode(*args, **kwargs):
    raise AssertionError("decoded on a cache hit")

  monkeypatch.setattr(image_folder_mod, "_decode", no_decode)
  hit = data.load_image_folder(src, cache_dir=cache)
  assert hit.meta["cache_hit"] and hit.meta["load_seconds"] < 2.0
  assert hit.meta["decode_seconds"] == ds.meta["decode_seconds"]
  np.testing.assert_array_equal(hit.images, ds.images)
  np.testing.assert_array_equal(hit.labels, ds.labels)
  assert hit.class_names == ds.class_names
  # The hit maps the cache file read-only instead of reading it whole; a subset copies its
  # rows into memory.
  assert isinstance(hit.images, np.memmap) and not hit.images.flags.writeable
  part = hit.subset([1, 4])
  assert not isinstance(part.images, np.memmap) and part.images.flags.writeable
  np.testing.assert_array_equal(part.images, ds.images[[1, 4]])
  monkeypatch.undo()

  # Another zip (one changed image) gets its own entry.
  files["train/cat/000.jpg"] = _jpeg(np.random.default_rng(9))
  other = data.load_image_folder(_make_zip(tmp_path / "toy.zip", files), cache_dir=cache)
  assert not other.meta["cache_hit"] and len(_cache_listing(cache)) == 2


def test_directory_source_matches_the_zip(tmp_path, monkeypatch):
  files = _toy_files()
  for name, blob in files.items():
    (tmp_path / "dir" / name).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / "dir" / name).write_bytes(blob)
  (tmp_path / "dir" / "README.txt").write_text("not an image")  # Ignored.
  monkeypatch.setenv("ABSGD_CACHE", str(tmp_path / "env_cache"))
  from_dir = data.load_image_folder(tmp_path / "dir")
  assert Path(from_dir.meta["cache_entry"]).parent == tmp_path / "env_cache"
  from_zip = data.load_image_folder(_make_zip(tmp_path / "toy.zip", files), use_cache=False)
  assert from_zip.meta["cache_entry"] is None
  np.testing.assert_array_equal(from_dir.images, from_zip.images)
  np.testing.assert_array_equal(from_dir.labels, from_zip.labels)
  assert data.load_image_folder(tmp_path / "dir").meta["cache_hit"]


@pytest.mark.parametrize("bad", [b"definitely not a jpeg", "truncated"])
def test_corrupt_image_names_the_file_and_leaves_no_cache(tmp_path, bad):
  files = _toy_files(per_class=(40, 40, 40))  # Several decode chunks' worth of work.
  blob = files["cat/007.jpg"]
  files["cat/007.jpg"] = blob[: len(blob) // 2] if bad == "truncated" else bad
  src = _make_zip(tmp_path / "bad.zip", files)
  cache = tmp_path / "cache"
  with pytest.raises(ValueError, match=r"'cat/007\.jpg' in .*bad\.zip"):
    data.load_image_folder(src, cache_dir=cache)
  assert _cache_listing(cache) == []  # No entry and no temporary directory either.


def test_damaged_zip_member_names_the_file_and_leaves_no_cache(tmp_path):
  src = _make_zip(tmp_path / "crc.zip", _toy_files())
  with zipfile.ZipFile(src) as z:
    info = z.getinfo("cat/001.jpg")
  raw = bytearray(src.read_bytes())
  # Flip a byte of the stored data (past the 30-byte local header, its name and extra field).
  raw[info.header_offset + 30 + len(info.filename) + len(info.extra) + 40] ^= 0xFF
  src.write_bytes(bytes(raw))
  cache = tmp_path / "cache"
  with pytest.raises(ValueError, match=r"'cat/001\.jpg' in .*crc\.zip"):
    data.load_image_folder(src, cache_dir=cache)
  assert _cache_listing(cache) == []


def test_interrupted_cache_write_leaves_nothing_half_written(tmp_path, monkeypatch):
  src = _make_zip(tmp_path / "toy.zip", _toy_files())
  cache = tmp_path / "cache"
  real_save = np.save
  calls = []

  def failing_save(path, arr, *args, **kwargs):
    calls.append(path)
    if len(calls) == 2:  # After images.npy is written, before labels.npy.
      raise KeyboardInterrupt("killed mid-write")
    return real_save(path, arr, *args, **kwargs)

  monkeypatch.setattr(np, "save", failing_save)
  with pytest.raises(KeyboardInterrupt):
    data.load_image_folder(src, cache_dir=cache)
  assert _cache_listing(cache) == []
  monkeypatch.undo()
  ds = data.load_image_folder(src, cache_dir=cache)
  assert not ds.meta["cache_hit"]
  assert data.load_image_folder(src, cache_dir=cache).meta["cache_hit"]


def test_unreadable_cache_entry_is_rebuilt(tmp_path):
  src = _make_zip(tmp_path / "toy.zip", _toy_files())
  cache = tmp_path / "cache"
  first = data.load_image_folder(src, cache_dir=cache)
  entry = Path(first.meta["cache_entry"])
  (entry / "images.npy").write_bytes(b"\x93NUMPY garbage")
  again = data.load_image_folder(src, cache_dir=cache)
  assert not again.meta["cache_hit"]
  np.testing.assert_array_equal(again.images, first.images)
  assert data.load_image_folder(src, cache_dir=cache).meta["cache_hit"]


def test_an_entry_committed_meanwhile_by_another_process_is_kept(tmp_path):
  entry = tmp_path / "cache" / "toy-0123"
  images, labels = np.zeros((2, 1, 1, 3), np.uint8), np.array([0, 1], np.int32)
  meta = {
    "format": 1,
    "sha256": "x",
    "num_images": 2,
    "class_names": ["a", "b"],
    "decode_seconds": 0.0,
  }
  image_folder_mod._write_entry(entry, images, labels, meta, replace_stale=False)
  image_folder_mod._write_entry(entry, images + 1, labels, meta, replace_stale=False)
  assert np.load(entry / "images.npy").max() == 0  # The first writer's entry stands.
  image_folder_mod._write_entry(entry, images + 1, labels, meta, replace_stale=True)
  assert np.load(entry / "images.npy").max() == 1
  assert _cache_listing(tmp_path / "cache") == ["toy-0123"]  # No temporary left over.


def test_image_folder_layout_errors(tmp_path):
  rng = np.random.default_rng(0)
  with pytest.raises(ValueError, match=r"'loose\.jpg' .* not inside a class folder"):
    data.load_image_folder(
      _make_zip(tmp_path / "a.zip", {"loose.jpg": _jpeg(rng)}), use_cache=False
    )
  mixed = {"a/0.jpg": _jpeg(rng, (8, 6)), "b/1.jpg": _jpeg(rng, (5, 5))}
  with pytest.raises(ValueError, match=r"'b/1\.jpg' .* is 5x5"):
    data.load_image_folder(_make_zip(tmp_path / "b.zip", mixed), use_cache=False)
  resized = data.load_image_folder(tmp_path / "b.zip", image_size=(4, 7), use_cache=False)
  assert resized.images.shape == (2, 4, 7, 3)
  grey, png = io.BytesIO(), io.BytesIO()
  Image.new("L", (3, 3), 7).save(grey, "JPEG")
  Image.new("RGBA", (3, 3), (1, 2, 3, 4)).save(png, "PNG")
  odd = data.load_image_folder(  # Grey JPEG, and a PNG misnamed .jpg: both come out RGB.
    _make_zip(tmp_path / "d.zip", {"a/grey.jpg": grey.getvalue(), "b/png.jpg": png.getvalue()}),
    use_cache=False,
  )
  assert odd.images[0, 0, 0].tolist() == [7, 7, 7] and odd.images[1, 0, 0].tolist() == [1, 2, 3]
  with pytest.raises(ValueError, match="no images"):
    data.load_image_folder(_make_zip(tmp_path / "c.zip", {"a/x.txt": b"hi"}), use_cache=False)
  with pytest.raises(FileNotFoundError):
    data.load_image_folder(tmp_path / "missing.zip")


@pytest.mark.skipif(not (CIFAR_JPEG / "test.zip").exists(), reason="no CIFAR-10 JPEG copy")
def test_cifar10_jpeg_test_zip_smoke(tmp_path):
  ds = data.load_image_folder(CIFAR_JPEG / "test.zip", cache_dir=tmp_path)  # ~2 s.
  assert ds.images.shape == (10000, 32, 32, 3)
  assert ds.class_names == data.CIFAR10_CLASSES
  assert ds.class_counts().tolist() == [1000] * 10
  mean = ds.images.reshape(-1, 3).mean(0) / 255.0
  np.testing.assert_allclose(mean, data.CIFAR10_MEAN, atol=0.01)


# ----------------------------------------------------------------------------- downsampling


def test_downsample_is_the_block_mean_rounded_half_up_and_close_to_pil_box():
  rng = np.random.default_rng(4)
  images = rng.integers(0, 256, (5, 12, 12, 3), dtype=np.uint8)
  ds = data.ArrayDataset(images, np.arange(5) % 2, 2, ("a", "b"))
  out = data.downsample(ds, 4).images
  assert out.shape == (5, 4, 4, 3) and out.dtype == np.uint8
  want = np.empty((5, 4, 4, 3))
  for i in range(4):  # Each output pixel is the mean of its 3 x 3 block, in float64.
    for j in range(4):
      want[:, i, j] = (
        images[:, 3 * i : 3 * i + 3, 3 * j : 3 * j + 3].astype(np.float64).mean((1, 2))
      )
  np.testing.assert_array_equal(out, np.floor(want + 0.5).astype(np.uint8))
  pil = np.stack([np.asarray(Image.fromarray(im).resize((4, 4), Image.BOX)) for im in images])
  assert np.abs(out.astype(int) - pil).max() <= 1  # PIL's fixed-point box filter.
  assert data.downsample(ds, 12) is ds
  assert data.downsample(ds, 4).meta["downsample"] == {"from": 12, "to": 4, "method": "area"}


def test_downsample_keeps_float_images_and_rejects_bad_sizes():
  images = np.random.default_rng(5).random((3, 4, 4, 1), dtype=np.float32)
  ds = data.ArrayDataset(images, np.zeros(3, int), 1, ("a",))
  np.testing.assert_allclose(
    data.downsample(ds, 1).images[:, 0, 0, 0], images.mean((1, 2, 3)), rtol=1e-6
  )
  with pytest.raises(ValueError, match="positive divisor of the images' side 4"):
    data.downsample(ds, 3)
  flat = data.ArrayDataset(np.zeros((3, 16)), np.zeros(3, int), 1, ("a",))
  with pytest.raises(ValueError, match="square"):
    data.downsample(flat, 2)


# ----------------------------------------------------------------------------- tensorflow-datasets


def test_tfds_not_installed_fails_at_once_with_instructions(monkeypatch):
  monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # `import` now raises.
  monkeypatch.delenv("TFDS_DATA_DIR", raising=False)
  with pytest.raises(ImportError) as err:
    data.load_tfds("cifar10", "train", data_dir="/nowhere/tfds")
  msg = str(err.value)
  assert 'pip install -e ".[tfds]"' in msg and "/nowhere/tfds" in msg
  # TFDS_DATA_DIR is advised only where it is read: when no data_dir is given.
  assert "TFDS_DATA_DIR" not in msg and "or pass data_dir=... to where they are" in msg
  with pytest.raises(ImportError) as err:
    data.load_tfds("cifar10", "train")
  msg = str(err.value)
  assert 'pip install -e ".[tfds]"' in msg and "TFDS_DATA_DIR" in msg


def _fake_tfds(records=None, error=None):
  calls = []

  def data_source(name, *, split, data_dir, download):
    calls.append(dict(name=name, split=split, data_dir=data_dir, download=download))
    if error is not None:
      raise error
    return records

  return types.SimpleNamespace(data_source=data_source), calls


def test_tfds_missing_data_fails_at_once_without_downloading(monkeypatch):
  fake, calls = _fake_tfds(error=AssertionError("Dataset cifar100: could not find data in /x"))
  monkeypatch.setitem(sys.modules, "tensorflow_datasets", fake)
  monkeypatch.setenv("TFDS_DATA_DIR", "/data/tfds")
  with pytest.raises(FileNotFoundError, match="could not find data.*under /data/tfds"):
    data.load_tfds("cifar100", "test")
  assert calls == [dict(name="cifar100", split="test", data_dir=None, download=False)]


def test_tfds_records_become_an_array_dataset(monkeypatch):
  rng = np.random.default_rng(0)
  recs = [
    {
      "image": rng.integers(0, 256, (32, 32, 3), dtype=np.uint8),
      "label": i % 100,
      "coarse_label": data.CIFAR100_COARSE[i % 100],
      "id": str(i),
    }
    for i in range(7)
  ]
  fake, _ = _fake_tfds(records=recs)
  monkeypatch.setitem(sys.modules, "tensorflow_datasets", fake)
  ds = data.load_tfds("cifar100", "train")
  assert ds.num_classes == 100 and ds.labels.tolist() == list(range(7))
  np.testing.assert_array_equal(ds.images[3], recs[3]["image"])
  assert ds.meta["coarse_labels"].tolist() == [data.CIFAR100_COARSE[i] for i in range(7)]
  recs[2]["label"] = 100
  with pytest.raises(ValueError, match=r"labels\[2\] = 100 is outside \[0, 100\)"):
    data.load_tfds("cifar100", "train")


# ----------------------------------------------------------------------------- batching


def test_shuffled_epoch_covers_every_index_once_with_a_padded_last_batch():
  batches = list(data.epoch_batches(1000, 128, seed=0, epoch=0))
  assert len(batches) == 8 == data.num_batches(1000, 128)
  assert all(b.indices.shape == (128,) and b.mask.shape == (128,) for b in batches)
  assert all(b.indices.dtype == np.int32 and b.mask.dtype == bool for b in batches)
  assert all(b.mask.all() for b in batches[:-1])
  assert batches[-1].mask.sum() == 1000 - 7 * 128 and not batches[-1].mask[-1]
  real = np.concatenate([b.indices[b.mask] for b in batches])
  np.testing.assert_array_equal(np.sort(real), np.arange(1000))
  assert np.all((batches[-1].indices >= 0) & (batches[-1].indices < 1000))  # Padding gathers.
  assert not np.array_equal(real, np.arange(1000))  # Shuffled.


def test_epoch_order_depends_on_seed_and_epoch_only():
  order = lambda s, e: np.concatenate([b.indices for b in data.epoch_batches(50, 16, s, e)])
  np.testing.assert_array_equal(order(1, 2), order(1, 2))
  assert not np.array_equal(order(1, 2), order(1, 3))
  assert not np.array_equal(order(1, 2), order(2, 2))
  dropped = list(data.epoch_batches(50, 16, 1, 2, drop_last=True))
  assert len(dropped) == 3 and all(b.mask.all() for b in dropped)
  tiny = list(data.epoch_batches(3, 8, 0, 0))  # Batch larger than the data set.
  assert len(tiny) == 1 and tiny[0].mask.sum() == 3 and set(tiny[0].indices) == {0, 1, 2}


def test_balanced_sampling_is_roughly_uniform_over_classes():
  labels = np.repeat(np.arange(10), data.imbalanced_counts(500, 10, 100))  # 50x imbalance.
  batches = list(data.epoch_batches(len(labels), 128, 0, 0, balanced_labels=labels))
  assert len(batches) == data.num_batches(len(labels), 128)
  assert all(b.mask.all() and b.indices.shape == (128,) for b in batches)
  idx = np.concatenate([b.indices for b in batches])
  freq = np.bincount(labels[idx], minlength=10) / len(idx)
  np.testing.assert_allclose(freq, 0.1, atol=0.025)
  tail = idx[labels[idx] == 9]
  assert set(tail) == set(np.flatnonzero(labels == 9))  # All 5 tail examples drawn.
  with pytest.raises(ValueError, match="shape"):
    next(data.epoch_batches(10, 4, 0, 0, balanced_labels=np.zeros(9, int)))


# ----------------------------------------------------------------------------- augmentation


def _reference_crop_flip(images, params, padding, mode):
  pad = ((0, 0), (padding, padding), (padding, padding), (0, 0))
  padded = np.pad(images, pad, mode=mode)
  h, w = images.shape[1:3]
  out = []
  for img, dy, dx, flip in zip(padded, *map(np.asarray, params)):
    win = img[dy : dy + h, dx : dx + w]
    out.append(win[:, ::-1] if flip else win)
  return np.stack(out)


@pytest.mark.parametrize("mode", ["constant", "reflect", "edge"])
def test_crop_flip_matches_a_numpy_reference(mode):
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (16, 10, 12, 3), dtype=np.uint8)
  params = data.crop_flip_params(jax.random.key(3), 16, padding=4)
  out = data.crop_flip(jnp.asarray(images), params, padding=4, mode=mode)
  assert out.shape == images.shape and out.dtype == jnp.uint8
  np.testing.assert_array_equal(np.asarray(out), _reference_crop_flip(images, params, 4, mode))


def test_without_padding_every_image_keeps_its_pixels():
  rng = np.random.default_rng(1)
  images = rng.random((32, 8, 8, 3), dtype=np.float32)
  out = np.asarray(data.random_crop_flip(jax.random.key(0), jnp.asarray(images), padding=0))
  assert out.dtype == np.float32
  flipped = np.array([np.array_equal(o, i[:, ::-1]) for o, i in zip(out, images)])
  same = np.array([np.array_equal(o, i) for o, i in zip(out, images)])
  assert np.all(flipped | same) and 4 < flipped.sum() < 28
  np.testing.assert_array_equal(
    np.sort(out.reshape(32, -1), axis=1), np.sort(images.reshape(32, -1), axis=1)
  )


def test_augmentation_draws_cover_the_offsets_and_flip_half():
  p = data.crop_flip_params(jax.random.key(0), 4096, padding=4)
  assert set(np.asarray(p.dy).tolist()) == set(range(9)) == set(np.asarray(p.dx).tolist())
  assert abs(float(np.mean(p.flip)) - 0.5) < 0.05


def test_augment_cifar_compiles_once_and_normalizes():
  traces = []

  @jax.jit
  def step(key, images):
    traces.append(1)  # Runs only while tracing.
    return data.augment_cifar(key, images)

  images = jnp.asarray(np.random.default_rng(0).integers(0, 256, (8, 32, 32, 3), np.uint8))
  outs = [step(jax.random.key(k), images) for k in range(4)]
  assert len(traces) == 1
  assert outs[0].shape == (8, 32, 32, 3) and outs[0].dtype == jnp.float32
  assert not np.array_equal(np.asarray(outs[0]), np.asarray(outs[1]))
  x = np.asarray(images, np.float64) / 255.0
  expected = (x - np.asarray(data.CIFAR10_MEAN)) / np.asarray(data.CIFAR10_STD)
  np.testing.assert_allclose(np.asarray(data.normalize(images)), expected, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(
    np.asarray(data.normalize(images.astype(jnp.float32) / 255.0)), expected, rtol=1e-5, atol=1e-5
  )


# ----------------------------------------------------------------------------- packaging


def test_core_package_does_not_import_the_data_kit():
  code = "import sys, absgd_jax; assert 'absgd_jax.data' not in sys.modules, 'imported'"
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  subprocess.run(
    [sys.executable, "-c", code], check=True, env=env, cwd=Path(__file__).resolve().parents[1]
  )


# ------------------------------------------------------------- data errors named, and named early


def _write_list(root: Path, n: int, num_classes: int, missing=(), bad_label=None) -> Path:
  """A split list of ``n`` files (label i % C); ``missing`` line numbers (1-based) are not
  created on disk; ``bad_label = (line, label)`` writes that label on that line."""
  lines = []
  for i in range(n):
    rel = f"c{i % num_classes}/img {i:04d}.jpg"  # A space in the name, as real lists have.
    label = i % num_classes
    if bad_label is not None and i + 1 == bad_label[0]:
      label = bad_label[1]
    lines.append(f"{rel} {label}")
    if i + 1 not in missing:
      (root / rel).parent.mkdir(parents=True, exist_ok=True)
      (root / rel).write_bytes(b"")
  path = root / "train.txt"
  path.write_text("\n".join(lines) + "\n")
  return path


def test_split_list_with_one_missing_file_is_caught_whole_naming_file_and_line(tmp_path):
  # One missing file in 1,000 can pass a 64-file sample check and crash the loader
  # mid-epoch. Every file is stat'ed: the missing one is named with its line.
  path = _write_list(tmp_path, 1000, 10, missing={617})
  with pytest.raises(
    FileNotFoundError,
    match=r"train\.txt: 1 of 1000 listed files are missing .*line 617: "
    r"c6/img 0616\.jpg",
  ):
    data.read_split_list(path, tmp_path, num_classes=10, check_files=True)
  ds = data.read_split_list(path, tmp_path, num_classes=10)  # Parsing alone does not stat.
  assert len(ds) == 1000
  (tmp_path / "c6" / "img 0616.jpg").write_bytes(b"")
  assert len(data.read_split_list(path, tmp_path, num_classes=10, check_files=True)) == 1000


def test_inat_json_missing_image_is_named(tmp_path):
  import json

  doc = {
    "images": [{"id": 1, "file_name": "a/1.jpg"}, {"id": 2, "file_name": "b/2.jpg"}],
    "annotations": [{"image_id": 1, "category_id": 0}, {"image_id": 2, "category_id": 1}],
    "categories": [{"id": 0}, {"id": 1}],
  }
  (tmp_path / "a").mkdir()
  (tmp_path / "a" / "1.jpg").write_bytes(b"")
  (tmp_path / "s.json").write_text(json.dumps(doc))
  with pytest.raises(FileNotFoundError, match=r"1 of 2 .*image id 2: b/2\.jpg"):
    data.read_inat_json(tmp_path / "s.json", tmp_path, check_files=True)


def test_label_out_of_range_names_file_and_line(tmp_path):
  # A label out of range is named with its file and line, not as "labels[k] = 12".
  path = _write_list(tmp_path, 50, 10, bad_label=(37, 12))
  with pytest.raises(
    ValueError,
    match=r"train\.txt:37: label 12 of 'c6/img 0036\.jpg' is "
    r"outside \[0, 10\)",
  ):
    data.read_split_list(path, tmp_path, num_classes=10)
  path = _write_list(tmp_path, 50, 10, bad_label=(5, -1))
  with pytest.raises(ValueError, match=r"train\.txt:5: label -1 .* outside"):
    data.read_split_list(path, tmp_path)


def test_class_absent_from_a_list_warns(tmp_path):
  # A class absent from a list must not train without a warning.
  path = _write_list(tmp_path, 40, 8)  # Labels 0..7 of 10 classes: 8 and 9 absent.
  with pytest.warns(UserWarning, match=r"no image of 2 of its 10 classes \(8, 9\)"):
    ds = data.read_split_list(path, tmp_path, num_classes=10)
  assert ds.class_counts().tolist() == [5] * 8 + [0, 0]


@pytest.mark.parametrize("kind", ["dir", "zip"])
def test_empty_class_folder_is_named(tmp_path, kind):
  # An empty class folder is named ("has 9 classes; cifar10 needs 10" alone would not say
  # which), since it would shift the labels of every class after it.
  files = _toy_files(prefix="train/")
  if kind == "dir":
    for name, blob in files.items():
      (tmp_path / "src" / name).parent.mkdir(parents=True, exist_ok=True)
      (tmp_path / "src" / name).write_bytes(blob)
    (tmp_path / "src" / "train" / "bee").mkdir()
    (tmp_path / "src" / "train" / "bee" / "notes.txt").write_text("no images here")
    src = tmp_path / "src"
  else:
    src = _make_zip(tmp_path / "toy.zip", files)
    with zipfile.ZipFile(src, "a") as z:
      z.writestr(zipfile.ZipInfo("train/bee/"), b"")  # An empty folder entry.
  with pytest.raises(
    ValueError,
    match=r"class folder\(s\) \['train/bee'\] in .* hold no "
    r"images",
  ):
    data.load_image_folder(src, use_cache=False)


def test_missing_class_of_a_known_data_set_is_named():
  # A zip need not record an empty folder at all: the data set's class table names it.
  found = [c for c in data.CIFAR10_CLASSES if c != "cat"]
  with pytest.raises(
    ValueError,
    match=r"train\.zip has 9 classes; cifar10 needs 10: no images "
    r"of class\(es\) \['cat'\]",
  ):
    data.check_class_names(found, "cifar10", "train.zip")
  data.check_class_names(list(data.CIFAR10_CLASSES), "cifar10", "train.zip")


def test_data_facts_table_agrees_with_the_sources():
  f = data.facts("cifar100")
  assert f.num_classes == len(f.class_names) == 100
  assert f.normalisation == (data.CIFAR100_MEAN, data.CIFAR100_STD)
  assert np.array_equal(f.asym_noise(), data.cifar100_asym_mapping())
  assert data.facts("cifar10").asym_noise() == data.CIFAR10_ASYM
  assert data.facts("digits").normalisation is None and not data.facts("digits").streamed
  train, _ = data.load_digits()
  assert len(train) <= data.facts("digits").train_size
  assert all(
    f.streamed == bool(f.default_lists[0]) or f.name == "image-list" for f in data.FACTS.values()
  )
  with pytest.raises(ValueError, match="dataset='mnist' is not one of"):
    data.facts("mnist")
