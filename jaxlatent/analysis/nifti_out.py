"""Per-subject NIfTI volumes of component and subtraction maps (ITK-SNAP / FSLeyes).

The maps of a subject's slices are stacked into a volume ``[H, W, S_slices, K]``
(row, column, slice, component).  They live on the data pipeline's *resized
square slice grid*, not on the source voxel grid: ``jaxlatent.data`` takes slices
along one axis, puts each in display orientation (``jaxlatent.data.slicing``), scales
it so its longer physical side spans ``size`` pixels and pads the other side
(``jaxlatent.data.resize``).  :func:`slice_grid_affine` composes the source affine
with that index mapping, so the written maps overlay the source scan in world
(RAS mm) coordinates.  When the geometry is unknown, pass the affine you want
stored; the file carries exactly the affine it is given.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import nibabel as nib
import numpy as np

from jaxlatent import atomic_io
from jaxlatent.data.slicing import axis_index
from jaxlatent.errors import DataError


def _geom_field(geometry: Any, name: str):
  if isinstance(geometry, dict):
    return tuple(geometry[name])
  return tuple(getattr(geometry, name))


def slice_grid_affine(
    affine: np.ndarray,
    volume_shape: Sequence[int],
    axis: int,
    slice_indices: Sequence[int],
    geometry: Any = None,
) -> np.ndarray:
  """Voxel-to-world affine of maps stored as ``data[row, col, k]`` on the slice grid.

  Args:
    affine: [4, 4] voxel-to-world affine of the (canonical RAS) source volume.
    volume_shape: (X, Y, Z) of that volume.
    axis: the slicing axis (0 sagittal, 1 coronal, 2 axial).
    slice_indices: the source index of each stacked slice; must be evenly spaced
      (a single slice is fine).
    geometry: the ``jaxlatent.data.resize.SquareGeometry`` (or its ``to_dict()``)
      used for the slices: ``slice_shape`` (H, W) before resizing, ``content_shape``
      and ``offset`` in the square.  ``None``: no resize (the native slice grid).

  Returns:
    [4, 4] float64 affine: ``world = A @ [row, col, k, 1]``.

  The display orientation is ``img[r, c] = v[A-1-c, B-1-r]`` with (a, b) the two
  remaining RAS axes in order; resizing uses pixel-centre alignment
  (``src = (dst + 0.5) * in / out - 0.5``), as ``jax.image.resize`` does.
  """
  affine = np.asarray(affine, np.float64)
  if affine.shape != (4, 4):
    raise DataError(f"affine must be 4x4, got {affine.shape}")
  idx = np.asarray(slice_indices, np.float64).reshape(-1)
  if idx.size == 0:
    raise DataError("slice_indices is empty")
  step = float(idx[1] - idx[0]) if idx.size > 1 else 1.0
  if idx.size > 1 and not np.allclose(np.diff(idx), step):
    raise DataError(f"slice indices {idx.astype(int).tolist()} are not evenly spaced; an "
                    "affine cannot describe them (write one slice range at a time)")
  a_ax, b_ax = [i for i in range(3) if i != axis]
  n_a, n_b = int(volume_shape[a_ax]), int(volume_shape[b_ax])
  h, w = n_b, n_a  # display slice [H, W] = [B, A]
  if geometry is None:
    ch, cw, top, left = h, w, 0, 0
  else:
    if _geom_field(geometry, "slice_shape") != (h, w):
      raise DataError(f"geometry.slice_shape {_geom_field(geometry, 'slice_shape')} does not "
                      f"match the display slice shape {(h, w)} of a {tuple(volume_shape)} "
                      f"volume sliced along axis {axis}")
    ch, cw = _geom_field(geometry, "content_shape")
    top, left = _geom_field(geometry, "offset")
  sr, sc = h / ch, w / cw  # source pixels per output pixel
  # Output (row, col, k) -> source voxel coordinates (x, y, z).
  p = np.zeros((4, 4))
  p[3, 3] = 1.0
  # b = B - 1 - r_s,  r_s = (row - top + 0.5) * sr - 0.5
  p[b_ax, 0] = -sr
  p[b_ax, 3] = n_b - 0.5 - (0.5 - top) * sr
  # a = A - 1 - c_s,  c_s = (col - left + 0.5) * sc - 0.5
  p[a_ax, 1] = -sc
  p[a_ax, 3] = n_a - 0.5 - (0.5 - left) * sc
  p[axis, 2] = step
  p[axis, 3] = idx[0]
  return affine @ p


def _as_volume(maps: np.ndarray, what: str) -> np.ndarray:
  """[S, K, H, W] or [S, K, H, W, 1] -> [H, W, S, K] float32."""
  maps = np.asarray(maps, np.float32)
  if maps.ndim == 5:
    if maps.shape[-1] != 1:
      raise DataError(f"{what} have {maps.shape[-1]} channels; NIfTI output needs 1")
    maps = maps[..., 0]
  if maps.ndim != 4:
    raise DataError(f"{what} must be [slices, components, H, W(, 1)], got {maps.shape}")
  return np.ascontiguousarray(maps.transpose(2, 3, 0, 1))


def write_volume(path: str, data: np.ndarray, affine: np.ndarray,
                 description: str = "") -> str:
  """Writes ``data`` [X, Y, Z(, K)] float32 with ``affine`` (sform and qform) to ``path``."""
  img = nib.Nifti1Image(np.asarray(data, np.float32), np.asarray(affine, np.float64))
  img.header.set_xyzt_units("mm")
  img.set_sform(np.asarray(affine, np.float64), code=1)
  img.set_qform(np.asarray(affine, np.float64), code=1)
  if description:
    img.header["descrip"] = description.encode()[:79]
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with atomic_io.atomic_path(path) as tmp:
    nib.save(img, tmp)
  return path


def write_component_volumes(
    out_dir: str,
    subject_id: str,
    component_maps: np.ndarray,
    affine: np.ndarray,
    *,
    subtraction_maps: np.ndarray | None = None,
    tag: str = "",
) -> dict[str, str]:
  """Writes one subject's component (and subtraction) maps as 4D NIfTI volumes.

  Args:
    out_dir: output folder (created).
    subject_id: used in the file names.
    component_maps: [S_slices, K, H, W(, 1)] e.g. ``EigenResult.component_maps``
      of the subject's slices stacked on axis 0 (slices in source order).
    affine: [4, 4] affine stored in the files; use :func:`slice_grid_affine` to get
      the one that maps the resized slice grid to world coordinates.
    subtraction_maps: optional [S_slices, T, H, W(, 1)] ``x_t - x_0`` maps.
    tag: optional extra name part (e.g. the direction's name).

  Returns:
    {"components": path, "subtraction": path (when given)}; volumes are
    ``[H, W, S_slices, K]`` (4th dim = component / step).
  """
  if not subject_id or os.sep in str(subject_id):
    raise DataError(f"subject_id {subject_id!r} cannot be used in a file name")
  stem = f"{subject_id}_{tag}" if tag else str(subject_id)
  paths = {"components": write_volume(
      os.path.join(out_dir, f"{stem}_components.nii.gz"),
      _as_volume(component_maps, "component maps"), affine,
      "jaxlatent eigen-analysis component maps")}
  if subtraction_maps is not None:
    paths["subtraction"] = write_volume(
        os.path.join(out_dir, f"{stem}_subtraction.nii.gz"),
        _as_volume(subtraction_maps, "subtraction maps"), affine,
        "jaxlatent subtraction maps x_t - x_0")
  return paths


def _regular_grid(slice_indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Sorted unique indices -> (evenly spaced covering grid, position of each index)."""
  idx = np.asarray(slice_indices, np.int64)
  if idx.size == 0:
    raise DataError("no slices given")
  if np.unique(idx).size != idx.size:
    raise DataError(f"slice indices {idx.tolist()} contain duplicates")
  lo, hi = int(idx.min()), int(idx.max())
  step = int(np.gcd.reduce(np.diff(np.sort(idx)))) if idx.size > 1 else 1
  grid = np.arange(lo, hi + 1, step, dtype=np.int64)
  return grid, (idx - lo) // step


def _place_on_grid(maps: np.ndarray, grid: np.ndarray, pos: np.ndarray, what: str
                   ) -> np.ndarray:
  """[S, ...] maps at positions ``pos`` of ``grid`` (from :func:`_regular_grid`);
  grid slices with no map stay zero."""
  if maps.shape[0] != pos.size:
    raise DataError(f"{maps.shape[0]} {what} for {pos.size} slice indices")
  out = np.zeros((grid.size,) + maps.shape[1:], np.float32)
  out[pos] = maps
  return out


def write_subject_maps(
    out_dir: str,
    subject_id: str,
    subject_info: dict,
    slice_indices,
    component_maps: np.ndarray,
    *,
    subtraction_maps: np.ndarray | None = None,
    tag: str = "",
) -> dict[str, str]:
  """Writes one subject's maps in the source scan's world space.

  Args:
    out_dir, subject_id, tag: as :func:`write_component_volumes`.
    subject_info: ``SliceDataset.subjects[subject_id]`` (``affine``, ``shape``,
      ``axis``, ``geometry``).  Phantoms carry no affine: the identity is stored.
    slice_indices: [S] source slice index of each map (``SliceDataset.slice_index``),
      any order; slices skipped by the pipeline (e.g. empty ones) become zero slices
      of an evenly spaced grid so that one affine describes the volume.
    component_maps: [S, K, H, W(, 1)]; subtraction_maps: [S, T, H, W(, 1)] or None.

  Returns:
    The written paths (see :func:`write_component_volumes`).
  """

  grid, pos = _regular_grid(slice_indices)

  def regrid(maps):
    if maps is None:
      return None
    return _place_on_grid(np.asarray(maps, np.float32), grid, pos, "maps")

  affine = subject_info.get("affine")
  if affine is None:
    affine = np.eye(4)
  else:
    affine = slice_grid_affine(np.asarray(affine, np.float64), subject_info["shape"],
                               axis_index(subject_info["axis"]), grid,
                               subject_info.get("geometry"))
  return write_component_volumes(out_dir, subject_id, regrid(component_maps), affine,
                                 subtraction_maps=regrid(subtraction_maps), tag=tag)
