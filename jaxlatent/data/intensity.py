"""Intensity normalisation to [-1, 1]: CT windowing in HU, MR robust percentiles."""

from __future__ import annotations

import numpy as np

from jaxlatent.errors import DataError

DEFAULT_CT_WINDOW = (-1000.0, 2000.0)
DEFAULT_MR_PERCENTILES = (0.5, 99.5)


def scale_to_unit(x: np.ndarray, lo, hi) -> np.ndarray:
  """Clips ``x`` to [lo, hi] and maps it linearly onto [-1, 1] (float32).

  ``lo``/``hi`` may be scalars or arrays broadcasting against ``x``.
  """
  lo = np.asarray(lo, np.float32)
  hi = np.asarray(hi, np.float32)
  x = np.clip(np.asarray(x, np.float32), lo, hi)  # a new float32 array: safe in place.
  x -= lo
  x *= np.float32(2.0) / (hi - lo)
  x -= np.float32(1.0)
  return x


def window_ct(hu: np.ndarray, window: tuple[float, float] = DEFAULT_CT_WINDOW) -> np.ndarray:
  """CT windowing: clip HU to ``window`` = (low, high), scale linearly to [-1, 1]."""
  lo, hi = float(window[0]), float(window[1])
  if not lo < hi:
    raise DataError(f"CT window {window!r} needs low < high")
  return scale_to_unit(hu, lo, hi)


def mr_percentile_range(data: np.ndarray, percentiles=DEFAULT_MR_PERCENTILES,
                        mask: np.ndarray | None = None, path: str = "<volume>"
                        ) -> tuple[float, float]:
  """The (low, high) intensity percentiles over the foreground of a whole volume.

  Foreground is ``mask`` when given, else the nonzero voxels.
  """
  data = np.asarray(data)
  fg = (data != 0) if mask is None else np.asarray(mask, bool)
  if fg.shape != data.shape:
    raise DataError(f"{path!r}: mask shape {fg.shape} != image shape {data.shape}")
  values = data[fg]
  if values.size == 0:
    raise DataError(f"{path!r}: no foreground voxel to compute MR percentiles from")
  lo, hi = np.percentile(values.astype(np.float64), [percentiles[0], percentiles[1]])
  if not hi > lo:
    raise DataError(f"{path!r}: the {percentiles[0]}th and {percentiles[1]}th foreground "
                    f"percentiles are equal ({lo:g}); the foreground is constant")
  return float(lo), float(hi)


def normalize_mr(data: np.ndarray, percentiles=DEFAULT_MR_PERCENTILES,
                 mask: np.ndarray | None = None, path: str = "<volume>") -> np.ndarray:
  """MR robust normalisation: clip to foreground percentiles, scale to [-1, 1].

  The percentiles (default 0.5 and 99.5) are taken over the foreground voxels of
  the whole volume (``mask``, or the nonzero voxels when no mask is given), so
  every slice of a subject shares one mapping and background (0) maps to -1.
  """
  lo, hi = mr_percentile_range(data, percentiles, mask, path)
  return scale_to_unit(data, lo, hi)


def intensity_range(data: np.ndarray, modality: str, ct_window=DEFAULT_CT_WINDOW,
                    mr_percentiles=DEFAULT_MR_PERCENTILES, mask: np.ndarray | None = None,
                    path: str = "<volume>") -> tuple[float, float]:
  """(low, high) that :func:`normalize` maps to (-1, 1) for this whole volume.

  Lets the pipeline compute the mapping from the whole volume but apply it only
  to the slices it keeps (``scale_to_unit(slices, low, high)``).
  """
  if modality == "ct":
    lo, hi = float(ct_window[0]), float(ct_window[1])
    if not lo < hi:
      raise DataError(f"CT window {ct_window!r} needs low < high")
    return lo, hi
  if modality == "mr":
    return mr_percentile_range(data, mr_percentiles, mask, path)
  raise DataError(f"unknown modality {modality!r}; choose 'ct' or 'mr'")


def normalize(data: np.ndarray, modality: str, ct_window=DEFAULT_CT_WINDOW,
              mr_percentiles=DEFAULT_MR_PERCENTILES, mask: np.ndarray | None = None,
              path: str = "<volume>") -> np.ndarray:
  """Dispatches to :func:`window_ct` ('ct') or :func:`normalize_mr` ('mr')."""
  if modality == "ct":
    return window_ct(data, ct_window)
  if modality == "mr":
    return normalize_mr(data, mr_percentiles, mask, path)
  raise DataError(f"unknown modality {modality!r}; choose 'ct' or 'mr'")
