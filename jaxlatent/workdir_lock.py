"""An OS-level lock that keeps two runs from writing into the same folder.

:func:`hold_workdir_lock` takes an exclusive, non-blocking ``flock`` on
``<folder>/.lock`` for as long as the ``with`` block runs, and writes who holds it
(pid, host, start time, command line) into that file as JSON.  A second run gets
:class:`WorkdirBusyError` naming the holder, which the command-line drivers print
as one ``error:`` line (exit status 2).

The kernel releases an ``flock`` when its holder dies, even after ``kill -9``, so
there is no stale-lock timeout: a lock file that still names a holder but is not
locked belongs to a run that did not end cleanly, and is taken over with one
log line.  The file is never deleted (deleting it would let a third run lock a
fresh file while a second still holds the old one); a clean exit empties it.

Limits: the lock is as good as ``flock`` on the folder's file system.  Local
file systems are fine.  On NFS, Linux maps ``flock`` onto NFS byte-range locks,
which do work between machines when the lock service (``lockd``/NLM, or NFSv4) is
running; mounts with ``nolock``/``local_lock=all`` and some FUSE or SMB mounts
lock only within one machine, so two machines can then both get the lock.  In a
multi-process (multi-host) run only one process (the chief) should take it.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import json
import logging
import os
import shlex
import socket
import sys
from typing import Any, Iterator

from jaxlatent.atomic_io import OutputError, output_error
from jaxlatent.errors import JaxlatentError

log = logging.getLogger(__name__)

LOCK_NAME = ".lock"


class WorkdirBusyError(JaxlatentError):
  """Another live process holds the lock of the folder."""


def _read_holder(fd: int) -> dict[str, Any] | None:
  """The JSON record in an open lock file, or None when it is empty or unreadable."""
  try:
    size = os.fstat(fd).st_size
    raw = os.pread(fd, min(size, 1 << 16), 0) if size else b""
    info = json.loads(raw.decode("utf-8")) if raw.strip() else None
  except (OSError, ValueError, UnicodeDecodeError):
    return None
  return info if isinstance(info, dict) else None


def _describe(info: dict[str, Any] | None) -> str:
  if not info:
    return "another process (its pid is not recorded yet)"
  text = f"pid {info.get('pid', '?')} on host {info.get('host', '?')}"
  if info.get("started"):
    text += f", started {info['started']}"
  if info.get("command"):
    text += f": {info['command']}"
  return text


def lock_holder(path) -> dict[str, Any] | None:
  """The record of the process that holds ``<path>/.lock`` now, or None if it is free.

  Reads only: never takes the lock and creates nothing.
  """
  lock_path = os.path.join(os.fspath(path), LOCK_NAME)
  try:
    fd = os.open(lock_path, os.O_RDONLY)
  except OSError:
    return None
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as e:
      if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
        return _read_holder(fd) or {}
      raise
    fcntl.flock(fd, fcntl.LOCK_UN)
    return None
  finally:
    os.close(fd)


@contextlib.contextmanager
def hold_workdir_lock(path, what: str) -> Iterator[dict[str, Any]]:
  """Holds an exclusive lock on the existing folder ``path`` for the ``with`` block.

  Args:
    path: the folder (the caller creates it; only ``<path>/.lock`` is created).
    what: what the folder is, for the message, e.g. "train.py workdir".

  Yields:
    This process's record: pid, host, started (UTC ISO time), command, what.

  Raises:
    WorkdirBusyError: another live process holds the lock (its pid, host, start
      time and command line are named).
    OutputError: ``path`` is not a folder, or the lock file cannot be written.
  """
  path = os.fspath(path)
  if not os.path.isdir(path):
    raise OutputError(f"{what} {path} is not an existing folder")
  lock_path = os.path.join(path, LOCK_NAME)
  try:
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
  except OSError as e:
    raise output_error(e, lock_path) from None
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
      if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
        raise output_error(e, lock_path) from None
      raise WorkdirBusyError(
          f"{what} {path} is in use by {_describe(_read_holder(fd))}; wait for that run "
          f"to end or stop it (lock file {lock_path})") from None
    previous = _read_holder(fd)
    if previous:
      log.warning("taking over the lock of %s, which ended without releasing it (%s)",
                  path, _describe(previous))
    info = {"pid": os.getpid(), "host": socket.gethostname(),
            "started": datetime.datetime.now(datetime.timezone.utc).isoformat(
                timespec="seconds"),
            "command": shlex.join(sys.argv), "what": what}
    data = (json.dumps(info) + "\n").encode("utf-8")
    try:
      os.ftruncate(fd, 0)
      os.pwrite(fd, data, 0)
      os.fsync(fd)
    except OSError as e:
      raise output_error(e, lock_path) from None
    try:
      yield info
    finally:
      with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)  # empty = released cleanly; the lock itself goes with close.
  finally:
    os.close(fd)
