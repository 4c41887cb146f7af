"""The on-disk cache of preprocessed slices.

Layout of ``cache_dir``:
  images.npy  float32 [N, S, S, 1], written slice batch by slice batch through
              ``np.lib.format.open_memmap`` (never the whole set in RAM);
  masks.npy   uint8 [N, S, S];
  meta.json   per-slice columns, per-subject geometry, preprocessing settings,
              the input fingerprint, and the byte sizes and blake2b checksums of
              the two arrays.

Atomicity: a build writes the arrays and its ``meta.json`` into a temporary
subfolder ``cache_dir/.build-<host>-<pid>-<random>/``.  Only when the whole build
and the caller's validation of the result succeeded is it moved into place: the
old ``meta.json`` is deleted first, the arrays are renamed over the old ones, and
the new ``meta.json`` is renamed in last.  A failed or interrupted build thus
leaves an existing cache byte-identical, and ``meta.json`` is the completion
marker: a cache without it, or whose arrays do not match the sizes, shapes and
checksums it records, is rebuilt (or refused by :func:`open_cache`), never used.
Caches made before checksums were recorded are rebuilt once.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import logging
import os
import shutil
import socket
import uuid
from typing import Any, Callable

import numpy as np

from jaxlatent import atomic_io
from jaxlatent.data.dataset import SliceDataset
from jaxlatent.errors import DataError

log = logging.getLogger(__name__)

CACHE_VERSION = 1
IMAGES, MASKS, META = "images.npy", "masks.npy", "meta.json"


def file_signature(path: str) -> list:
  """[absolute path, size, mtime_ns]: cheap identity of an input file."""
  st = os.stat(path)
  return [os.path.abspath(path), int(st.st_size), int(st.st_mtime_ns)]


def fingerprint(files, settings: dict[str, Any]) -> str:
  """sha256 of the input files' signatures and the preprocessing settings."""
  payload = {"version": CACHE_VERSION, "files": [file_signature(f) for f in files],
             "settings": settings}
  blob = json.dumps(payload, sort_keys=True, default=_jsonable)
  return hashlib.sha256(blob.encode()).hexdigest()


def _jsonable(x):
  if isinstance(x, np.ndarray):
    return x.tolist()
  if isinstance(x, (np.integer,)):
    return int(x)
  if isinstance(x, (np.floating,)):
    return float(x)
  if isinstance(x, tuple):
    return list(x)
  raise TypeError(f"not JSON serialisable: {type(x).__name__}")


def _trim_npy(path: str, n: int) -> None:
  """Shrinks an .npy file's first axis to ``n`` rows in place (rewrite header, truncate)."""
  arr = np.load(path, mmap_mode="r")
  shape, dtype, offset = arr.shape, arr.dtype, arr.offset
  del arr
  new_shape = (n, *shape[1:])
  header = io.BytesIO()
  np.lib.format.write_array_header_1_0(
      header, {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False,
               "shape": new_shape})
  header = header.getvalue()
  row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
  if len(header) == offset:
    with open(path, "r+b") as f:
      f.write(header)
      f.truncate(offset + n * row_bytes)
    return
  # Header length changed (never with numpy's growth padding); copy in chunks.
  src = np.load(path, mmap_mode="r")
  tmp = path + ".trim"
  dst = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=new_shape)
  for i in range(0, n, 1024):
    dst[i:i + 1024] = src[i:i + 1024]
  dst.flush()
  del dst, src
  os.replace(tmp, path)


def file_checksum(path: str, chunk_bytes: int = 1 << 24) -> str:
  """'blake2b:<hex>' of a file's bytes, read in chunks (memory stays small)."""
  h = hashlib.blake2b(digest_size=32)
  with open(path, "rb") as f:
    while chunk := f.read(chunk_bytes):
      h.update(chunk)
  return "blake2b:" + h.hexdigest()


_BUILD_PREFIX = ".build-"


def _pid_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except OSError:  # e.g. EPERM: exists, owned by someone else
    return True
  return True


def _remove_dead_builds(cache_dir: str) -> None:
  """Deletes build folders left by killed processes of this host (a kill -9 mid-build)."""
  host = socket.gethostname()
  try:
    names = os.listdir(cache_dir)
  except OSError:
    return
  for name in names:
    parts = name[len(_BUILD_PREFIX):].rsplit("-", 2)
    if not name.startswith(_BUILD_PREFIX) or len(parts) != 3 or parts[0] != host:
      continue
    try:
      pid = int(parts[1])
    except ValueError:
      continue
    if pid != os.getpid() and not _pid_alive(pid):
      log.info("removing %s, left by an interrupted cache build", name)
      shutil.rmtree(os.path.join(cache_dir, name), ignore_errors=True)


def _reserve(path: str) -> None:
  """Allocates a memmap's disk blocks now: a full disk is then an ENOSPC here, not a
  SIGBUS when a page of the sparse file is first written."""
  fd = os.open(path, os.O_RDWR)
  try:
    os.posix_fallocate(fd, 0, os.fstat(fd).st_size)
  except OSError as e:
    if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
      raise
  finally:
    os.close(fd)


class CacheWriter:
  """Writes a cache incrementally: ``append`` slice batches, then ``finish(meta)``.

  Everything goes to a temporary build folder inside ``cache_dir`` and replaces the
  existing cache only in :meth:`finish`, after the optional ``validate`` callback
  accepted the complete build.  Use as a context manager: leaving the block
  without ``finish`` (an exception, Ctrl-C) deletes the build folder and leaves
  the previous cache, if any, untouched.
  """

  def __init__(self, cache_dir: str, max_slices: int, size: int):
    if max_slices < 1:
      raise DataError(f"cache {cache_dir!r}: nothing to write (0 slices)")
    try:
      os.makedirs(cache_dir, exist_ok=True)
    except OSError as e:
      raise atomic_io.output_error(e, cache_dir) from None
    _remove_dead_builds(cache_dir)
    self.cache_dir = cache_dir
    self.max_slices, self.size, self.n = int(max_slices), int(size), 0
    self.build_dir = os.path.join(
        cache_dir, f"{_BUILD_PREFIX}{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    self._img_tmp = os.path.join(self.build_dir, IMAGES)
    self._mask_tmp = os.path.join(self.build_dir, MASKS)
    self._done = False
    try:
      os.mkdir(self.build_dir)
      self._images = np.lib.format.open_memmap(
          self._img_tmp, mode="w+", dtype=np.float32, shape=(self.max_slices, size, size, 1))
      self._masks = np.lib.format.open_memmap(
          self._mask_tmp, mode="w+", dtype=np.uint8, shape=(self.max_slices, size, size))
      _reserve(self._img_tmp)
      _reserve(self._mask_tmp)
    except OSError as e:
      self.abort()
      raise atomic_io.output_error(e, self.cache_dir) from None

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    if not self._done:
      self.abort()
    return False

  def append(self, images: np.ndarray, masks: np.ndarray) -> None:
    """Adds images [k, S, S] or [k, S, S, 1] in [-1, 1] and masks [k, S, S]."""
    k = images.shape[0]
    if self.n + k > self.max_slices:
      raise RuntimeError(f"cache writer overflow: {self.n} + {k} > {self.max_slices}")
    self._images[self.n:self.n + k] = np.asarray(images, np.float32).reshape(
        k, self.size, self.size, 1)
    self._masks[self.n:self.n + k] = np.asarray(masks).astype(np.uint8)
    self.n += k

  def abort(self) -> None:
    """Deletes the build folder; the previous cache stays as it was."""
    self._images = self._masks = None
    shutil.rmtree(self.build_dir, ignore_errors=True)
    self._done = True

  def finish(self, meta: dict[str, Any],
             validate: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Completes the build, lets ``validate(build_dir)`` refuse it, then swaps it in.

    Trims the arrays to the slices written, records their sizes and checksums in
    ``meta.json``; ``validate`` gets the folder of the complete new cache (open it
    with :func:`load_cache`) and raises to keep the previous cache.  Returns the
    meta written.
    """
    if self.n == 0:
      raise DataError(f"cache {self.cache_dir!r}: no slice was written")
    try:
      self._images.flush()
      self._masks.flush()
      self._images = self._masks = None
      if self.n < self.max_slices:
        _trim_npy(self._img_tmp, self.n)
        _trim_npy(self._mask_tmp, self.n)
      meta = dict(meta, num_slices=self.n, image_size=self.size, cache_version=CACHE_VERSION,
                  images_bytes=os.path.getsize(self._img_tmp),
                  masks_bytes=os.path.getsize(self._mask_tmp),
                  checksums={IMAGES: file_checksum(self._img_tmp),
                             MASKS: file_checksum(self._mask_tmp)})
      atomic_io.atomic_write_text(os.path.join(self.build_dir, META),
                                  json.dumps(meta, default=_jsonable))
    except OSError as e:
      raise atomic_io.output_error(e, self.build_dir) from None
    if validate is not None:
      validate(self.build_dir)
    self._commit()
    return meta

  def _commit(self) -> None:
    meta_path = os.path.join(self.cache_dir, META)
    try:
      if os.path.exists(meta_path):
        os.remove(meta_path)  # The old cache is invalid from here on.
      atomic_io.fsync_dir(self.cache_dir)
      os.replace(self._img_tmp, os.path.join(self.cache_dir, IMAGES))
      os.replace(self._mask_tmp, os.path.join(self.cache_dir, MASKS))
      atomic_io.fsync_dir(self.cache_dir)
      os.replace(os.path.join(self.build_dir, META), meta_path)
      atomic_io.fsync_dir(self.cache_dir)
    except OSError as e:
      raise atomic_io.output_error(e, self.cache_dir) from None
    shutil.rmtree(self.build_dir, ignore_errors=True)
    self._done = True


def _check_cache(cache_dir: str, expected_fingerprint: str | None, verify=True):
  """Returns (meta, images, masks) or a reason string why the cache cannot be used.

  ``verify``: True re-hashes the arrays and compares with meta.json's checksums;
  a dict of checksums skips the hashing when meta.json records exactly those
  (the caller just wrote them).
  """
  meta_path = os.path.join(cache_dir, META)
  if not os.path.isfile(meta_path):
    return "no meta.json (no cache, or an interrupted build)"
  try:
    with open(meta_path) as f:
      meta = json.load(f)
  except (OSError, ValueError) as e:
    return f"meta.json is unreadable ({e})"
  if not isinstance(meta, dict) or meta.get("cache_version") != CACHE_VERSION:
    return "meta.json is from another cache version"
  if expected_fingerprint is not None and meta.get("fingerprint") != expected_fingerprint:
    return "the inputs or preprocessing settings changed (fingerprint differs)"
  checksums = meta.get("checksums")
  if not isinstance(checksums, dict) or not all(
      isinstance(checksums.get(k), str) for k in (IMAGES, MASKS)):
    return NO_CHECKSUMS
  try:
    n, s = int(meta["num_slices"]), int(meta["image_size"])
    arrays = []
    for name, key, shape, dtype in ((IMAGES, "images_bytes", (n, s, s, 1), np.float32),
                                    (MASKS, "masks_bytes", (n, s, s), np.uint8)):
      path = os.path.join(cache_dir, name)
      if not os.path.isfile(path):
        return f"{name} is missing"
      if os.path.getsize(path) != int(meta[key]):
        return f"{name} has {os.path.getsize(path)} bytes, meta.json says {meta[key]} (truncated?)"
      arr = np.load(path, mmap_mode="r")
      if arr.shape != shape or arr.dtype != dtype:
        return f"{name} has shape {arr.shape} {arr.dtype}, expected {shape} {np.dtype(dtype)}"
      arrays.append(arr)
    for k, v in meta["columns"].items():
      if len(v) != n:
        return f"meta.json column {k!r} has {len(v)} entries for {n} slices"
    for k, v in list(meta["labels"].items()) + [(k, {"values": v})
                                               for k, v in meta["factors"].items()]:
      if len(v["values"]) != n:
        return f"meta.json column {k!r} has {len(v['values'])} entries for {n} slices"
    if verify is True or (isinstance(verify, dict) and verify != {
        IMAGES: checksums[IMAGES], MASKS: checksums[MASKS]}):
      for name in (IMAGES, MASKS):
        if file_checksum(os.path.join(cache_dir, name)) != checksums[name]:
          return f"{CORRUPT} in {name})"
  except (KeyError, TypeError, ValueError, OSError) as e:
    return f"cache files are inconsistent ({type(e).__name__}: {e})"
  return meta, arrays[0], arrays[1]


NO_CHECKSUMS = "meta.json records no checksums (made by an older version)"
CORRUPT = "corrupt (checksum mismatch"  # + " in <file>)"


def load_cache(cache_dir: str, expected_fingerprint: str | None = None,
               label_column: str = "", verify=True) -> SliceDataset | None:
  """Opens a complete, intact cache whose fingerprint matches, else returns None (and logs why).

  ``images`` is opened with ``mmap_mode='r'``.  With ``expected_fingerprint=None``
  any complete cache is accepted.  ``verify`` re-hashes the arrays against the
  checksums in meta.json (a same-size corrupt file is found here, not as a NaN
  loss later); False skips that.
  """
  checked = _check_cache(cache_dir, expected_fingerprint, verify)
  if isinstance(checked, str):
    level = (logging.INFO if checked.startswith(("no meta", "the inputs")) or
             checked == NO_CHECKSUMS else logging.WARNING)
    log.log(level, "cache %s not used: %s", cache_dir, checked)
    return None
  return _dataset(*checked, label_column)


def _dataset(meta, images, masks, label_column: str) -> SliceDataset:
  cols = meta["columns"]
  labels = {k: (np.asarray(v["values"], dtype=str) if v["dtype"] == "str"
                else np.asarray(v["values"], np.float64)) for k, v in meta["labels"].items()}
  return SliceDataset(
      images=images, masks=masks,
      subject_id=np.asarray(cols["subject_id"], dtype=str),
      source_file=np.asarray(cols["source_file"], dtype=str),
      slice_index=np.asarray(cols["slice_index"], np.int64),
      slice_position=np.asarray(cols["slice_position"], np.float32),
      labels=labels,
      factors={k: np.asarray(v, np.float32) for k, v in meta["factors"].items()},
      subjects=meta["subjects"], settings=meta["settings"], label_column=label_column)


def open_cache(cache_dir: str, label_column: str = "") -> SliceDataset:
  """Opens an existing cache without knowing its inputs; DataError when it is unusable.

  The arrays are checked against meta.json's checksums; a corrupt cache is refused.
  """
  checked = _check_cache(cache_dir, None)
  if isinstance(checked, str):
    if checked.startswith(CORRUPT):
      raise DataError(f"cache {cache_dir} is {checked}: delete it or rebuild it")
    raise DataError(f"cache {cache_dir!r} is unusable: {checked}")
  return _dataset(*checked, label_column)
