"""The on-disk cache of preprocessed slices.

Layout of ``cache_dir``:
  images.npy  float32 [N, S, S, 1], written slice batch by slice batch through
              ``np.lib.format.open_memmap`` (never the whole set in RAM);
  masks.npy   uint8 [N, S, S];
  meta.json   per-slice columns, per-subject geometry, preprocessing settings,
              the input fingerprint and the byte sizes of the two arrays.

Atomicity: arrays are written under temporary names; a build first deletes any
old ``meta.json``, renames the arrays into place, then writes ``meta.json`` via a
temporary file + ``os.replace``.  ``meta.json`` is thus the completion marker: a
cache without it, or whose arrays do not match the sizes and shapes it records,
is treated as absent and rebuilt.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import uuid
from typing import Any

import numpy as np

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


class CacheWriter:
  """Writes a cache incrementally: ``append`` slice batches, then ``finish(meta)``.

  Use as a context manager: leaving the block without ``finish`` (an exception,
  Ctrl-C) deletes the temporary files and leaves no cache that looks complete.
  """

  def __init__(self, cache_dir: str, max_slices: int, size: int):
    if max_slices < 1:
      raise DataError(f"cache {cache_dir!r}: nothing to write (0 slices)")
    os.makedirs(cache_dir, exist_ok=True)
    self.cache_dir = cache_dir
    self.max_slices, self.size, self.n = int(max_slices), int(size), 0
    tag = f".tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    self._img_tmp = os.path.join(cache_dir, IMAGES + tag)
    self._mask_tmp = os.path.join(cache_dir, MASKS + tag)
    self._images = np.lib.format.open_memmap(
        self._img_tmp, mode="w+", dtype=np.float32, shape=(self.max_slices, size, size, 1))
    self._masks = np.lib.format.open_memmap(
        self._mask_tmp, mode="w+", dtype=np.uint8, shape=(self.max_slices, size, size))
    self._done = False

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
    self._images = self._masks = None
    for p in (self._img_tmp, self._mask_tmp):
      if os.path.exists(p):
        os.remove(p)
    self._done = True

  def finish(self, meta: dict[str, Any]) -> None:
    """Trims to the slices written, moves the arrays into place, writes meta.json last."""
    if self.n == 0:
      raise DataError(f"cache {self.cache_dir!r}: no slice was written")
    self._images.flush()
    self._masks.flush()
    self._images = self._masks = None
    if self.n < self.max_slices:
      _trim_npy(self._img_tmp, self.n)
      _trim_npy(self._mask_tmp, self.n)
    meta = dict(meta, num_slices=self.n, image_size=self.size, cache_version=CACHE_VERSION,
                images_bytes=os.path.getsize(self._img_tmp),
                masks_bytes=os.path.getsize(self._mask_tmp))
    meta_path = os.path.join(self.cache_dir, META)
    if os.path.exists(meta_path):
      os.remove(meta_path)  # The old cache is invalid from here on.
    os.replace(self._img_tmp, os.path.join(self.cache_dir, IMAGES))
    os.replace(self._mask_tmp, os.path.join(self.cache_dir, MASKS))
    tmp = meta_path + f".tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    with open(tmp, "w") as f:
      json.dump(meta, f, default=_jsonable)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, meta_path)
    self._done = True


def _check_cache(cache_dir: str, expected_fingerprint: str | None):
  """Returns (meta, images, masks) or a reason string why the cache cannot be used."""
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
  except (KeyError, TypeError, ValueError, OSError) as e:
    return f"cache files are inconsistent ({type(e).__name__}: {e})"
  return meta, arrays[0], arrays[1]


def load_cache(cache_dir: str, expected_fingerprint: str | None = None,
               label_column: str = "") -> SliceDataset | None:
  """Opens a complete cache whose fingerprint matches, else returns None (and logs why).

  ``images`` is opened with ``mmap_mode='r'``.  With ``expected_fingerprint=None``
  any complete cache is accepted.
  """
  checked = _check_cache(cache_dir, expected_fingerprint)
  if isinstance(checked, str):
    level = logging.INFO if checked.startswith(("no meta", "the inputs")) else logging.WARNING
    log.log(level, "cache %s not used: %s", cache_dir, checked)
    return None
  meta, images, masks = checked
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
  """Opens an existing cache without knowing its inputs; DataError when it is unusable."""
  checked = _check_cache(cache_dir, None)
  if isinstance(checked, str):
    raise DataError(f"cache {cache_dir!r} is unusable: {checked}")
  return load_cache(cache_dir, None, label_column)
