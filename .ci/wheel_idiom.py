"""Runs the README's train step against an installed wheel, to catch a file the wheel lacks.

    python .ci/wheel_idiom.py README.md     # from a venv holding only the wheel and its deps

It imports absgd_jax from site-packages (never from a checkout), checks that the wheel carries
what the package promises (py.typed, the training kit's modules, the absgd-train command), and
runs the README's idiom for a few steps on a tiny Flax model with BatchNorm.
"""

import importlib
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import sysconfig

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import absgd_jax

site = sysconfig.get_paths()["purelib"]
where = os.path.dirname(absgd_jax.__file__)
assert os.path.realpath(where).startswith(os.path.realpath(site)), (
  f"absgd_jax was imported from {where}, not from the wheel installed in {site}"
)
assert os.path.exists(os.path.join(where, "py.typed")), "the wheel lacks absgd_jax/py.typed"
assert absgd_jax.__version__ == importlib.metadata.version("absgd_jax"), "two versions"
for name in (
  "absgd_jax.losses",
  "absgd_jax.train",
  "absgd_jax.train.demo",
  "absgd_jax.train.cli",
  "absgd_jax.models",
  "absgd_jax.data",
):
  importlib.import_module(name)
cli = shutil.which("absgd-train")
assert cli, "the wheel installs no absgd-train command"
listing = subprocess.run([cli, "--list"], capture_output=True, text=True, check=True).stdout
assert "cifar10-lt" in listing, listing


class SmallNet(nn.Module):
  @nn.compact
  def __call__(self, x, train):
    x = nn.Conv(4, (3, 3))(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
    return nn.Dense(3)(nn.relu(x).mean(axis=(1, 2)))


with open(sys.argv[1]) as f:
  readme = f.read()
idiom = re.search(r"```python\n(.*?)```", readme[readme.index("## The idiom") :], re.S).group(1)
namespace = {"model": SmallNet()}
exec(compile(idiom, "README.md (the idiom)", "exec"), namespace)
train_step, opt, weigher = namespace["train_step"], namespace["opt"], namespace["weigher"]

rng = np.random.default_rng(0)
images = jnp.asarray(rng.normal(size=(16, 8, 8, 1)), jnp.float32)
labels = jnp.asarray(rng.integers(0, 3, size=16), jnp.int32)
mask = jnp.arange(16) < 12  # the last 4 rows are padding
variables = SmallNet().init(jax.random.key(0), images, train=False)
params, batch_stats = variables["params"], variables["batch_stats"]
opt_state, w_state = opt.init(params), weigher.init()
losses = []
for _ in range(5):
  params, batch_stats, opt_state, w_state, loss = train_step(
    params, batch_stats, opt_state, w_state, images, labels, mask
  )
  losses.append(float(loss))
assert all(np.isfinite(losses)) and losses[-1] < losses[0], losses
assert int(w_state.count) == 5, w_state
print(
  f"the wheel's absgd_jax {absgd_jax.__version__} from {where}: README idiom ran 5 steps, "
  f"loss {losses[0]:.4f} -> {losses[-1]:.4f}"
)
