"""Large-scale data: split lists, ImageNet-style transforms, grain streaming, and training on
streamed files on 1 and 8 devices and 2 processes, two-stage from a checkpoint."""

import concurrent.futures
import functools
import json
import os
import shutil
import textwrap

import jax
import numpy as np
import pytest
from PIL import Image

from absgd_jax import data
from absgd_jax.data import imagenet_transforms as T
import yardstick
from processes import launch

pytest.importorskip("grain", reason="the streaming pipeline needs grain (absgd_jax[scale])")
from absgd_jax.data.streaming import StreamOptions, stream_images  # noqa: E402
from absgd_jax.train.members import stack  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make_image_list(root, counts=(40, 20, 10, 5), seed=0, name="train.txt"):
  """A long-tailed list of small JPEGs of varied sizes and aspect ratios under ``root``."""
  rng = np.random.default_rng(seed)
  lines = []
  for c, n in enumerate(counts):
    os.makedirs(os.path.join(root, f"class {c}"), exist_ok=True)  # A space in the path.
    for i in range(n):
      rel = f"class {c}/{name[:-4]}_{i:03d}.jpg"
      h, w = rng.integers(24, 72, size=2)
      base = np.full((h, w, 3), 40 + 50 * c, np.uint8)  # Classes differ in brightness.
      noise = rng.integers(0, 40, (h, w, 3), dtype=np.uint8)
      Image.fromarray(base + noise).save(os.path.join(root, rel), quality=90)
      lines.append(f"{rel} {c}")
  with open(os.path.join(root, name), "w") as f:
    f.write("\n".join(lines) + "\n")
  return os.path.join(root, name)


# ----------------------------------------------------------------------------- split lists


def test_split_list_reads_paths_with_spaces_and_names_bad_lines(tmp_path):
  path = make_image_list(str(tmp_path), counts=(3, 2))
  ds = data.read_split_list(path, tmp_path)
  assert len(ds) == 5 and ds.class_counts().tolist() == [3, 2]
  assert ds.path(0) == "class 0/train_000.jpg" and os.path.exists(ds.full_path(0))
  assert ds.paths.dtype.kind == "S"  # One byte per character.
  assert data.read_split_list(path, tmp_path, num_classes=4).num_classes == 4
  (tmp_path / "places.txt").write_text("/a/abbey/1.jpg\t3\n")  # Tab, leading slash.
  assert data.read_split_list(tmp_path / "places.txt", tmp_path).path(0) == "a/abbey/1.jpg"
  (tmp_path / "bad.txt").write_text("a.jpg 0\n\nb.jpg x\n")
  with pytest.raises(ValueError, match=r"bad.txt:3: expected 'relative/path label'"):
    data.read_split_list(tmp_path / "bad.txt", tmp_path)
  (tmp_path / "range.txt").write_text("a.jpg 0\nb.jpg 5\n")
  with pytest.raises(ValueError, match=r"outside \[0, 3\)"):
    data.read_split_list(tmp_path / "range.txt", tmp_path, num_classes=3)


def test_inat_json_labels_come_from_annotations(tmp_path):
  doc = {
    "images": [
      {"id": 7, "file_name": "train_val2018/Plantae/2/a.jpg"},
      {"id": 3, "file_name": "train_val2018/Aves/0/b.jpg"},
    ],
    "annotations": [{"image_id": 3, "category_id": 0}, {"image_id": 7, "category_id": 2}],
    "categories": [{"id": 0, "name": "bird"}, {"id": 1, "name": "x"}, {"id": 2, "name": "plant"}],
  }
  (tmp_path / "train2018.json").write_text(json.dumps(doc))
  ds = data.read_inat_json(tmp_path / "train2018.json", tmp_path)
  assert [ds.path(0), ds.path(1)] == ["train_val2018/Plantae/2/a.jpg", "train_val2018/Aves/0/b.jpg"]
  assert ds.labels.tolist() == [2, 0] and ds.num_classes == 3
  assert ds.class_names == ("bird", "x", "plant")
  doc["annotations"].pop()
  (tmp_path / "bad.json").write_text(json.dumps(doc))
  with pytest.raises(ValueError, match="image 7 .* has no annotation"):
    data.read_inat_json(tmp_path / "bad.json", tmp_path)


def test_file_dataset_works_with_imbalance_noise_and_subsets(tmp_path):
  ds = data.read_split_list(make_image_list(str(tmp_path), counts=(10, 10, 10)), tmp_path)
  lt = data.make_imbalanced(ds, 5, seed=0)
  assert isinstance(lt, data.FileDataset)
  assert lt.class_counts().tolist() == data.imbalanced_counts(10, 3, 5).tolist()
  noisy, flipped = data.symmetric_noise(lt.labels, 0.4, 3, seed=0)
  assert (lt.with_labels(noisy).labels != lt.labels).sum() == flipped.sum() > 0


# ----------------------------------------------------------------------------- transforms


def test_crop_box_respects_bounds_scale_and_ratio():
  rng = np.random.default_rng(0)
  for _ in range(2000):  # Any image shape, including extreme ones (fallback path).
    w, h = rng.integers(20, 500, size=2)
    l, t, r, b = T.crop_box(int(w), int(h), rng)
    assert 0 <= l < r <= w and 0 <= t < b <= h
  # On a square image a draw (area a ~ U[0.08, 1], log-ratio uniform) fits iff
  # a <= min(r, 1/r); the accepted areas' mean, by numerical integration over (a, log r):
  a = np.linspace(0.08, 1, 2001)[:, None]
  r = np.exp(np.linspace(np.log(3 / 4), np.log(4 / 3), 2001))[None, :]
  fits = a <= np.minimum(r, 1 / r)
  want = (a * fits).sum() / fits.sum()
  areas, ratios = [], []
  for _ in range(4000):
    l, t, r_, b = T.crop_box(400, 400, rng)
    areas.append((r_ - l) * (b - t) / 160000)
    ratios.append((r_ - l) / (b - t))
  assert abs(np.mean(areas) - want) < 0.01, (np.mean(areas), want)
  assert 0.075 < min(areas) and max(areas) <= 1.0
  assert 0.74 < min(ratios) and max(ratios) < 1.34


def test_random_resized_crop_is_the_crop_resized_then_maybe_flipped():
  rng = np.random.default_rng(1)
  img = Image.fromarray(rng.integers(0, 256, (60, 80, 3), dtype=np.uint8))
  out = T.random_resized_crop(img, np.random.default_rng(5), size=32)
  box_rng = np.random.default_rng(5)
  box = T.crop_box(80, 60, box_rng)
  flip = box_rng.random() < 0.5
  want = np.asarray(img.crop(box).resize((32, 32), Image.BILINEAR))
  want = want[:, ::-1] if flip else want
  assert np.abs(out.astype(int) - want).mean() < 1.0  # PIL's box= resize vs crop-then-resize.
  np.testing.assert_array_equal(out, T.random_resized_crop(img, np.random.default_rng(5), 32))


def test_resize_center_crop_matches_resize_then_crop():
  yy, xx = np.mgrid[0:300, 0:400]  # Smooth, so sub-pixel offsets move values little.
  pix = 128 + 100 * np.sin(xx / 23.0)[..., None] * np.cos(yy / 17.0)[..., None] * [1, 0.5, -1]
  img = Image.fromarray(pix.astype(np.uint8))
  out = T.resize_center_crop(img, 256, 224)
  big = img.resize((341, 256), Image.BILINEAR)  # Shorter side 256, aspect kept.
  left, top = (341 - 224) // 2, (256 - 224) // 2
  want = np.asarray(big.crop((left, top, left + 224, top + 224)))
  assert out.shape == (224, 224, 3)
  assert np.abs(out.astype(int) - want).mean() < 3.0  # Sub-pixel offsets of the two ways.
  with pytest.raises(ValueError, match="crop=300 must not exceed resize=256"):
    T.resize_center_crop(img, 256, 300)


def test_a_damaged_file_is_named():
  with pytest.raises(ValueError, match="cannot decode x.jpg"):
    T.decode_rgb(b"not an image", "x.jpg")


# ----------------------------------------------------------------------------- streaming


def test_stream_follows_the_rows_and_is_independent_of_workers_and_batching(tmp_path):
  ds = data.read_split_list(make_image_list(str(tmp_path), counts=(6, 4, 2)), tmp_path)
  rows = [np.array([5, 0, 11, 3]), np.array([7, 7, 1, 2])]
  pos = [np.arange(4), np.arange(4, 8)]
  opt = StreamOptions(image_size=16, resize=20)
  test = list(stream_images(ds, rows, train=False, options=opt))
  for batch, r in zip(test, rows):  # The test transform, file by file.
    for img, i in zip(batch, r):
      with Image.open(ds.full_path(i)) as f:
        np.testing.assert_array_equal(img, T.resize_center_crop(f.convert("RGB"), 20, 16))
  a = list(stream_images(ds, rows, train=True, seed=(3, 1), positions=pos, options=opt))
  b = list(
    stream_images(
      ds,
      rows,
      train=True,
      seed=(3, 1),
      positions=pos,
      options=StreamOptions(image_size=16, resize=20, workers=2),
    )
  )
  np.testing.assert_array_equal(np.stack(a), np.stack(b))
  # The same rows split into other batches: each image's crop depends on its position only.
  rows2 = [np.concatenate(rows)[i : i + 2] for i in range(0, 8, 2)]
  pos2 = [np.arange(8)[i : i + 2] for i in range(0, 8, 2)]
  c = list(stream_images(ds, rows2, train=True, seed=(3, 1), positions=pos2, options=opt))
  np.testing.assert_array_equal(np.concatenate(a), np.concatenate(c))
  d = list(stream_images(ds, rows, train=True, seed=(3, 2), positions=pos, options=opt))
  assert not np.array_equal(np.stack(a), np.stack(d))  # Another epoch: other crops.


def test_missing_file_is_named(tmp_path):
  ds = data.read_split_list(make_image_list(str(tmp_path), counts=(2, 2)), tmp_path)
  os.remove(ds.full_path(1))
  with pytest.raises(Exception, match="cannot read .*train_001.jpg"):
    list(stream_images(ds, [np.array([0, 1])], train=False, options=StreamOptions(16, 20)))


# ----------------------------------------------------------------------------- training


@pytest.fixture(scope="module")
def image_lists(tmp_path_factory):
  """The image lists every training test reads (written once)."""
  root = str(tmp_path_factory.mktemp("data"))
  make_image_list(root, counts=(48, 24, 12, 6), seed=0, name="train.txt")
  make_image_list(root, counts=(6, 6, 6, 6), seed=1, name="test.txt")
  return root


def _list_config(root, out_dir, **kw):
  from absgd_jax.train import make_config

  base = dict(
    dataset="image-list",
    classes=4,
    data_dir=root,
    train_list="train.txt",
    test_list="test.txt",
    crop_size=24,
    resize_size=28,
    data_workers=0,
    model="resnet8",
    epochs=1,
    batch_size=16,
    lr=0.05,
    method="absgd",
    lam=1.0,
    checkpoint=False,
    out_dir=str(out_dir),
  )
  base.update(kw)
  return make_config(**base)


@pytest.fixture(scope="module")
def stage1(image_lists, tmp_path_factory, one_device):
  """One epoch of ABSGD on one device, checkpointed: the run the training tests start from or
  compare with. Tests that write into a run folder copy ``out_dir`` first."""
  from absgd_jax.train import Trainer

  out = tmp_path_factory.mktemp("stage1")
  t = Trainer(
    _list_config(image_lists, out, checkpoint=True), progress=False, log=False, devices=one_device
  )
  [summary] = t.fit()
  return dict(out_dir=str(out), summary=summary, params=jax.device_get(t.member_state(0).params))


@pytest.fixture(scope="module")
def float32_chaos(image_lists, stage1, tmp_path_factory, one_device):
  """How far float32 rounding alone moves stage1's weights (tests/yardstick.py): the same run
  with every initial weight nudged by one ulp."""
  from absgd_jax.train import Trainer

  t = Trainer(
    _list_config(image_lists, tmp_path_factory.mktemp("nudged")),
    progress=False,
    log=False,
    devices=one_device,
  )
  t.state = stack([t.member_state(0).replace(params=yardstick.nudge(t.member_state(0).params))])
  t.fit()
  return yardstick.distance(jax.device_get(t.member_state(0).params), stage1["params"])


@pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 simulated devices")
def test_streamed_training_is_the_same_on_one_and_eight_devices(
  image_lists, stage1, tmp_path, float32_chaos
):
  from absgd_jax.train import Trainer

  eight = Trainer(
    _list_config(image_lists, tmp_path / "run"),
    progress=False,
    log=False,
    devices=jax.devices()[:8],
  )
  [s8] = eight.fit()
  s1 = stage1["summary"]  # The same run on one device (it also checkpoints: no other change).
  assert s8["devices"] == 8 and s1["devices"] == 1
  # Sums over 1 or 8 shards round differently: float32 noise, nothing more.
  yardstick.assert_within(
    jax.device_get(eight.member_state(0).params),
    stage1["params"],
    float32_chaos,
    "8 devices against 1",
  )
  assert s1["final"]["test_acc"] == s8["final"]["test_acc"]
  assert s1["train_size"] == 90


def test_a_streamed_run_resumed_from_its_checkpoint_continues_exactly(
  image_lists, stage1, tmp_path, one_device
):
  from absgd_jax.train import Trainer

  straight = Trainer(
    _list_config(image_lists, tmp_path / "a", epochs=2),
    progress=False,
    log=False,
    devices=one_device,
  )
  straight.fit()
  shutil.copytree(stage1["out_dir"], tmp_path / "b")  # Epoch 0 done, checkpointed.
  resumed = Trainer(
    _list_config(image_lists, tmp_path / "b", epochs=2, checkpoint=True),
    progress=False,
    log=False,
    devices=one_device,
  )
  resumed.fit()
  assert [r["epoch"] for r in resumed.history] == [0, 1]
  jax.tree.map(
    np.testing.assert_array_equal,
    jax.device_get(straight.member_state(0).params),
    jax.device_get(resumed.member_state(0).params),
  )


def test_two_stage_from_a_stage_one_checkpoint_trains_only_the_head(
  image_lists, stage1, tmp_path, one_device, fast_compile
):
  from absgd_jax.train import Trainer

  before = stage1["params"]
  cfg2 = _list_config(
    image_lists, tmp_path / "stage2", init_from=stage1["out_dir"], stage2_trainable="fc", lam=2.0
  )
  stage2 = Trainer(cfg2, progress=False, log=False, devices=one_device)
  start = jax.device_get(stage2.member_state(0).params)
  jax.tree.map(np.testing.assert_array_equal, before, start)  # Restored exactly.
  assert int(stage2.member_state(0).w_state.count) == 0  # s is estimated afresh.
  stage2.fit()
  after = jax.device_get(stage2.member_state(0).params)
  for name in before:
    same = all(
      np.array_equal(a, b)
      for a, b in zip(jax.tree.leaves(before[name]), jax.tree.leaves(after[name]))
    )
    assert same == (name != "head"), name
  bad = _list_config(image_lists, tmp_path / "bad", init_from=stage1["out_dir"], classes=5)
  with pytest.raises(ValueError, match="head/(bias|kernel) has shape"):
    Trainer(bad, progress=False, log=False, devices=one_device)
  assert Trainer(bad.replace(init_head="drop"), progress=False, log=False, devices=one_device)


def test_init_from_a_pretrained_file_loads_the_backbone_and_starts_a_new_head(
  image_lists, tmp_path, one_device, fast_compile
):
  from absgd_jax.models import create_model, flax_to_torch_state_dict
  from absgd_jax.train import Trainer

  source = create_model("resnet18", 1000)  # An "ImageNet" model with 1000 classes.
  src = jax.jit(functools.partial(source.init, train=False))(
    jax.random.key(7), np.zeros((1, 24, 24, 3), np.float32)
  )
  src = jax.device_get(src)
  np.savez(tmp_path / "r18.npz", **flax_to_torch_state_dict(src))
  cfg = _list_config(
    image_lists,
    tmp_path / "run",
    model="resnet18",
    init_from=str(tmp_path / "r18.npz"),
    init_head="drop",
  )
  t = Trainer(cfg, progress=False, log=False, devices=one_device)
  got = jax.device_get(t.member_state(0).params)
  np.testing.assert_array_equal(got["stem_conv"]["kernel"], src["params"]["stem_conv"]["kernel"])
  np.testing.assert_array_equal(
    jax.device_get(t.member_state(0).batch_stats)["stage4_block2"]["bn2"]["var"],
    src["batch_stats"]["stage4_block2"]["bn2"]["var"],
  )
  assert got["head"]["kernel"].shape == (512, 4)
  with pytest.raises(ValueError, match="fc"):  # 1000 classes into 4, without init_head=drop.
    Trainer(cfg.replace(init_head="keep"), progress=False, log=False, devices=one_device)


def test_bfloat16_computes_in_bfloat16_and_keeps_float32_state(
  image_lists, tmp_path, one_device, fast_compile
):
  from absgd_jax.train import Trainer

  t = Trainer(
    _list_config(image_lists, tmp_path / "run", dtype="bfloat16"),
    progress=False,
    log=False,
    devices=one_device,
  )
  [s] = t.fit()
  assert np.isfinite(s["final"]["train_loss"])
  assert {x.dtype for x in jax.tree.leaves(t.member_state(0).params)} == {np.dtype("float32")}
  assert t.member_state(0).w_state.log_s.dtype == np.float32
  logits = t.model.apply(
    {"params": t.member_state(0).params, "batch_stats": t.member_state(0).batch_stats},
    np.zeros((1, 24, 24, 3), np.float32),
    train=False,
  )
  assert logits.dtype == np.float32  # The head computes in float32 ...
  conv_out = t.model.apply(
    {"params": t.member_state(0).params, "batch_stats": t.member_state(0).batch_stats},
    np.zeros((1, 24, 24, 3), np.float32),
    train=False,
    capture_intermediates=True,
    mutable=["intermediates"],
  )[1]
  dtypes = {x.dtype for x in jax.tree.leaves(conv_out["intermediates"])}
  assert np.dtype(jax.numpy.bfloat16) in dtypes  # ... the body in bfloat16.


_WORKER = textwrap.dedent("""
    import json, sys
    import numpy as np
    import jax


    def main():  # grain's workers re-import this file: nothing may run at import.
      jax.config.update("jax_cpu_collectives_implementation", "gloo")
      pid, nproc, port, out, root = (int(sys.argv[1]), int(sys.argv[2]), sys.argv[3],
                                     sys.argv[4], sys.argv[5])
      if nproc > 1:
        jax.distributed.initialize(f"localhost:{port}", num_processes=nproc, process_id=pid)
      from absgd_jax.train import Trainer, make_config
      cfg = make_config(**json.loads(sys.argv[6]), data_dir=root, data_workers=1,
                        out_dir=out + f"/run{nproc}_{pid}")
      t = Trainer(cfg, progress=False, log=False)
      [s] = t.fit()
      leaves = [np.asarray(x) for x in jax.tree.leaves(jax.device_get(t.member_state(0).params))]
      np.savez(out + f"/params_{nproc}_{pid}.npz", *leaves, acc=s["final"]["test_acc"])


    if __name__ == "__main__":
      main()
""")
_WORKER_CONFIG = dict(
  dataset="image-list",
  classes=4,
  train_list="train.txt",
  test_list="test.txt",
  crop_size=24,
  resize_size=28,
  model="resnet8",
  epochs=1,
  batch_size=16,
  lr=0.05,
  lam=1.0,
  checkpoint=False,
)


def test_two_processes_stream_their_own_rows_and_match_one(image_lists, tmp_path, float32_chaos):
  script = tmp_path / "worker.py"
  script.write_text(_WORKER)
  # The reference is a third process, not this one: the result's last bits depend on how many
  # devices the process has (this one's 8 moved weights by 1.2e-5 at XLA's default code
  # generator, above the tolerance), so one process with 2 devices, as the 2 processes have
  # together. All three at once: each compiles on one core, and the machine may have more.
  config = json.dumps(_WORKER_CONFIG)
  with concurrent.futures.ThreadPoolExecutor(2) as pool:
    runs = [
      pool.submit(launch, script, 1, 2, str(tmp_path), image_lists, config),
      pool.submit(launch, script, 2, 1, str(tmp_path), image_lists, config),
    ]
    for run in runs:
      run.result()
  single = np.load(tmp_path / "params_1_0.npz")
  for pid in range(2):
    multi = np.load(tmp_path / f"params_2_{pid}.npz")
    assert multi.files == single.files
    yardstick.assert_within(
      [multi[k] for k in multi.files if k != "acc"],
      [single[k] for k in single.files if k != "acc"],
      float32_chaos,
      f"process {pid} of 2 against one process",
    )
    assert float(multi["acc"]) == float(single["acc"])
