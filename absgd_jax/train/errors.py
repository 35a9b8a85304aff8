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
libraries' own logging (orbax, absl) and, through ``sys.unraisablehook``, what a failed
checkpoint read leaves behind (:func:`leftover_of_a_failed_read`), unless debugging.
``--debug`` or ``ABSGD_DEBUG=1`` shows every traceback.
"""

from __future__ import annotations

import contextlib
import errno
import inspect
import logging
import os
import re
import sys
import time
import warnings
from collections.abc import Iterator
from typing import Any

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


# TensorStore appends its whole spec to an error's text; nothing but the text marks where it
# begins, so the message is cut there.
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
  """Whether ``e``, or an error it came from, is a full disk (``ENOSPC``, however wrapped).

  The errno says so for Python's own errors; TensorStore's, raised through orbax, carry the
  system's message in their text only.
  """
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


def leftover_of_a_failed_read(unraisable: Any) -> bool:
  """Whether an exception handed to ``sys.unraisablehook`` is what a failed orbax read leaves.

  Two kinds come that way, from orbax's other reads, abandoned when one fails: each read's
  coroutine, never awaited, reported when it is collected; and, from TensorStore's threads
  finishing after orbax has closed its event loop, asyncio's ``RuntimeError: Event loop is
  closed``, reported with no object. asyncio raises that one as a plain RuntimeError whose
  message is all that tells it apart (``BaseEventLoop._check_closed``); a test checks the
  text against the asyncio in use.
  """
  if inspect.iscoroutine(unraisable.object):
    return True
  exc = unraisable.exc_value
  return (
    unraisable.object is None and type(exc) is RuntimeError and str(exc) == "Event loop is closed"
  )


class _DropLeftovers:
  """An unraisable hook that drops the leftovers of a failed read and passes the rest on."""

  def __init__(self, previous: Any):
    self.previous, self.last_drop = previous, time.monotonic()

  def __call__(self, unraisable: Any) -> None:
    if leftover_of_a_failed_read(unraisable):
      self.last_drop = time.monotonic()
      return
    self.previous(unraisable)

  def settle(self, quiet_s: float = 0.5, most_s: float = 3.0) -> None:
    """Waits until nothing has been dropped for ``quiet_s`` (at most ``most_s``): the
    abandoned reads finish on TensorStore's threads after the failed one has returned."""
    end = time.monotonic() + most_s
    while time.monotonic() < end and time.monotonic() - self.last_drop < quiet_s:
      time.sleep(0.05)


class _ReadState:
  """What :func:`quiet_abandoned_reads` yields: the caller sets ``read_failed``."""

  read_failed = False


@contextlib.contextmanager
def quiet_abandoned_reads() -> Iterator[_ReadState]:
  """Within it (and the garbage collection at its end), the leftovers of a failed checkpoint
  read (:func:`leftover_of_a_failed_read`) are dropped instead of printed as pages of
  TensorStore specs and tracebacks. The caller sets ``read_failed`` on the yielded object when
  a read fails, so that the late ones are waited for (at most 3 s) before the hook is given
  back; every other unraisable exception is reported as usual."""
  import gc

  before = sys.unraisablehook
  hook = _DropLeftovers(before)
  state = _ReadState()
  sys.unraisablehook = hook
  try:
    yield state
  finally:
    gc.collect()
    if state.read_failed:
      hook.settle()
    sys.unraisablehook = before


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
  sys.unraisablehook = _DropLeftovers(hook_before)
  try:
    yield
  finally:
    for name, level in loggers.items():
      logging.getLogger(name).setLevel(level)
    warnings.formatwarning, sys.unraisablehook = format_before, hook_before
