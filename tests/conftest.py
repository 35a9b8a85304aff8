"""Test-suite setup: 8 simulated CPU devices, a shared compilation cache, and fixtures.

Nearly all of the suite's time is XLA compiling. Three things keep it down:

- A persistent compilation cache. Each new ``Trainer`` jits fresh closures, so JAX's in-memory
  cache misses even when the program is the same one another test compiled a minute ago; the
  on-disk cache is keyed by the program itself, so it hits. It lives in ``.cache/jax`` (ignored
  by git) and is shared by every pytest process and every worker the tests launch.
- One device unless a test is about parallelism: ``Trainer(..., devices=one_device)``.
  The 8 simulated devices stay available for the tests that compare 1 with 8.
- ``fast_compile`` for tests that check wiring (shapes, files, errors), not numbers.
"""

import os

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
for _name, _value in (("JAX_PLATFORMS", "cpu"),
                      ("JAX_COMPILATION_CACHE_DIR", os.path.join(ROOT, ".cache", "jax")),
                      ("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0"),
                      ("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0"),
                      ("JAX_COMPILATION_CACHE_MAX_SIZE", "-1")):
  os.environ.setdefault(_name, _value)

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
