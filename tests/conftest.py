"""Test-suite setup: 8 simulated CPU devices, so multi-device code paths run on any machine."""

import os

# Must happen before jax initialises its backends; pytest imports conftest first.
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
