"""Failures a user can act on, and how the command line reports them: one line, exit status 2.

Which errors are the user's to fix (settings, data, files, disk, permissions, checkpoints) is
decided where the kit knows it, not guessed from a type at the top: a ``ValueError`` from deep
inside jax or a model is a bug and keeps its traceback, whereas the same type raised while the
user's data are read is about those data. So:

- :class:`UserError` marks an error as the user's to fix. Its subclasses also derive from the
  built-in type that the library has always raised (:class:`InputError` is a ``ValueError``),
  so ``except ValueError`` in a caller keeps working.
- :func:`user_input` turns the ``ValueError`` of a step that only reads the user's input (the
  data, the split lists) into a :class:`InputError` with the same message, the original chained.
- ``OSError`` (a missing file, a read-only folder, a full disk) is always about the
  environment, and the kit's own refusals (:class:`~absgd_jax.train.checkpoint.CheckpointError`,
  :class:`~absgd_jax.train.config.RunMismatchError`, a divergence) are listed by the CLI.

:func:`one_line` writes such an error as the CLI prints it, and :func:`console` quiets the
libraries' own logging (orbax, absl, TensorStore's abandoned reads) unless debugging.
``--debug`` or ``ABSGD_DEBUG=1`` shows every traceback.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import sys
import threading
import time
import warnings
from collections.abc import Iterator

DEBUG_ENV = "ABSGD_DEBUG"


class UserError(Exception):
  """An error in the user's settings, data or environment: the CLI prints it as one line."""


class InputError(UserError, ValueError):
  """The user's input is not as the settings say: a data set, a split list, an image, or the
  run folder's own records (a ``ValueError``)."""


class MissingPackageError(UserError, ImportError):
  """An optional package the settings need (grain, tensorflow-datasets) is not installed."""


@contextlib.contextmanager
def user_input() -> Iterator[None]:
  """Within it, a ``ValueError`` is about the user's input: re-raised as :class:`InputError`.

  For code that only reads and checks what the user pointed at (data sets, split lists, their
  sizes against the batch, the run folder's config.json); the original error is chained for
  ``--debug``. An ``ImportError`` there is an optional extra the data need (its message says
  what to install): :class:`MissingPackageError`.

  Examples:
    >>> try:
    ...   with user_input():
    ...     raise ValueError("list.txt:3: label 12 is outside 0..9.")
    ... except ValueError as e:
    ...   print(type(e).__name__, e)
    InputError list.txt:3: label 12 is outside 0..9.
  """
  try:
    yield
  except ValueError as e:
    if type(e).__module__.startswith("absgd_jax."):  # The kit's own kinds say what they are.
      raise
    raise InputError(str(e)) from e
  except ImportError as e:
    raise MissingPackageError(str(e)) from e


def chain(e: BaseException) -> Iterator[BaseException]:
  """``e`` and the errors it came from (``raise ... from``, or raised while handling)."""
  seen = set()
  while e is not None and id(e) not in seen:
    seen.add(id(e))
    yield e
    e = (
      e.__cause__
      if e.__cause__ is not None
      else (None if e.__suppress_context__ else e.__context__)
    )


_TENSORSTORE_TAIL = re.compile(r"\s*See full TensorStore details:.*", re.S)


def short_reason(e: BaseException, limit: int = 300) -> str:
  """The innermost cause of ``e`` in one line: TensorStore's messages run to pages.

  orbax wraps TensorStore's error (``FAILED_PRECONDITION: Error reading ... Truncated
  stream``) in one whose text is the whole TensorStore spec; the inner one says what is wrong.

  Examples:
    >>> try:
    ...   try:
    ...     raise ValueError('NOT_FOUND: Error reading "w/0": no such file')
    ...   except ValueError as inner:
    ...     raise Exception("read failed. See full TensorStore details: <bound method "
    ...                     "spec of TensorStore({\\n 'driver': 'zarr'})>") from inner
    ... except Exception as e:
    ...   print(short_reason(e))
    ValueError: NOT_FOUND: Error reading "w/0": no such file
  """
  causes = list(chain(e))
  texts = []
  for x in causes[::-1]:  # The innermost cause first.
    text = _TENSORSTORE_TAIL.sub("", str(x)).strip()
    if text:
      texts.append(f"{type(x).__name__}: {text.splitlines()[0]}")
  text = texts[0] if texts else type(e).__name__
  return text if len(text) <= limit else text[:limit] + " ..."


def disk_full(e: BaseException) -> bool:
  """Whether ``e``, or an error it came from, is a full disk (``ENOSPC``, however wrapped)."""
  return any(
    getattr(x, "errno", None) == errno.ENOSPC or "No space left on device" in str(x)
    for x in chain(e)
  )


# What to change, by the errno of an OSError that names no remedy itself.
_OS_HINTS = {
  errno.EACCES: "choose a folder you may write to (--out / out_dir, data_dir) or change its "
  "permissions",
  errno.EPERM: "choose a folder you may write to (--out / out_dir, data_dir) or change its "
  "permissions",
  errno.EROFS: "the file system is read-only: choose another folder (--out / out_dir)",
  errno.ENOTDIR: "a part of that path is a file, not a folder: fix the path",
  errno.ENOENT: "check the path (data_dir, train_list, test_list, init_from)",
  errno.EISDIR: "the path is a folder, not a file: fix the path",
}


def last_checkpoint(out_dir: str) -> int | None:
  """The newest epoch with a checkpoint folder in ``out_dir/checkpoints``, read from the disk.

  After a failed save the checkpoint manager's own record may not be trusted; orbax renames a
  checkpoint's temporary folder to its epoch number only once it is complete, so the numbered
  folders are the ones written in full.
  """
  from etils import epath

  folder = epath.Path(out_dir) / "checkpoints"
  try:
    epochs = [int(p.name) for p in folder.iterdir() if p.name.isdigit()]
  except OSError:
    return None
  return max(epochs) if epochs else None


def one_line(e: BaseException) -> str:
  """The CLI's line for a user-facing error (without the ``error: `` prefix).

  An ``OSError`` raised by the system (it has an errno) is written as what failed on which
  path and what to change; the kit's own messages already say that and are kept as they are.

  Examples:
    >>> print(one_line(PermissionError(13, "Permission denied", "/data/runs/a")))
    cannot write or read /data/runs/a: Permission denied; choose a folder you may write to
    (--out / out_dir, data_dir) or change its permissions.
  """
  if isinstance(e, OSError) and e.errno is not None and e.strerror:
    where = e.filename if e.filename is not None else "a file"
    hint = _OS_HINTS.get(e.errno)
    return f"cannot write or read {where}: {e.strerror}" + (f"; {hint}." if hint else ".")
  text = " ".join(str(e).split()) or type(e).__name__
  return text


def debug_requested(flag: bool = False) -> bool:
  """``--debug`` or ``ABSGD_DEBUG`` set to anything but ``""``/``0``: show tracebacks."""
  return flag or os.environ.get(DEBUG_ENV, "") not in ("", "0")


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
  return f"warning: {' '.join(str(message).split())}\n"


def _drop_abandoned_coroutines(unraisable) -> None:
  """Drops what a failed orbax read leaves behind: its other reads, never awaited, each print
  a TensorStore spec when garbage collected. Anything else is reported as usual."""
  import inspect

  if inspect.iscoroutine(unraisable.object):
    return
  sys.__unraisablehook__(unraisable)


class _HeldStderr:
  """sys.stderr held back while a checkpoint is read: its writes are kept, in order, and
  replayed when the read is over, less the tracebacks described in :func:`quiet_abandoned_reads`."""

  def __init__(self, stream):
    self.stream, self.writes, self.read_failed = stream, [], False
    self.last_write = time.monotonic()
    self._lock = threading.Lock()

  def write(self, text: str) -> int:
    with self._lock:
      self.writes.append(text)
      self.last_write = time.monotonic()
    return len(text)

  def flush(self) -> None:
    pass

  def __getattr__(self, name):
    return getattr(self.stream, name)

  def settle(self, quiet_s: float = 0.5, most_s: float = 3.0) -> None:
    """Waits until nothing has been written for ``quiet_s`` (at most ``most_s``)."""
    end = time.monotonic() + most_s
    while time.monotonic() < end and time.monotonic() - self.last_write < quiet_s:
      time.sleep(0.05)

  def replay(self) -> None:
    with self._lock:
      writes, self.writes = self.writes, []
    if any("Event loop is closed" in w for w in writes):
      writes = [w for w in writes if not _closed_loop_fragment(w)]
    self.stream.write("".join(writes))
    self.stream.flush()


# The pieces Python writes for "RuntimeError: Event loop is closed" raised in asyncio's
# call_soon_threadsafe. Several threads print such tracebacks at once, so their pieces arrive
# interleaved and are dropped piece by piece rather than as whole tracebacks.
_CLOSED_LOOP_PIECES = frozenset(
  {
    "Traceback (most recent call last):\n",
    "    ",
    "\n",
    ": ",
    "RuntimeError",
    "Event loop is closed",
    "self._check_closed()",
    "raise RuntimeError('Event loop is closed')",
  }
)


def _closed_loop_fragment(text: str) -> bool:
  if text in _CLOSED_LOOP_PIECES:
    return True
  return text.startswith('  File "') and "asyncio" in text and "base_events.py" in text


@contextlib.contextmanager
def quiet_abandoned_reads() -> Iterator[_HeldStderr]:
  """Within it (and the garbage collection at its end), what a failed checkpoint read leaves
  behind is dropped instead of printed. Its other reads, abandoned, each print a TensorStore
  spec when garbage collected, and those that finish after orbax has closed its event loop
  print "RuntimeError: Event loop is closed" from TensorStore's threads. The caller sets
  ``read_failed`` on the yielded object when a read fails, so that the late tracebacks are
  waited for (at most 3 s) before stderr is given back; every other line is replayed."""
  import gc

  before, stderr = sys.unraisablehook, sys.stderr
  held = _HeldStderr(stderr)
  sys.unraisablehook = _drop_abandoned_coroutines
  sys.stderr = held
  try:
    yield held
  finally:
    if held.read_failed:
      held.settle()
    gc.collect()
    sys.unraisablehook, sys.stderr = before, stderr
    held.replay()


_NOISY_LOGGERS = ("absl", "orbax", "asyncio", "jax._src.distributed", "tensorstore")


@contextlib.contextmanager
def console(debug: bool) -> Iterator[None]:
  """The CLI's console: warnings as one ``warning: ...`` line, and orbax's, absl's and
  asyncio's logging (hundreds of lines on a full disk) silenced. With ``debug`` nothing
  changes. Everything is put back on exit."""
  if debug:
    yield
    return
  loggers = {name: logging.getLogger(name).level for name in _NOISY_LOGGERS}
  format_before, hook_before = warnings.formatwarning, sys.unraisablehook
  for name in _NOISY_LOGGERS:
    logging.getLogger(name).setLevel(logging.CRITICAL + 1)
  warnings.formatwarning = _one_line_warning
  sys.unraisablehook = _drop_abandoned_coroutines
  try:
    yield
  finally:
    for name, level in loggers.items():
      logging.getLogger(name).setLevel(level)
    warnings.formatwarning, sys.unraisablehook = format_before, hook_before
