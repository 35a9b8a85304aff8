"""jax's persistent compilation cache, switched on for scripts that compile the same steps
many times (the demo, the experiment scripts)."""

from __future__ import annotations

import os


def use_compile_cache(path: str) -> None:
  """Keeps compiled steps in ``path`` across runs and processes.

  Runs that differ only by seed compile the same step, since the compiled step does not depend
  on the seed, so every run after the first reuses the first's compilation. Compilation is most
  of a short run's time. Every entry is kept, however small or quick to compile, because a
  short run's programs are all small.

  A cache folder the user has already chosen (``JAX_COMPILATION_CACHE_DIR`` or
  ``jax.config``) is kept: one cache shared by several scripts, as the test suite shares one
  across the scripts it launches, hits where each script's own folder would miss.

  Args:
    path: the folder for the cache entries; created by jax on the first write.

  Examples:
    >>> import jax
    >>> from absgd_jax.train.compile_cache import use_compile_cache
    >>> before = jax.config.jax_compilation_cache_dir
    >>> jax.config.update("jax_compilation_cache_dir", "/tmp/mine")
    >>> use_compile_cache("/tmp/other")  # A folder already chosen wins.
    >>> jax.config.jax_compilation_cache_dir
    '/tmp/mine'
    >>> jax.config.update("jax_compilation_cache_dir", before)
  """
  import jax

  if not jax.config.jax_compilation_cache_dir:
    jax.config.update("jax_compilation_cache_dir", os.path.abspath(path))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
