"""The suite's own set-up (tests/conftest.py): the XLA flags it compiles with."""

import os

import conftest


def test_xla_flags_are_probed_not_assumed(tmp_path, monkeypatch):
  # XLA aborts a process on a flag it does not know, so a jaxlib without one of the suite's
  # flags must get none of them, not crash every test.
  monkeypatch.setattr(conftest, "ROOT", str(tmp_path))
  assert not conftest._xla_accepts("--xla_no_such_flag_in_any_jaxlib=1")
  assert conftest._xla_accepts(conftest.TEST_XLA_FLAGS)
  assert len(os.listdir(tmp_path / ".cache")) == 2  # One answer kept per jaxlib and flags.
  if not os.environ.get("ABSGD_TEST_XLA_DEFAULTS"):
    assert conftest.TEST_XLA_FLAGS in os.environ["XLA_FLAGS"]
