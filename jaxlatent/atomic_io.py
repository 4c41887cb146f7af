"""Atomic file and folder writes, and one-line errors for unwritable outputs.

A file written here is either the complete new version or the previous one,
never a mix: the data goes to a temporary file in the same folder, is flushed to
disk (``fsync``) and renamed over the target (``os.replace``, atomic on POSIX),
then the folder itself is flushed so the rename survives a power loss.  On any
error the temporary file is removed and the previous file is left byte-identical.

Operating-system errors a user can cause or fix (disk full, permission denied,
read-only file system, a regular file where a folder is expected) become
:class:`OutputError`, whose message names the file and the problem in one line;
the command-line drivers print it as ``error: ...`` and exit with status 2.

Temporary names start with a dot and hold ``.tmp-<pid>-<random>`` so that they are
never mistaken for results; a ``kill -9`` between write and rename can leave one
behind, and it is safe to delete.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import json
import os
import shutil
import uuid
from typing import Any, Iterator

import numpy as np

from jaxlatent.errors import JaxlatentError


class OutputError(JaxlatentError):
  """An output file or folder cannot be written (disk full, permissions, not a folder)."""


# errno -> what went wrong, phrased to follow "cannot write X: ".
_PROBLEMS = {
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EROFS: "read-only file system",
    errno.EISDIR: "it is a folder, not a file",
}
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
USER_ERRNOS = frozenset(_PROBLEMS) | frozenset(_NO_SPACE) | {errno.ENOTDIR, errno.ENOENT}


def _tag() -> str:
  return f".tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _file_blocking(path: str) -> str | None:
  """The first ancestor of ``path`` that exists and is not a folder, if any."""
  parts = os.path.abspath(path).split(os.sep)
  for i in range(2, len(parts)):
    p = os.sep.join(parts[:i]) or os.sep
    if os.path.lexists(p) and not os.path.isdir(p):
      return p
    if not os.path.exists(p):
      return None
  return None


def describe_os_error(e: OSError, path) -> str | None:
  """One line for an OSError a user can fix while writing ``path``; None for others."""
  path = os.fspath(path)
  if e.errno in _NO_SPACE:
    return f"no space left on device while writing {path}"
  if e.errno in _PROBLEMS:
    return f"cannot write {path}: {_PROBLEMS[e.errno]}"
  if e.errno in (errno.ENOTDIR, errno.ENOENT):
    blocker = _file_blocking(path)
    if blocker is not None:
      return f"cannot write {path}: {blocker} is a regular file, not a folder"
    if e.errno == errno.ENOENT:
      parent = os.path.dirname(os.path.abspath(path))
      if not os.path.isdir(parent):
        return f"cannot write {path}: folder {parent} does not exist"
  return None


def output_error(e: OSError, path) -> OSError | OutputError:
  """``e`` as an :class:`OutputError` when a user can fix it, else ``e`` itself."""
  message = describe_os_error(e, path)
  return OutputError(message) if message is not None else e


def fsync_dir(path) -> None:
  """Flushes a folder's entries (a rename in it) to disk; a no-op where unsupported."""
  try:
    fd = os.open(os.fspath(path), os.O_RDONLY)
  except OSError:
    return
  try:
    os.fsync(fd)
  except OSError:  # Some file systems cannot fsync a folder; the rename still happened.
    pass
  finally:
    os.close(fd)


def _fsync_file(path: str) -> None:
  fd = os.open(path, os.O_RDONLY)
  try:
    os.fsync(fd)
  finally:
    os.close(fd)


def _extension(base: str) -> str:
  """'.nii.gz' for 'x.nii.gz', '.npz' for 'x.npz': writers pick the format from it."""
  stem, ext = os.path.splitext(base)
  if ext == ".gz":
    ext = os.path.splitext(stem)[1] + ext
  return ext


@contextlib.contextmanager
def atomic_path(path) -> Iterator[str]:
  """Yields a temporary path beside ``path``; renamed over ``path`` when the block succeeds.

  The temporary name keeps ``path``'s extension (writers such as ``np.savez``,
  nibabel and matplotlib choose the format from it).  On an exception the temporary
  file is removed, ``path`` is unchanged, and a fixable OSError becomes
  :class:`OutputError`.
  """
  path = os.fspath(path)
  folder, base = os.path.split(os.path.abspath(path))
  ext = _extension(base)
  tmp = os.path.join(folder, "." + base[:len(base) - len(ext)] + _tag() + ext)
  try:
    yield tmp
    _fsync_file(tmp)
    os.replace(tmp, path)
  except BaseException as e:
    err = None
    if isinstance(e, OSError):
      err = output_error(e, path)
      if err is e and e.errno is None and _nearly_full(folder):
        # numpy's tofile reports a short write without errno ("N requested and M written").
        err = OutputError(f"no space left on device while writing {path}")
    with contextlib.suppress(OSError):
      os.remove(tmp)
    if err is not None and err is not e:
      raise err from None
    raise
  fsync_dir(folder)


def _nearly_full(folder: str) -> bool:
  """True when the file system of ``folder`` has (next to) no space left for us."""
  try:
    st = os.statvfs(folder)
  except OSError:
    return False
  return st.f_bavail * st.f_frsize < (1 << 20)


def atomic_write_bytes(path, data: bytes) -> str:
  """Writes ``data`` to ``path`` atomically; returns ``path``."""
  with atomic_path(path) as tmp:
    with open(tmp, "wb") as f:
      f.write(data)
  return os.fspath(path)


def atomic_write_text(path, text: str, encoding: str = "utf-8") -> str:
  """Writes ``text`` to ``path`` atomically; returns ``path``."""
  return atomic_write_bytes(path, text.encode(encoding))


def atomic_write_json(path, obj: Any, indent: int | None = 2, **dumps_kwargs) -> str:
  """Writes ``json.dumps(obj)`` (plus a newline) to ``path`` atomically; returns ``path``."""
  return atomic_write_text(path, json.dumps(obj, indent=indent, **dumps_kwargs) + "\n")


def atomic_save_npy(path, array) -> str:
  """``np.save`` (no pickle) to ``path`` atomically; returns ``path``."""
  with atomic_path(path) as tmp:
    np.save(tmp, np.asarray(array), allow_pickle=False)
  return os.fspath(path)


def atomic_save_npz(path, /, compress: bool = False, **arrays) -> str:
  """``np.savez`` (or ``savez_compressed``) of ``arrays`` to ``path`` atomically.

  ``path`` should end in '.npz' (numpy would otherwise add it to the temporary name).
  """
  with atomic_path(path) as tmp:
    (np.savez_compressed if compress else np.savez)(tmp, **arrays)
  return os.fspath(path)


def temp_dir_beside(final_dir, create_parent: bool = False) -> str:
  """Creates and returns an empty temporary folder next to ``final_dir`` (same file system).

  Build a folder's new content there, then :func:`atomic_replace_dir` it over
  ``final_dir``.  The parent must exist unless ``create_parent``.
  """
  final_dir = os.path.abspath(os.fspath(final_dir))
  parent, base = os.path.split(final_dir)
  tmp = os.path.join(parent, "." + base + _tag())
  try:
    if create_parent:
      os.makedirs(parent, exist_ok=True)
    os.mkdir(tmp)
  except OSError as e:
    raise output_error(e, final_dir) from None
  return tmp


def _libc_renameat2():
  """libc's ``renameat2`` (Linux, glibc >= 2.28) or None."""
  try:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    fn = libc.renameat2
  except (OSError, AttributeError):
    return None
  fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
  fn.restype = ctypes.c_int
  return fn


_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def _exchange(a: str, b: str) -> bool:
  """Atomically swaps two existing paths; False where the OS or file system cannot."""
  fn = _libc_renameat2()
  if fn is None:
    return False
  if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
    return True
  err = ctypes.get_errno()
  if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
    return False
  raise OSError(err, os.strerror(err), b)


def atomic_replace_dir(tmp_dir, final_dir) -> str:
  """Swaps the fully built folder ``tmp_dir`` in as ``final_dir`` and deletes the old one.

  ``tmp_dir`` must be on the same file system (see :func:`temp_dir_beside`).  On
  Linux the swap is a single atomic ``renameat2(RENAME_EXCHANGE)``: at every moment
  ``final_dir`` is wholly the old or wholly the new folder.  Elsewhere the old
  folder is first renamed aside, leaving a moment in which ``final_dir`` is absent
  (the old content is then in a ``.<name>.tmp-*`` sibling).  Returns ``final_dir``.
  """
  tmp_dir = os.path.abspath(os.fspath(tmp_dir))
  final_dir = os.path.abspath(os.fspath(final_dir))
  parent = os.path.dirname(final_dir)
  try:
    for root, _, files in os.walk(tmp_dir):
      for name in files:
        _fsync_file(os.path.join(root, name))
      fsync_dir(root)
    if os.path.lexists(final_dir) and not os.path.isdir(final_dir):
      raise OutputError(f"cannot replace {final_dir}: it is a regular file, not a folder")
    if not os.path.lexists(final_dir):
      os.rename(tmp_dir, final_dir)
      fsync_dir(parent)
      return final_dir
    if _exchange(tmp_dir, final_dir):
      old = tmp_dir
    else:
      old = os.path.join(parent, "." + os.path.basename(final_dir) + _tag())
      os.rename(final_dir, old)
      os.rename(tmp_dir, final_dir)
    fsync_dir(parent)
  except OSError as e:
    raise output_error(e, final_dir) from None
  shutil.rmtree(old, ignore_errors=True)
  return final_dir


def check_writable_dir(path, what: str) -> str:
  """Checks that ``path`` is, or can be created as, a writable folder; creates nothing.

  For drivers to call before any compute.  Raises :class:`OutputError` naming
  ``what`` (e.g. "--out") and the path: a regular file where the folder (or one
  of its parents) should be, or a folder that cannot be written.  Note that
  ``root`` passes permission checks except on read-only file systems.  Returns
  the absolute path.
  """
  path = os.path.abspath(os.path.expanduser(os.fspath(path)))
  probe = path
  while not os.path.lexists(probe):
    parent = os.path.dirname(probe)
    if parent == probe:
      break
    probe = parent
  if not os.path.isdir(probe):
    if probe == path:
      raise OutputError(f"{what} {path} is a regular file, not a folder")
    raise OutputError(f"{what} {path} cannot be created: {probe} is a regular file, "
                      "not a folder")
  if not os.access(probe, os.W_OK | os.X_OK):
    problem = "read-only file system" if _read_only(probe) else "permission denied"
    if probe == path:
      raise OutputError(f"cannot write {what} {path}: {problem}")
    raise OutputError(f"{what} {path} cannot be created in {probe}: {problem}")
  return path


def _read_only(path: str) -> bool:
  try:
    return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
  except OSError:
    return False
