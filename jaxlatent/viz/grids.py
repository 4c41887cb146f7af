"""Image grids as PNG files.

``save_image_grid`` tiles ``images[N, H, W, 1]`` in [-1, 1] into one greyscale PNG,
written with Pillow (no matplotlib import, a few ms per grid), so training loops and
analysis reports can call it often.
"""

from __future__ import annotations

import math
import os

import numpy as np

from jaxlatent import atomic_io


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
  """Writes uint8 ``pixels[H, W]``, ``[H, W, 1]`` or ``[H, W, 3]`` as an 8-bit PNG (Pillow).

  Written to a temporary name and renamed, so readers never see a half-written file.
  """
  from PIL import Image  # pylint: disable=g-import-not-at-top

  pixels = np.asarray(pixels)
  if pixels.dtype != np.uint8:
    raise ValueError(f"write_png needs uint8 pixels, got {pixels.dtype}")
  if pixels.ndim == 3 and pixels.shape[-1] == 1:
    pixels = pixels[..., 0]
  if not (pixels.ndim == 2 or (pixels.ndim == 3 and pixels.shape[-1] == 3)):
    raise ValueError(f"write_png needs [H, W], [H, W, 1] or [H, W, 3], got {pixels.shape}")
  path = os.fspath(path)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with atomic_io.atomic_path(path) as tmp:
    Image.fromarray(np.ascontiguousarray(pixels)).save(tmp, format="PNG")


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
  """Reads an 8-bit grey or RGB PNG to uint8 ``[H, W]`` or ``[H, W, 3]`` (Pillow)."""
  from PIL import Image  # pylint: disable=g-import-not-at-top

  with Image.open(path) as im:
    if im.format != "PNG":
      raise ValueError(f"{path} is not a PNG file")
    return np.asarray(im.convert("L" if im.mode in ("L", "1", "P", "I;16") else "RGB"))
