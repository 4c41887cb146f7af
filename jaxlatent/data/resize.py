"""Square resizing that keeps the physical aspect ratio.

A slice of ``H x W`` pixels with (row, col) spacing ``(sr, sc)`` mm covers
``H*sr x W*sc`` mm.  It is scaled (anti-aliased linear, ``jax.image.resize``) so
its longer physical side spans ``size`` pixels, and the shorter side is padded
symmetrically with the background value (-1 for images, 0 for masks).  That is
"pad to a physically square field of view, then resize", done in the order that
never blends padding into the content.  Masks use nearest neighbour on the same
grid, so image and mask pixels stay aligned.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from scipy import sparse

BACKGROUND = -1.0


@dataclasses.dataclass(frozen=True)
class SquareGeometry:
  """Where a resized slice sits in the square: content shape and top-left offset."""

  slice_shape: tuple[int, int]    # (H, W) before resizing.
  content_shape: tuple[int, int]  # (h, w) after resizing, before padding.
  offset: tuple[int, int]         # (top, left) of the content in the square.
  size: int

  def to_dict(self) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v
            for k, v in dataclasses.asdict(self).items()}


def square_geometry(slice_shape, pixel_spacing, size: int) -> SquareGeometry:
  """Computes the content shape and offset for ``slice_shape`` [H, W] at ``pixel_spacing``."""
  h, w = int(slice_shape[0]), int(slice_shape[1])
  extent_h = h * float(pixel_spacing[0])
  extent_w = w * float(pixel_spacing[1])
  scale = size / max(extent_h, extent_w)  # output pixels per mm.
  ch = int(min(size, max(1, round(extent_h * scale))))
  cw = int(min(size, max(1, round(extent_w * scale))))
  return SquareGeometry((h, w), (ch, cw), ((size - ch) // 2, (size - cw) // 2), size)


def _pad(x: np.ndarray, geom: SquareGeometry, value) -> np.ndarray:
  """[n, h, w] -> [n, size, size] with ``value`` around the content."""
  out = np.full((x.shape[0], geom.size, geom.size), value, dtype=x.dtype)
  t, l = geom.offset
  out[:, t:t + x.shape[1], l:l + x.shape[2]] = x
  return out


@functools.lru_cache(maxsize=64)
def _resize_matrix(n_in: int, n_out: int) -> sparse.csr_matrix:
  """Sparse [n_out, n_in] weights of 1D anti-aliased linear resizing (``jax.image.resize``).

  Resizing is linear and separable, so resizing the identity gives its matrix
  (a few nonzeros per row); two sparse products then resize any number of
  slices, with no per-shape compilation and ~4x faster than the dense op.
  """
  eye = jnp.eye(n_in, dtype=jnp.float32)
  w = np.asarray(jax.image.resize(eye, (n_out, n_in), "linear", antialias=True))
  return sparse.csr_matrix(w)


def resize_images(images: np.ndarray, geom: SquareGeometry, chunk: int = 128) -> np.ndarray:
  """[n, H, W] float32 in [-1, 1] -> [n, S, S] (linear, anti-aliased; padded with -1).

  Same values as ``jax.image.resize(x, (n, h, w), 'linear', antialias=True)`` (to
  float32 rounding) on the content, then -1 padding.
  """
  n, h, w = images.shape
  ch, cw = geom.content_shape
  t, l = geom.offset
  wr, wc = _resize_matrix(h, ch), _resize_matrix(w, cw)
  out = np.full((n, geom.size, geom.size), np.float32(BACKGROUND), np.float32)
  for i in range(0, n, chunk):
    x = np.asarray(images[i:i + chunk], np.float32)
    k = x.shape[0]
    if (ch, cw) != (h, w):
      y = wc @ x.reshape(k * h, w).T  # [w', k*H]
      y = y.reshape(cw, k, h).transpose(2, 1, 0).reshape(h, k * cw)  # [H, k*w']
      x = (wr @ y).reshape(ch, k, cw).transpose(1, 0, 2)  # [k, h', w']
    out[i:i + k, t:t + ch, l:l + cw] = np.clip(x, -1.0, 1.0)
  return out


def resize_masks(masks: np.ndarray, geom: SquareGeometry) -> np.ndarray:
  """[n, H, W] bool -> [n, S, S] bool, nearest neighbour on the same grid, padded with 0."""
  masks = np.asarray(masks, bool)
  h, w = masks.shape[1:]
  ch, cw = geom.content_shape
  # Nearest neighbour with pixel centres aligned (same convention as jax.image.resize).
  rows = np.clip(np.floor((np.arange(ch) + 0.5) * h / ch).astype(int), 0, h - 1)
  cols = np.clip(np.floor((np.arange(cw) + 0.5) * w / cw).astype(int), 0, w - 1)
  content = masks[:, rows][:, :, cols]
  return _pad(content, geom, False)
