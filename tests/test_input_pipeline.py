"""The two input pipelines give the same run: batches sent from the host, or the training set
kept on the device with an epoch in one call. Same order, same crop and flip draws, so a run
folder made either way holds the same numbers."""

import os

import jax
import numpy as np
import pytest

from absgd_jax.train import Sweep, Trainer, inputs, make_config

ONE = jax.devices()[:1]
CIFAR = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "cifar10-jpeg")
# float32 sums in other orders (a scan's body against separate steps), compounded over steps.
TOL = dict(rtol=2e-4, atol=2e-6)


def _both(config, devices=ONE, sweep=None):
  runs = {}
  for pipeline in ("host", "device"):
    cfg = config.replace(input_pipeline=pipeline)
    kw = dict(progress=False, log=False, devices=devices, new_run=True)
    t = Sweep(cfg, sweep, **kw) if sweep else Trainer(cfg, **kw)
    t.fit()
    assert t.input_pipeline == pipeline
    runs[pipeline] = t
  return runs["host"], runs["device"]


def _assert_same_run(host, device):
  jax.tree.map(
    lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), **TOL),
    jax.device_get(host.state),
    jax.device_get(device.state),
  )
  for h, d in zip(host.histories, device.histories):
    for a, b in zip(h, d):
      for key in ("train_loss", "weighted_loss", "ess_mean", "log_s", "train_acc"):
        assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-6), key
      assert a["class_mean_weight"] == pytest.approx(b["class_mean_weight"], rel=1e-4)
      assert a["test_acc"] == pytest.approx(b["test_acc"], abs=1.5 / len(host.exp.test))


def test_digits_run_is_the_same_from_either_pipeline(tmp_path):
  cfg = make_config("digits-lt", epochs=2, checkpoint=False, out_dir=str(tmp_path / "run"))
  host, device = _both(cfg)
  _assert_same_run(host, device)


@pytest.mark.skipif(not os.path.isdir(CIFAR), reason="needs ../shared/data/cifar10-jpeg")
def test_cifar_with_crop_flip_and_label_noise_is_the_same_from_either_pipeline(tmp_path):
  # The augmentation draws keyed off the state's rng and step; flipped labels travel with the
  # resident set. Few steps at a small lr: this is float32 agreement, not chaos.
  cfg = make_config(
    "cifar10-noise", data_dir=CIFAR, model="resnet8", image_size=8, crop_padding=1, n_max=24,
    test_per_class=4, epochs=2, batch_size=32, lr=0.02, loss="ce", method="absgd", lam=-1.0,
    lr_decay_epochs=(), checkpoint=False, out_dir=str(tmp_path / "run"),
  )  # fmt: skip
  host, device = _both(cfg)
  _assert_same_run(host, device)
  assert host.history[-1]["flipped_mean_weight"] == pytest.approx(
    device.history[-1]["flipped_mean_weight"], rel=1e-4
  )


def test_a_sweep_with_its_own_seeds_is_the_same_from_either_pipeline(tmp_path):
  cfg = make_config("digits-lt", epochs=2, checkpoint=False, out_dir=str(tmp_path / "sweep"))
  host, device = _both(cfg, sweep={"lam": [1, 5], "seed": [0, 1]})
  assert not host.shared_batches  # per-member batches, [M, B], from two resident sets
  _assert_same_run(host, device)
  assert host.result["winner"] == device.result["winner"]


@pytest.mark.skipif(jax.device_count() < 4, reason="needs 4 simulated devices")
def test_a_batch_sharded_over_four_devices_is_the_same_from_either_pipeline(tmp_path):
  cfg = make_config("digits-lt", epochs=1, checkpoint=False, out_dir=str(tmp_path / "run"))
  host, device = _both(cfg, devices=jax.devices()[:4])
  assert device.mesh.size == 4
  _assert_same_run(host, device)


def test_auto_is_the_host_pipeline_on_the_cpu_and_device_is_refused_where_it_cannot_work(
  tmp_path,
):
  cfg = make_config("digits-lt", epochs=1, checkpoint=False, out_dir=str(tmp_path / "a"))
  assert cfg.input.pipeline == "auto"
  t = Trainer(cfg, progress=False, log=False, devices=ONE, new_run=True)
  assert jax.default_backend() == "cpu" and t.input_pipeline == "host"
  l2rw = cfg.replace(method="l2rw", input_pipeline="device")
  with pytest.raises(ValueError, match="input_pipeline=device cannot be used here: method='l2rw'"):
    Trainer(l2rw, progress=False, log=False, devices=ONE, new_run=True)


def test_the_progress_bar_counts_finished_steps_only(monkeypatch):
  # The host waits on a step's output LAG_STEPS steps after sending it: the bar never counts
  # a step whose output does not exist yet.
  sent, finished = [], []

  class Lazy:
    def __init__(self, i):
      self.i = i

  monkeypatch.setattr(inputs.jax, "device_get", lambda out: finished.append(out.i) or out.i)

  def step(carry, batch):
    sent.append(batch)
    assert len(sent) - len(finished) <= inputs.LAG_STEPS + 1
    return carry, Lazy(batch)

  carry, outs = inputs.run_steps(step, None, iter(range(10)), total=10, desc="t", show=False)
  assert outs == list(range(10)) and finished == list(range(10))
