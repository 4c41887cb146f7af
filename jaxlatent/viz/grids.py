"""Image grids as PNG files, with no plotting library.

``save_image_grid`` tiles ``images[N, H, W, 1]`` in [-1, 1] into one greyscale PNG.
The PNG is written with ``zlib`` directly (no matplotlib import, a few ms per grid),
so training loops and analysis reports can call it often.
"""

from __future__ import annotations

import math
import os
import struct as _struct
import zlib

import numpy as np


def to_uint8(images: np.ndarray) -> np.ndarray:
  """Maps values in [-1, 1] to uint8 [0, 255]; values outside are clipped, NaN -> 0."""
  x = np.nan_to_num(np.asarray(images, np.float32), nan=-1.0, posinf=1.0, neginf=-1.0)
  return np.round((np.clip(x, -1.0, 1.0) + 1.0) * 127.5).astype(np.uint8)


def make_grid(images: np.ndarray, nrow: int | None = None, padding: int = 2,
              pad_value: float = -1.0) -> np.ndarray:
  """Tiles ``images[N, H, W, C]`` (C = 1 or 3) into one ``[rows*(H+p)+p, nrow*(W+p)+p, C]``.

  Args:
    images: float images in [-1, 1] (or uint8), NHWC.
    nrow: images per row; ``None``: ceil(sqrt(N)).
    padding: pixels between (and around) tiles.
    pad_value: value of the padding, in the images' range.
  """
  images = np.asarray(images)
  if images.ndim == 3:  # [N, H, W] -> [N, H, W, 1]
    images = images[..., None]
  if images.ndim != 4 or images.shape[0] == 0:
    raise ValueError(f"expected images [N, H, W, C] with N > 0, got shape {images.shape}")
  n, h, w, c = images.shape
  nrow = max(1, min(nrow or math.ceil(math.sqrt(n)), n))
  ncol_rows = math.ceil(n / nrow)
  grid = np.full((ncol_rows * (h + padding) + padding, nrow * (w + padding) + padding, c),
                 pad_value, dtype=images.dtype)
  for i in range(n):
    r, q = divmod(i, nrow)
    y, x = padding + r * (h + padding), padding + q * (w + padding)
    grid[y:y + h, x:x + w] = images[i]
  return grid


def write_png(pixels: np.ndarray, path: str | os.PathLike) -> None:
  """Writes uint8 ``pixels[H, W]``, ``[H, W, 1]`` or ``[H, W, 3]`` as an 8-bit PNG."""
  pixels = np.asarray(pixels)
  if pixels.dtype != np.uint8:
    raise ValueError(f"write_png needs uint8 pixels, got {pixels.dtype}")
  if pixels.ndim == 3 and pixels.shape[-1] == 1:
    pixels = pixels[..., 0]
  if pixels.ndim == 2:
    color_type, channels = 0, 1  # greyscale
  elif pixels.ndim == 3 and pixels.shape[-1] == 3:
    color_type, channels = 2, 3  # RGB
  else:
    raise ValueError(f"write_png needs [H, W], [H, W, 1] or [H, W, 3], got {pixels.shape}")
  h, w = pixels.shape[:2]
  # Each scanline is prefixed with filter type 0 (None).
  raw = np.concatenate([np.zeros((h, 1), np.uint8), pixels.reshape(h, w * channels)], axis=1)

  def chunk(tag: bytes, data: bytes) -> bytes:
    return (_struct.pack(">I", len(data)) + tag + data
            + _struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF))

  header = _struct.pack(">IIBBBBB", w, h, 8, color_type, 0, 0, 0)
  png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
         + chunk(b"IDAT", zlib.compress(raw.tobytes(), 6)) + chunk(b"IEND", b""))
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = f"{path}.tmp"
  with open(tmp, "wb") as f:
    f.write(png)
  os.replace(tmp, path)  # readers never see a half-written PNG


def save_image_grid(images: np.ndarray, path: str | os.PathLike, nrow: int | None = None,
                    padding: int = 2) -> np.ndarray:
  """Saves ``images[N, H, W, 1]`` in [-1, 1] as one greyscale PNG grid; returns the uint8 grid.

  Args:
    images: float images in [-1, 1] (C = 1, or 3 for colour overlays), NHWC.
    path: the PNG file to write (parent folders are created).
    nrow: images per row; ``None``: ceil(sqrt(N)).
    padding: pixels of black between tiles.
  """
  grid = to_uint8(make_grid(np.asarray(images, np.float32), nrow, padding, pad_value=-1.0))
  write_png(grid, path)
  return grid


def read_png(path: str | os.PathLike) -> np.ndarray:
  """Reads a PNG written by :func:`write_png` (8-bit grey or RGB, no interlace) to uint8."""
  with open(path, "rb") as f:
    data = f.read()
  if data[:8] != b"\x89PNG\r\n\x1a\n":
    raise ValueError(f"{path} is not a PNG file")
  pos, idat, header = 8, b"", None
  while pos < len(data):
    (length,) = _struct.unpack(">I", data[pos:pos + 4])
    tag, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
    pos += 12 + length
    if tag == b"IHDR":
      header = _struct.unpack(">IIBBBBB", body)
    elif tag == b"IDAT":
      idat += body
  w, h, depth, color_type = header[0], header[1], header[2], header[3]
  if depth != 8 or color_type not in (0, 2):
    raise ValueError(f"{path}: only 8-bit grey/RGB PNGs are supported")
  channels = 1 if color_type == 0 else 3
  raw = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(h, 1 + w * channels)
  if np.any(raw[:, 0] != 0):
    raise ValueError(f"{path}: only unfiltered PNG scanlines are supported")
  pixels = raw[:, 1:].reshape(h, w, channels)
  return pixels[..., 0] if channels == 1 else pixels
