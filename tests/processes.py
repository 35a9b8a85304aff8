"""Launching a worker script as N localhost processes, each with its own simulated CPU devices,
for the multi-host tests (jax.distributed over gloo)."""

import os
import socket
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port() -> str:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return str(s.getsockname()[1])


def child_env(*xla_flags: str) -> dict:
  """This process's environment for a child on the CPU, with ``xla_flags`` added to the
  suite's own XLA flags (conftest.TEST_XLA_FLAGS), not put in their place."""
  flags = " ".join([os.environ.get("XLA_FLAGS", ""), *xla_flags]).strip()
  return dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT, XLA_FLAGS=flags)


def launch(script, nproc: int, devices_each: int, *args: str) -> None:
  """Runs ``script pid nproc port *args`` in ``nproc`` processes; fails with a worker's output."""
  env = child_env(f"--xla_force_host_platform_device_count={devices_each}")
  port = free_port()
  procs = [
    subprocess.Popen(
      [sys.executable, str(script), str(i), str(nproc), port, *args],
      env=env,
      stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT,
    )
    for i in range(nproc)
  ]
  for p in procs:
    out, _ = p.communicate(timeout=300)
    assert p.returncode == 0, out.decode()[-3000:]
