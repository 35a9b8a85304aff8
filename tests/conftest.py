"""Test-suite setup: 8 simulated CPU devices, a shared compilation cache, and fixtures.

Nearly all of the suite's time is XLA compiling. Three things keep it down:

- A persistent compilation cache. Each new ``Trainer`` jits fresh closures, so JAX's in-memory
  cache misses even when the program is the same one another test compiled a minute ago; the
  on-disk cache is keyed by the program itself, so it hits. It lives in ``.cache/jax`` (ignored
  by git) and is shared by every pytest process and every worker the tests launch.
- One device unless a test is about parallelism: ``Trainer(..., devices=one_device)``.
  The 8 simulated devices stay available for the tests that compare 1 with 8.
- ``fast_compile`` for tests that check wiring (shapes, files, errors), not numbers.
- A cheaper XLA CPU code generator for the whole suite (``TEST_XLA_FLAGS``): the programs
  here are small and run for milliseconds, so compiling them, not running them, is the cost.
  Measured on 2 cores from a fresh clone: the suite's CPU time fell by about 30%, and no
  test changed its verdict (docs/contributing.md). ``ABSGD_TEST_XLA_DEFAULTS=1 pytest``
  runs the suite with XLA's default code generator instead, as users' programs are compiled.
"""

import os
import subprocess
import sys
import zlib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Must happen before jax initialises its backends; pytest imports conftest first. Environment
# variables, not jax.config, so that the worker processes the tests launch share the cache.
# No size limit (-1), on purpose: with a limit, jax's cache takes a file lock and re-reads every
# entry's access time on each write to decide what to evict, so each write costs time in
# proportion to the entries already there (about 2,000 after one run of the suite); that
# bookkeeping was a fifth of the suite's time. Without it an entry is one plain file write.
# The lock only kept a reader from meeting an entry another process is half-way through
# writing; such an entry fails to decompress, which jax turns into a warning and a fresh
# compile (tried: entries cut in half give the right result). ``rm -rf .cache/jax`` empties it.
for _name, _value in (
  ("JAX_PLATFORMS", "cpu"),
  ("JAX_COMPILATION_CACHE_DIR", os.path.join(ROOT, ".cache", "jax")),
  ("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0"),
  ("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0"),
  ("JAX_COMPILATION_CACHE_MAX_SIZE", "-1"),
):
  os.environ.setdefault(_name, _value)

# The legacy elemental fusion emitters compile a small program in about half the time of the
# default MLIR ones, and LLVM at -O0 takes a further part; both give the same operations with
# other instruction sequences, so results agree to float rounding, which every comparison in
# the suite allows for (a test comparing two compiled runs compiles both with these flags).
TEST_XLA_FLAGS = "--xla_cpu_use_fusion_emitters=false --xla_backend_optimization_level=0"


def _xla_accepts(flags: str) -> bool:
  """Whether this jaxlib knows ``flags``: XLA aborts the process on an unknown flag, so a
  jaxlib that renamed one must not get it. Asked once per jaxlib version, in a child process."""
  import jaxlib  # Its version only: XLA reads XLA_FLAGS when jax starts a backend, not here.

  name = f"xla-flags-{jaxlib.__version__}-{zlib.crc32(flags.encode()):08x}"
  mark = os.path.join(ROOT, ".cache", name)
  if not os.path.exists(mark):
    env = dict(os.environ, XLA_FLAGS=flags, JAX_PLATFORMS="cpu")
    probe = "from jax._src import xla_bridge; xla_bridge.get_backend()"
    ok = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True).returncode
    os.makedirs(os.path.dirname(mark), exist_ok=True)
    with open(f"{mark}.{os.getpid()}", "w") as f:
      f.write("yes" if ok == 0 else "no")
    os.replace(f"{mark}.{os.getpid()}", mark)
  with open(mark) as f:
    return f.read() == "yes"


_flags = os.environ.get("XLA_FLAGS", "")
if TEST_XLA_FLAGS not in _flags:  # Not yet set by the pytest process that started this one.
  _flags = f"{_flags} {TEST_XLA_FLAGS}".strip()
if not os.environ.get("ABSGD_TEST_XLA_DEFAULTS") and _xla_accepts(_flags):
  # Before jax starts its backend, and in the environment, so that processes the tests launch
  # (experiment scripts, multi-host workers) compile the same way; tests/processes.py's
  # child_env adds to these flags rather than replacing them.
  os.environ["XLA_FLAGS"] = _flags

import jax  # noqa: E402
import pytest  # noqa: E402

# 8 simulated CPU devices for this process only: through jax.config, not XLA_FLAGS, so that
# the processes the tests launch (the CLI, multi-host workers) do not inherit them.
jax.config.update("jax_num_cpu_devices", 8)


@pytest.fixture(scope="session")
def one_device():
  """A one-device list for ``Trainer(..., devices=one_device)``.

  The default mesh is every device, 8 here: each step then compiles and runs as 8 shards on
  2 cores, for nothing unless the test is about parallelism.
  """
  return jax.devices()[:1]


@pytest.fixture
def fast_compile():
  """XLA without most optimisations, for tests whose programs only need to run, not be fast.

  The compiled numbers can differ from the optimised program's in the last bits (other
  fusions, other summation orders), so a test that compares against another compiled run
  must not use it, or must use it on both sides.
  """
  # A flag, not a context manager, in jax 0.10: set and restored by hand.
  before = jax.config.read("jax_disable_most_optimizations")
  jax.config.update("jax_disable_most_optimizations", True)
  try:
    yield
  finally:
    jax.config.update("jax_disable_most_optimizations", before)
