"""Per-subject component and subtraction maps as DICOM series, beside a DICOM source.

The DICOM counterpart of :mod:`jaxlatent.analysis.nifti_out`, for subjects read
with ``data.source='dicom'``.  Each component (and each subtraction step) is
written as its own derived secondary-capture series in the source's study, with
the source's PatientID / PatientName, StudyInstanceUID and FrameOfReferenceUID
and full image-plane geometry (ImagePositionPatient / ImageOrientationPatient /
PixelSpacing) of the resized slice grid (:func:`slice_grid_affine`).  A PACS
viewer thus lists the maps in the same study and overlays them on the scan.
Pixels are 16-bit with RescaleSlope / RescaleIntercept (see
:func:`jaxlatent.data.dicom_write.choose_rescale`): the stored value times the
slope plus the intercept gives the map within half a slope.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from jaxlatent.analysis.nifti_out import _place_on_grid, _regular_grid, slice_grid_affine
from jaxlatent.data.dicom_write import write_dicom_series
from jaxlatent.errors import DataError

# Series numbers of exported maps: kept clear of scanner series numbers.
SERIES_NUMBER_BASE = {"components": 9000, "subtraction": 9500}

# A DICOM slice's column index runs along voxel axis 0: swapping the first two axes
# of the [row, col, slice] map grid makes the DICOM pixels look like the display slice.
_SWAP_ROW_COL = np.array([[0.0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])


def _maps(maps, what: str) -> np.ndarray:
  """[S, K, H, W] or [S, K, H, W, 1] -> float32 [S, K, H, W]."""
  maps = np.asarray(maps, np.float32)
  if maps.ndim == 5:
    if maps.shape[-1] != 1:
      raise DataError(f"{what} have {maps.shape[-1]} channels; DICOM output needs 1")
    maps = maps[..., 0]
  if maps.ndim != 4:
    raise DataError(f"{what} must be [slices, components, H, W(, 1)], got {maps.shape}")
  return maps


def write_map_series(
    out_dir: str,
    maps: np.ndarray,
    affine: np.ndarray,
    source: dict[str, Any],
    *,
    description: str,
    series_number: int,
) -> list[str]:
  """Writes ``maps`` [S, K, H, W(, 1)] as K series ``<out_dir>/<k:02d>/`` in ``source``'s study.

  Args:
    out_dir: parent folder of the K series folders.
    maps: per-slice maps on the square slice grid.
    affine: [4, 4] RAS affine of ``maps[s, k, row, col]`` indexed (row, col, s),
      e.g. from :func:`slice_grid_affine`.
    source: the source series' identity (``SeriesInfo.metadata()``): patient,
      study and frame-of-reference fields.
    description: series description; ' <k>' is appended.
    series_number: number of series 0; series k gets ``series_number + k``.

  Returns:
    The K series folders.
  """
  maps = _maps(maps, description)
  missing = [k for k in ("study_uid", "frame_of_reference_uid") if not source.get(k)]
  if missing:
    raise DataError(f"the DICOM source has no {' / '.join(missing)}: maps written without "
                    "them would not line up with the scan in a viewer")
  affine = np.asarray(affine, np.float64) @ _SWAP_ROW_COL
  folders = []
  for k in range(maps.shape[1]):
    folder = os.path.join(out_dir, f"{k:02d}")
    write_dicom_series(
        folder, np.ascontiguousarray(maps[:, k].transpose(2, 1, 0)), affine,
        modality="OT", sop_class="SC", patient_id=source.get("patient_id") or "ANONYMOUS",
        patient_name=source.get("patient_name", ""), study_uid=source["study_uid"],
        frame_of_reference_uid=source["frame_of_reference_uid"],
        series_number=series_number + k, series_description=f"{description} {k}",
        image_type=("DERIVED", "SECONDARY", "MAP"), file_prefix="map")
    folders.append(folder)
  return folders


def write_subject_maps_dicom(
    out_dir: str,
    subject_id: str,
    subject_info: dict,
    slice_indices,
    component_maps: np.ndarray,
    *,
    subtraction_maps: np.ndarray | None = None,
    tag: str = "",
) -> dict[str, list[str]]:
  """Writes one DICOM subject's maps as DICOM series co-registered with its scan.

  Args:
    out_dir: output folder; series go to ``<out_dir>/<stem>_components/<k>/`` and
      ``<out_dir>/<stem>_subtraction/<t>/`` with ``stem = <subject_id>[_<tag>]``.
    subject_id, tag: used in folder names and series descriptions.
    subject_info: ``SliceDataset.subjects[subject_id]`` of a ``data.source='dicom'``
      dataset (``affine``, ``shape``, ``axis``, ``geometry`` and ``dicom``).
    slice_indices: [S] source slice index of each map (``SliceDataset.slice_index``);
      slices the pipeline skipped become zero slices of an evenly spaced grid.
    component_maps: [S, K, H, W(, 1)]; subtraction_maps: [S, T, H, W(, 1)] or None.

  Returns:
    {"components": [K folders], "subtraction": [T folders] (when given)}.
  """
  from jaxlatent.data.slicing import axis_index  # local: data is a sibling package

  source = subject_info.get("dicom")
  if not source:
    raise DataError(f"subject {subject_id!r} was not read from DICOM (no 'dicom' entry in its "
                    "metadata); write its maps as NIfTI instead")
  if not subject_id or os.sep in str(subject_id):
    raise DataError(f"subject_id {subject_id!r} cannot be used in a folder name")
  grid, pos = _regular_grid(slice_indices)

  def regrid(maps, what):
    return _place_on_grid(_maps(maps, what), grid, pos, what)

  affine = slice_grid_affine(np.asarray(subject_info["affine"], np.float64),
                             subject_info["shape"], axis_index(subject_info["axis"]), grid,
                             subject_info.get("geometry"))
  stem = f"{subject_id}_{tag}" if tag else str(subject_id)
  label = f"jaxlatent {tag} " if tag else "jaxlatent "
  out = {"components": write_map_series(
      os.path.join(out_dir, f"{stem}_components"), regrid(component_maps, "component maps"),
      affine, source, description=f"{label}component",
      series_number=SERIES_NUMBER_BASE["components"])}
  if subtraction_maps is not None:
    out["subtraction"] = write_map_series(
        os.path.join(out_dir, f"{stem}_subtraction"),
        regrid(subtraction_maps, "subtraction maps"), affine, source,
        description=f"{label}subtraction step", series_number=SERIES_NUMBER_BASE["subtraction"])
  return out
