"""2D slices of a canonical (RAS) volume, in one documented display orientation.

Orientation of a returned slice ``img[row, col]`` (radiological convention):
  * axial (fixed z):    rows run anterior -> posterior (anterior up),
                        columns run subject right -> left (right on image left);
  * coronal (fixed y):  rows run superior -> inferior (superior up),
                        columns run subject right -> left;
  * sagittal (fixed x): rows run superior -> inferior (superior up),
                        columns run anterior -> posterior (face on image left).
In every case, with (a, b) the two remaining RAS axes in order, ``img`` is the
[a, b] slice flipped along both axes and transposed: ``img[r, c] = v[A-1-c, B-1-r]``.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from jaxlatent.data.config import AXES, is_int_range
from jaxlatent.errors import ConfigError, DataError


def axis_index(axis: str) -> int:
  """'sagittal' -> 0 (x), 'coronal' -> 1 (y), 'axial' -> 2 (z)."""
  if axis not in AXES:
    raise ConfigError(f"axis={axis!r} is unknown; choose one of {', '.join(AXES)}")
  return AXES[axis]


def resolve_slice_range(slice_range, extent: int, path: str = "<volume>") -> tuple[int, int]:
  """Turns a slice range into absolute ``(start, stop)`` indices, stop exclusive.

  Two ints are absolute voxel indices (``0 <= start < stop <= extent``); two floats
  are fractions of the extent in [0, 1] (``start = floor(f0 * extent)``,
  ``stop = ceil(f1 * extent)``, so (0.0, 1.0) is every slice).  Raises DataError
  naming the file, the range and the extent when the range does not fit.
  """
  if len(slice_range) != 2:
    raise ConfigError(f"slice_range={slice_range!r} must be (start, stop)")
  s0, s1 = slice_range
  if is_int_range(slice_range):
    start, stop = int(s0), int(s1)
  elif all(isinstance(v, numbers.Real) and not isinstance(v, numbers.Integral)
           for v in slice_range):
    if not 0.0 <= s0 < s1 <= 1.0:
      raise DataError(f"{path!r}: fractional slice range {tuple(slice_range)} is out of "
                      f"bounds (needs 0 <= start < stop <= 1; extent {extent})")
    start = int(math.floor(s0 * extent))
    stop = max(int(math.ceil(s1 * extent)), start + 1)
    stop = min(stop, extent)
  else:
    raise ConfigError(f"slice_range={slice_range!r} mixes ints and floats")
  if not 0 <= start < stop <= extent:
    raise DataError(f"{path!r}: slice range {tuple(slice_range)} -> [{start}, {stop}) is out "
                    f"of bounds for an extent of {extent} slices (valid: 0 .. {extent})")
  return start, stop


def orient_slices(slab: np.ndarray) -> np.ndarray:
  """[n, A, B] slices in RAS axis order -> [n, B, A] display orientation (see module doc)."""
  return np.ascontiguousarray(np.flip(slab, axis=(1, 2)).transpose(0, 2, 1))


def extract_slices(data: np.ndarray, axis: int, indices) -> np.ndarray:
  """Slices ``data`` [X, Y, Z] at ``indices`` along ``axis`` -> [n, H, W] display orientation."""
  slab = np.moveaxis(np.asarray(data), axis, 0)[np.asarray(indices, int)]  # [n, A, B]
  return orient_slices(slab)


def slice_pixel_spacing(spacing, axis: int) -> tuple[float, float]:
  """(row, column) spacing in mm of a display-oriented slice along ``axis``."""
  a, b = [i for i in range(3) if i != axis]
  return float(spacing[b]), float(spacing[a])


def slice_positions(indices, extent: int) -> np.ndarray:
  """Normalized position ``index / (extent - 1)`` in [0, 1] (0 for a 1-slice extent)."""
  idx = np.asarray(indices, np.float64)
  return (idx / max(extent - 1, 1)).astype(np.float32)


def foreground_fractions(mask_slices: np.ndarray) -> np.ndarray:
  """[n, H, W] bool -> [n] fraction of foreground pixels per slice."""
  return mask_slices.reshape(mask_slices.shape[0], -1).mean(axis=1)
