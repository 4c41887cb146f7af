"""TensorBoard event files written directly: no TensorFlow, no tensorboard import.

An event file is a sequence of TFRecords, each holding one serialized ``Event``
protocol buffer::

  record = uint64 length | uint32 masked_crc32c(length) | data | uint32 masked_crc32c(data)
  Event  = {1: double wall_time, 2: int64 step,
            3: string file_version | 5: Summary summary | 7: SessionLog session_log}
  Summary.Value = {1: string tag, 2: float simple_value | 4: Image image}
  Image  = {1: int32 height, 2: int32 width, 3: int32 colorspace, 4: bytes png}

The few message types are encoded by hand below.  Each process start opens a new
file ``events.out.tfevents.<time>.<host>.<pid>.jaxlatent`` (the time is fixed-width
and made later than any earlier file's, so readers, which load a folder's files in
name order, see the runs in order).

Resume: a run restarted from the checkpoint of step ``s`` passes ``start_step=s``.
The writer then (1) rewrites the earlier event files of this folder without the
events of steps > s (written after that checkpoint by the interrupted run; temp file
+ rename), so a TensorBoard started later reads each step once, and (2) writes a
``SessionLog.START`` event at step s + 1, which makes a TensorBoard that is already
running drop the points of steps > s it had read before the rewrite.  Only the chief
process (``jax.process_index() == 0``) writes; the others get a writer that does
nothing, as ``metrics.jsonl`` does.
"""

from __future__ import annotations

import io
import math
import os
import re
import socket
import struct
import time
from typing import Any, Iterator, Mapping

import numpy as np

FILE_SUFFIX = ".jaxlatent"
_FILE_RE = re.compile(r"^events\.out\.tfevents\.(\d+)\..*\.jaxlatent$")
_FILE_VERSION = b"brain.Event:2"  # version >= 2: readers honour SessionLog.START
_SESSION_START = 1  # SessionLog.SessionStatus.START
_MASK32 = 0xFFFFFFFF

# ---------------------------------------------------------------------------
# CRC32C (Castagnoli), reflected polynomial 0x82F63B78.


def _crc_table() -> np.ndarray:
  table = np.arange(256, dtype=np.uint32)
  for _ in range(8):
    table = np.where(table & 1, (table >> 1) ^ np.uint32(0x82F63B78), table >> 1)
  return table.astype(np.uint32)


_TABLE_NP = _crc_table()
_TABLE = [int(v) for v in _TABLE_NP]
_LANE_MIN_BYTES = 4096  # below this the byte loop is as fast as setting up the lanes


def _crc_bytes(crc: int, data: bytes) -> int:
  """The CRC register after feeding ``data`` one byte at a time (no init/final xor)."""
  table = _TABLE
  for b in data:
    crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
  return crc


def _zeros_operator(num_bytes: int) -> np.ndarray:
  """Tables [4, 256] of the linear map 'feed num_bytes zero bytes' on a 32-bit register.

  The register update is linear over GF(2), so the map is fixed by its images of
  the 32 unit vectors; the tables hold it per register byte for fast application.
  """
  basis = (np.uint32(1) << np.arange(32, dtype=np.uint32)).astype(np.uint32)
  for _ in range(num_bytes):
    basis = _TABLE_NP[basis & 0xFF] ^ (basis >> 8)
  ops = np.zeros((4, 256), np.uint32)
  values = np.arange(256)
  for p in range(4):
    for k in range(8):
      ops[p] ^= np.where((values >> k) & 1, basis[8 * p + k], np.uint32(0)).astype(np.uint32)
  return ops


def crc32c(data: bytes) -> int:
  """CRC32C of ``data`` (``crc32c(b"123456789") == 0xE3069283``).

  Long inputs are cut into equal lanes whose CRCs are computed together with numpy
  (one vector step per lane byte) and then chained: crc(A || B) is crc(A) carried
  through |B| zero bytes, xor the zero-start crc(B).
  """
  data = bytes(data)
  n = len(data)
  if n < _LANE_MIN_BYTES:
    return _crc_bytes(_MASK32, data) ^ _MASK32
  lane = int(math.isqrt(n))
  lanes = n // lane
  block = np.frombuffer(data, np.uint8, count=lanes * lane).reshape(lanes, lane)
  regs = np.zeros(lanes, np.uint32)
  for j in range(lane):
    regs = _TABLE_NP[(regs ^ block[:, j]) & 0xFF] ^ (regs >> 8)
  ops = _zeros_operator(lane)
  op0, op1, op2, op3 = (list(map(int, ops[p])) for p in range(4))
  crc = _MASK32
  for r in regs.tolist():
    crc = (op0[crc & 0xFF] ^ op1[(crc >> 8) & 0xFF] ^ op2[(crc >> 16) & 0xFF]
           ^ op3[crc >> 24] ^ r)
  return _crc_bytes(crc, data[lanes * lane:]) ^ _MASK32


def masked_crc32c(data: bytes) -> int:
  """The TFRecord checksum: CRC32C rotated right by 15 bits plus a constant."""
  crc = crc32c(data)
  return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & _MASK32


def tfrecord(data: bytes) -> bytes:
  """One TFRecord: length, its masked CRC, the data, the data's masked CRC."""
  header = struct.pack("<Q", len(data))
  return (header + struct.pack("<I", masked_crc32c(header)) + data
          + struct.pack("<I", masked_crc32c(data)))


def _records(buf: bytes) -> Iterator[tuple[int, int]]:
  """(start, end) of each whole, intact record in ``buf``; stops at a torn or corrupt one."""
  pos = 0
  while pos + 12 <= len(buf):
    header = buf[pos:pos + 8]
    (length,) = struct.unpack("<Q", header)
    (header_crc,) = struct.unpack("<I", buf[pos + 8:pos + 12])
    end = pos + 12 + length
    if header_crc != masked_crc32c(header) or end + 4 > len(buf):
      return
    if struct.unpack("<I", buf[end:end + 4])[0] != masked_crc32c(buf[pos + 12:end]):
      return
    yield pos, end + 4
    pos = end + 4


def read_tfrecords(path: str) -> list[bytes]:
  """The data of each record of a TFRecord file, up to a torn or corrupt record (a crash's tail)."""
  with open(path, "rb") as f:
    buf = f.read()
  return [buf[start + 12:end - 4] for start, end in _records(buf)]


# ---------------------------------------------------------------------------
# Protocol buffer wire format (only what Event needs).


def _varint(n: int) -> bytes:
  n &= (1 << 64) - 1  # int64 two's complement, as protobuf encodes negatives
  out = bytearray()
  while True:
    byte = n & 0x7F
    n >>= 7
    if n:
      out.append(byte | 0x80)
    else:
      out.append(byte)
      return bytes(out)


def _key(field: int, wire_type: int) -> bytes:
  return _varint(field << 3 | wire_type)


def _bytes_field(field: int, payload: bytes) -> bytes:
  return _key(field, 2) + _varint(len(payload)) + payload


def _int_field(field: int, value: int) -> bytes:
  return _key(field, 0) + _varint(int(value))


def _event(step: int, wall_time: float, what: bytes) -> bytes:
  """Event{wall_time, step, <what>} with ``what`` an already encoded oneof field."""
  return _key(1, 1) + struct.pack("<d", wall_time) + _int_field(2, step) + what


def _scalar_value(tag: str, value: float) -> bytes:
  return _bytes_field(1, tag.encode()) + _key(2, 5) + struct.pack("<f", value)


def _image_value(tag: str, png: bytes, height: int, width: int, channels: int) -> bytes:
  image = (_int_field(1, height) + _int_field(2, width) + _int_field(3, channels)
           + _bytes_field(4, png))
  return _bytes_field(1, tag.encode()) + _bytes_field(4, image)


def _summary(values: list[bytes]) -> bytes:
  return _bytes_field(5, b"".join(_bytes_field(1, v) for v in values))


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
  result = shift = 0
  while True:
    byte = buf[pos]
    pos += 1
    result |= (byte & 0x7F) << shift
    shift += 7
    if not byte & 0x80:
      return result, pos


def event_fields(data: bytes) -> dict[int, Any]:
  """The top-level fields of an encoded Event: {field number: int, float or bytes}."""
  fields: dict[int, Any] = {}
  pos = 0
  while pos < len(data):
    key, pos = _read_varint(data, pos)
    field, wire_type = key >> 3, key & 7
    if wire_type == 0:
      value, pos = _read_varint(data, pos)
      if value >= 1 << 63:
        value -= 1 << 64
    elif wire_type == 1:
      (value,), pos = struct.unpack("<d", data[pos:pos + 8]), pos + 8
    elif wire_type == 5:
      value, pos = data[pos:pos + 4], pos + 4
    elif wire_type == 2:
      length, pos = _read_varint(data, pos)
      value, pos = data[pos:pos + length], pos + length
    else:
      raise ValueError(f"unsupported protobuf wire type {wire_type}")
    fields[field] = value
  return fields


# ---------------------------------------------------------------------------
# Images.


def _png(pixels: np.ndarray) -> bytes:
  from PIL import Image  # pylint: disable=g-import-not-at-top
  buf = io.BytesIO()
  Image.fromarray(np.ascontiguousarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels)
                  ).save(buf, format="PNG")
  return buf.getvalue()


def image_to_uint8(image: Any) -> np.ndarray:
  """``[H, W]`` or ``[H, W, C]`` (C = 1, 3, 4), float in [0, 1] or uint8 -> uint8 ``[H, W, C]``.

  Floats outside [0, 1] are clipped and NaN is shown as 0.
  """
  x = np.asarray(image)
  if x.ndim == 2:
    x = x[..., None]
  if x.ndim != 3 or x.shape[-1] not in (1, 3, 4) or x.shape[0] == 0 or x.shape[1] == 0:
    raise ValueError(f"image must be [H, W] or [H, W, C] with C in 1, 3, 4; got shape {x.shape}")
  if x.dtype == np.uint8:
    return x
  if x.dtype == np.bool_ or not np.issubdtype(x.dtype, np.number):
    raise ValueError(f"image must be uint8 or float in [0, 1], got dtype {x.dtype}")
  x = np.nan_to_num(x.astype(np.float32), nan=0.0, posinf=1.0, neginf=0.0)
  return np.round(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8)


# ---------------------------------------------------------------------------
# Files.


def event_files(logdir: str) -> list[str]:
  """This library's event files in ``logdir``, in the order readers load them (by name)."""
  if not os.path.isdir(logdir):
    return []
  return sorted(os.path.join(logdir, f) for f in os.listdir(logdir) if _FILE_RE.match(f))


def drop_after(logdir: str, step: int) -> int:
  """Rewrites this library's event files in ``logdir`` without the events of steps > ``step``.

  Each file that changes is written to a temporary name and renamed over the old
  one, so a reader never sees half a file; a torn last record (a crash during a
  write) is dropped too.  Returns the number of events removed.
  """
  removed = 0
  for path in event_files(logdir):
    with open(path, "rb") as f:
      buf = f.read()
    kept, dropped = [], 0
    for start, end in _records(buf):
      fields = event_fields(buf[start + 12:end - 4])
      if 3 in fields or int(fields.get(2, 0)) <= step:  # field 3: the file_version header
        kept.append(buf[start:end])
      else:
        dropped += 1
    body = b"".join(kept)
    if len(body) == len(buf):
      continue
    # The temporary name has no "tfevents" in it, so a running TensorBoard skips it.
    tmp = os.path.join(logdir, f".jaxlatent-rewrite.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
      f.write(body)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
    removed += dropped
  return removed


class SummaryWriter:
  """Writes scalars and images to a new TensorBoard event file in ``logdir``.

  Args:
    logdir: the folder (the training workdir); created if missing.
    is_chief: only the chief process writes; others get a writer that does nothing.
    start_step: the step this run starts from (the restored checkpoint's step, 0
      for a fresh run).  Events of later steps left by an interrupted run are
      removed (see the module docstring); the loop must then write only steps
      > ``start_step``.
  """

  def __init__(self, logdir: str, is_chief: bool = True, start_step: int = 0):
    self.logdir = os.fspath(logdir)
    self.is_chief = bool(is_chief)
    self.path: str | None = None
    self._file = None
    if not self.is_chief:
      return
    os.makedirs(self.logdir, exist_ok=True)
    drop_after(self.logdir, int(start_step))
    stamp = int(time.time())
    for old in event_files(self.logdir):  # later than every earlier file, so loaded after
      stamp = max(stamp, int(_FILE_RE.match(os.path.basename(old)).group(1)) + 1)
    name = (f"events.out.tfevents.{stamp:010d}.{socket.gethostname()}.{os.getpid()}"
            f"{FILE_SUFFIX}")
    self.path = os.path.join(self.logdir, name)
    self._file = open(self.path, "xb")  # pylint: disable=consider-using-with
    self._write(_event(0, time.time(), _bytes_field(3, _FILE_VERSION)))
    # START at start_step + 1: readers drop earlier-read points of steps >= it.
    session_log = _int_field(1, _SESSION_START)
    self._write(_event(int(start_step) + 1, time.time(), _bytes_field(7, session_log)))
    self.flush()

  def _write(self, event: bytes) -> None:
    if self._file is None:
      raise ValueError(f"SummaryWriter for {self.logdir} is closed")
    self._file.write(tfrecord(event))

  def scalars(self, step: int, values: Mapping[str, float]) -> None:
    """Writes ``{tag: value}`` at ``step`` as one event (values stored as float32)."""
    if not self.is_chief or not values:
      return
    summary = _summary([_scalar_value(str(tag), float(v)) for tag, v in values.items()])
    self._write(_event(int(step), time.time(), summary))
    self.flush()

  def image(self, step: int, tag: str, image: Any) -> None:
    """Writes one image (``[H, W]`` or ``[H, W, C]``, float in [0, 1] or uint8) as a PNG."""
    if not self.is_chief:
      return
    pixels = image_to_uint8(image)
    h, w, c = pixels.shape
    summary = _summary([_image_value(str(tag), _png(pixels), h, w, c)])
    self._write(_event(int(step), time.time(), summary))
    self.flush()

  def flush(self) -> None:
    if self._file is not None:
      self._file.flush()

  def close(self) -> None:
    if self._file is not None:
      self._file.close()
      self._file = None

  def __enter__(self) -> "SummaryWriter":
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def scalar_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
  """The entries of a metrics record that are finite real numbers (the plottable ones).

  ``step`` is the x axis, not a curve; bools, strings, arrays with more than one
  element and NaN/Inf (which ``metrics.jsonl`` stores as the strings "nan"/"inf")
  are left out.
  """
  out = {}
  for tag, value in metrics.items():
    if tag == "step" or isinstance(value, (bool, np.bool_, str, bytes)):
      continue
    arr = np.asarray(value)
    if arr.ndim != 0 or arr.dtype.kind not in "iuf":
      continue
    v = float(arr)
    if math.isfinite(v):
      out[str(tag)] = v
  return out


def log_metrics_to_tensorboard(writer: SummaryWriter, step: int,
                               metrics: Mapping[str, Any]) -> dict[str, float]:
  """Writes the finite scalar entries of a metrics record at ``step``; returns them."""
  values = scalar_metrics(metrics)
  writer.scalars(step, values)
  return values
