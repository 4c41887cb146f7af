"""Writing a volume + RAS affine as a single-frame DICOM series (pydicom).

The inverse of :mod:`jaxlatent.data.dicom`: voxel axis 0 becomes the DICOM
column index, axis 1 the row index and axis 2 the slice, one file per slice.
ImageOrientationPatient, PixelSpacing and ImagePositionPatient are derived from
the affine (RAS converted to DICOM's LPS), so reading the series back gives the
same world geometry.  Voxels are stored as 16-bit integers with a
RescaleSlope / RescaleIntercept: exact for integer-valued volumes (e.g. HU) that
fit in 16 bits, otherwise quantised to 65536 levels over the volume's range.

Used to make DICOM test data and to export analysis maps
(:mod:`jaxlatent.analysis.dicom_out`).
"""

from __future__ import annotations

import datetime
import os
from typing import Sequence

import numpy as np

from jaxlatent import atomic_io
from jaxlatent.data.dicom import (CT_IMAGE_STORAGE, LPS_TO_RAS, MR_IMAGE_STORAGE,
                                  import_pydicom)
from jaxlatent.errors import DataError

SECONDARY_CAPTURE_STORAGE = "1.2.840.10008.5.1.4.1.1.7"
SOP_CLASSES = {"CT": CT_IMAGE_STORAGE, "MR": MR_IMAGE_STORAGE, "SC": SECONDARY_CAPTURE_STORAGE}


def _ds_value(x: float) -> float:
  """``x`` as it will read back from a DICOM decimal string (at most 16 characters)."""
  from pydicom.valuerep import format_number_as_ds  # pylint: disable=g-import-not-at-top
  return float(format_number_as_ds(float(x)))


def _ds(x: float) -> str:
  from pydicom.valuerep import format_number_as_ds  # pylint: disable=g-import-not-at-top
  return format_number_as_ds(float(x))


def choose_rescale(volume: np.ndarray) -> tuple[float, float, np.ndarray]:
  """-> (slope, intercept, stored uint16 values) with ``stored * slope + intercept ~ volume``.

  Integer-valued volumes whose range fits 16 bits are stored exactly (slope 1).
  Others are quantised: the error is at most ``slope / 2``.
  """
  v = np.asarray(volume, np.float64)
  if not np.all(np.isfinite(v)):
    raise DataError("a volume with NaN/Inf voxels cannot be written as DICOM")
  lo, hi = float(v.min()), float(v.max())
  if np.all(v == np.round(v)) and hi - min(lo, 0.0) <= 65535:
    intercept = min(np.floor(lo), 0.0)
    return 1.0, float(intercept), (v - intercept).astype(np.uint16)
  slope = _ds_value((hi - lo) / 65535.0) if hi > lo else 1.0
  intercept = _ds_value(lo)
  stored = np.clip(np.round((v - intercept) / slope), 0, 65535).astype(np.uint16)
  return slope, intercept, stored


def new_uid() -> str:
  """A fresh DICOM UID."""
  return str(import_pydicom().uid.generate_uid())


def write_dicom_series(
    out_dir: str,
    volume: np.ndarray,
    affine: np.ndarray,
    *,
    modality: str = "CT",
    sop_class: str | None = None,
    patient_id: str = "ANONYMOUS",
    patient_name: str = "",
    study_uid: str | None = None,
    series_uid: str | None = None,
    frame_of_reference_uid: str | None = None,
    series_number: int = 1,
    series_description: str = "",
    image_type: Sequence[str] = ("ORIGINAL", "PRIMARY", "AXIAL"),
    rescale: tuple[float, float] | None = None,
    file_prefix: str = "slice",
) -> list[str]:
  """Writes ``volume`` [X, Y, Z] with voxel-to-world RAS ``affine`` as Z DICOM files.

  Args:
    out_dir: folder (created) for ``<file_prefix>_<k>.dcm``, k = slice index.
    volume: 3D array; slice k is ``volume[:, :, k]`` (pixel row r, column c =
      ``volume[c, r, k]``).
    affine: [4, 4] RAS affine; its first two columns must be orthogonal (DICOM
      has no in-plane shear); the third may be oblique (gantry tilt).
    modality: 'CT' | 'MR' | any DICOM modality code when ``sop_class`` is given.
    sop_class: SOPClassUID, or 'CT' / 'MR' / 'SC' (secondary capture); None = the
      image storage class of ``modality``.
    patient_id, patient_name, study_uid, series_uid, frame_of_reference_uid:
      identity; new UIDs are generated for None.  Pass a source series' study and
      frame of reference so that viewers overlay the two.
    series_number, series_description, image_type: written as given.
    rescale: (slope, intercept) to store with; None = :func:`choose_rescale`.
    file_prefix: file name prefix.

  Returns:
    The written paths, in slice order.
  """
  import_pydicom()  # DataError naming the extra when pydicom is missing.
  from pydicom.dataset import Dataset, FileMetaDataset  # pylint: disable=g-import-not-at-top
  from pydicom.uid import (  # pylint: disable=g-import-not-at-top
      PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian)

  vol = np.asarray(volume)
  if vol.ndim != 3 or min(vol.shape) < 1:
    raise DataError(f"a DICOM series needs a 3D volume, got shape {vol.shape}")
  affine = np.asarray(affine, np.float64)
  if affine.shape != (4, 4):
    raise DataError(f"affine must be 4x4, got {affine.shape}")
  sop = SOP_CLASSES.get(sop_class or modality, sop_class)
  if sop is None:
    raise DataError(f"modality {modality!r} has no default SOP class: pass sop_class")
  lps = np.linalg.inv(LPS_TO_RAS) @ affine
  c0, c1, c2, origin = lps[:3, 0], lps[:3, 1], lps[:3, 2], lps[:3, 3]
  dc, dr = float(np.linalg.norm(c0)), float(np.linalg.norm(c1))
  if min(dc, dr) <= 0 or abs(c0 @ c1) > 1e-6 * dc * dr:
    raise DataError("the affine's first two columns are not orthogonal: DICOM slices cannot "
                    "represent an in-plane shear")
  row_cos, col_cos = c0 / dc, c1 / dr
  normal = np.cross(row_cos, col_cos)
  if rescale is None:
    slope, intercept, stored = choose_rescale(vol)
  else:
    slope, intercept = _ds_value(rescale[0]), _ds_value(rescale[1])
    stored = np.clip(np.round((np.asarray(vol, np.float64) - intercept) / slope), 0, 65535
                     ).astype(np.uint16)
  real = stored.astype(np.float64) * slope + intercept
  lo, hi = float(real.min()), float(real.max())
  study_uid = study_uid or new_uid()
  series_uid = series_uid or new_uid()
  frame_of_reference_uid = frame_of_reference_uid or new_uid()
  now = datetime.datetime.now(datetime.timezone.utc)
  os.makedirs(out_dir, exist_ok=True)
  paths = []
  for k in range(vol.shape[2]):
    sop_uid = new_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = sop, sop_uid
    ds.Modality = modality
    ds.PatientID, ds.PatientName = patient_id, patient_name or patient_id
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
    ds.FrameOfReferenceUID = frame_of_reference_uid
    ds.SeriesNumber, ds.InstanceNumber = int(series_number), k + 1
    ds.SeriesDescription = series_description[:64]
    ds.ImageType = list(image_type)
    ds.ContentDate = now.strftime("%Y%m%d")
    ds.ContentTime = now.strftime("%H%M%S")
    if sop == SECONDARY_CAPTURE_STORAGE:
      ds.ConversionType = "WSD"  # workstation-made
    ipp = origin + k * c2
    ds.ImagePositionPatient = [_ds(v) for v in ipp]
    ds.ImageOrientationPatient = [_ds(v) for v in np.concatenate([row_cos, col_cos])]
    ds.PixelSpacing = [_ds(dr), _ds(dc)]  # (between rows, between columns)
    ds.SliceThickness = _ds(abs(c2 @ normal))
    ds.SliceLocation = _ds(ipp @ normal)
    ds.Rows, ds.Columns = int(vol.shape[1]), int(vol.shape[0])
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    ds.PixelRepresentation = 0
    ds.RescaleSlope, ds.RescaleIntercept = _ds(slope), _ds(intercept)
    ds.WindowCenter, ds.WindowWidth = _ds((lo + hi) / 2), _ds(max(hi - lo, 1e-6))
    ds.RescaleType = "HU" if modality == "CT" and sop == CT_IMAGE_STORAGE else "US"
    ds.PixelData = np.ascontiguousarray(stored[:, :, k].T).astype("<u2").tobytes()
    path = os.path.join(out_dir, f"{file_prefix}_{k:04d}.dcm")
    with atomic_io.atomic_path(path) as tmp:
      ds.save_as(tmp, enforce_file_format=True)
    paths.append(path)
  return paths
