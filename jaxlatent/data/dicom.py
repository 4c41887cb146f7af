"""Reading DICOM CT/MR series into the same canonical RAS :class:`Volume` as NIfTI.

A folder tree (e.g. LIDC-IDRI's ``patient/study/series/*.dcm``) is scanned
header-only; files are grouped by SeriesInstanceUID and only single-frame CT and
MR image objects are kept (localizers, secondary captures, structured reports,
segmentations and other non-image objects are skipped).  Slices are ordered by
their position along the slice normal (the cross product of the two
ImageOrientationPatient direction cosines), never by file name or InstanceNumber,
and the voxel-to-world affine is built from ImagePositionPatient,
ImageOrientationPatient and PixelSpacing.  DICOM world coordinates are LPS; the
affine is converted to RAS so that, after ``nib.as_closest_canonical``, a DICOM
series and a NIfTI file of the same image give identical voxels and affines.
Voxels are rescaled with RescaleSlope / RescaleIntercept (HU for CT).

pydicom is an optional dependency (``pip install 'jaxlatent[dicom]'``); it is
imported inside the functions that need it.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import warnings
from collections import Counter
from typing import Any, Callable

import nibabel as nib
import numpy as np

from jaxlatent.data.labels import load_labels
from jaxlatent.data.nifti import Volume, check_finite, spacing_from_affine
from jaxlatent.data.slicing import axis_index, resolve_slice_range
from jaxlatent.errors import ConfigError, DataError

log = logging.getLogger(__name__)

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
IMAGE_SOP_CLASSES = {CT_IMAGE_STORAGE: "CT", MR_IMAGE_STORAGE: "MR"}
SECONDARY_CAPTURE_PREFIX = "1.2.840.10008.5.1.4.1.1.7"
# DICOM patient coordinates are LPS; RAS flips the first two world axes.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])

_ORIENTATION_TOL = 1e-4  # direction cosines are written with ~6+ decimals.
_SPACING_TOL = 1e-4  # mm


def import_pydicom():
  """Returns the pydicom module, or raises DataError saying which extra to install."""
  try:
    import pydicom  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise DataError("reading or writing DICOM needs pydicom: pip install 'jaxlatent[dicom]'"
                    ) from None
  return pydicom


@dataclasses.dataclass(frozen=True, eq=False)
class SeriesInfo:
  """One CT/MR image series found on disk, with its validated geometry.

  Attributes:
    series_uid: SeriesInstanceUID.
    subject_id: the PatientID when the patient has one series, else
      ``<PatientID>_<SeriesNumber>`` (or ``_<SeriesInstanceUID>``); used as the
      subject id of the data pipeline and in file names.
    patient_id, patient_name, study_uid, frame_of_reference_uid, modality,
      series_number, description: header fields ('' when absent).
    files: the slice files, ordered along the slice normal (ascending).
    path: the folder holding the files (their common folder).
    affine: float64 [4, 4] voxel-to-world RAS affine of the array
      ``[column, row, slice]`` (before canonical reorientation).
    shape: (Columns, Rows, number of slices).
  """

  series_uid: str
  subject_id: str
  patient_id: str
  patient_name: str
  study_uid: str
  frame_of_reference_uid: str
  modality: str
  series_number: str
  description: str
  files: tuple[str, ...]
  path: str
  affine: np.ndarray
  shape: tuple[int, int, int]

  def metadata(self) -> dict[str, Any]:
    """JSON-able identity of the series (kept in the cache, used by the map export)."""
    return {"series_uid": self.series_uid, "patient_id": self.patient_id,
            "patient_name": self.patient_name, "study_uid": self.study_uid,
            "frame_of_reference_uid": self.frame_of_reference_uid,
            "modality": self.modality, "series_number": self.series_number,
            "description": self.description, "num_files": len(self.files)}

  def canonical_shape(self) -> tuple[int, int, int]:
    """The [X, Y, Z] shape the volume will have in canonical RAS (no voxel read)."""
    ornt = nib.io_orientation(self.affine)
    out = [0, 0, 0]
    for j in range(3):
      out[int(ornt[j, 0])] = self.shape[j]
    return tuple(out)


def _dcmread(pydicom, path: str, header_only: bool):
  """pydicom.dcmread without its warnings about odd headers: the CLI prints one line."""
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    return pydicom.dcmread(path, stop_before_pixels=header_only)


def _str(ds, keyword: str) -> str:
  value = ds.get(keyword, "")
  return "" if value is None else str(value).strip()


def _floats(ds, keyword: str, n: int, path: str) -> np.ndarray:
  value = ds.get(keyword)
  try:
    arr = np.asarray([float(v) for v in value], np.float64)
  except (TypeError, ValueError):
    arr = None
  if arr is None or arr.shape != (n,) or not np.all(np.isfinite(arr)):
    raise DataError(f"DICOM file {path!r} has no valid {keyword} ({n} numbers needed, got "
                    f"{value!r}); the slice cannot be placed in space")
  return arr


def check_decodable(ds, path: str) -> None:
  """Raises DataError when ``ds``'s transfer syntax is compressed and no decoder is installed."""
  pydicom = import_pydicom()
  meta = getattr(ds, "file_meta", None)
  uid = meta.get("TransferSyntaxUID") if meta is not None else None
  if uid is None:
    return  # pydicom falls back to implicit VR little endian: uncompressed.
  uid = pydicom.uid.UID(str(uid))
  if not uid.is_compressed:
    return
  try:
    from pydicom.pixels import get_decoder  # pylint: disable=g-import-not-at-top
    decoder = get_decoder(uid)
  except (ImportError, NotImplementedError, ValueError):
    raise DataError(f"DICOM file {path!r} uses the transfer syntax {uid.name} ({uid}), "
                    "which this pydicom version cannot decode") from None
  if not decoder.is_available:
    need = "; ".join(decoder.missing_dependencies) or "a pixel data plugin"
    raise DataError(f"DICOM file {path!r} is compressed ({uid.name}, {uid}) and no decoder "
                    f"is installed: install one of [{need}] (gdcm's pip name is python-gdcm)")


def _skip_reason(ds) -> str | None:
  """Why a DICOM object is not a usable CT/MR image slice, or None when it is."""
  sop = _str(ds, "SOPClassUID")
  if sop.startswith(SECONDARY_CAPTURE_PREFIX):
    return "secondary capture"
  if sop not in IMAGE_SOP_CLASSES:
    return "not a CT/MR image object"
  image_type = ds.get("ImageType") or []
  image_type = [image_type] if isinstance(image_type, str) else list(image_type)
  if "LOCALIZER" in [str(v).upper() for v in image_type]:
    return "localizer"
  if int(ds.get("NumberOfFrames", 1) or 1) != 1:
    return "multi-frame"
  return None


def _walk_files(root: str) -> list[str]:
  out = []
  for folder, dirs, names in os.walk(root):
    dirs.sort()
    out += [os.path.join(folder, n) for n in sorted(names)]
  return out


def _series_geometry(uid: str, items: list[tuple[str, Any]]):
  """Checks one series' slices; -> (files ordered along the normal, RAS affine, shape)."""
  f0, d0 = items[0]
  iop0 = _floats(d0, "ImageOrientationPatient", 6, f0)
  ps0 = _floats(d0, "PixelSpacing", 2, f0)
  size0 = (int(d0.Rows), int(d0.Columns))
  ipps = []
  for f, d in items:
    iop = _floats(d, "ImageOrientationPatient", 6, f)
    if not np.allclose(iop, iop0, atol=_ORIENTATION_TOL):
      raise DataError(f"DICOM series {uid}: {f!r} has ImageOrientationPatient "
                      f"{iop.round(5).tolist()} but {f0!r} has {iop0.round(5).tolist()}; "
                      "mixed orientations in one series")
    ps = _floats(d, "PixelSpacing", 2, f)
    if not np.allclose(ps, ps0, atol=_SPACING_TOL):
      raise DataError(f"DICOM series {uid}: {f!r} has PixelSpacing {ps.tolist()} but {f0!r} "
                      f"has {ps0.tolist()}; mixed pixel spacings in one series")
    if (int(d.Rows), int(d.Columns)) != size0:
      raise DataError(f"DICOM series {uid}: {f!r} is {int(d.Rows)}x{int(d.Columns)} pixels but "
                      f"{f0!r} is {size0[0]}x{size0[1]}; mixed image sizes in one series")
    ipps.append(_floats(d, "ImagePositionPatient", 3, f))
  row_cos, col_cos = iop0[:3], iop0[3:]
  if abs(np.linalg.norm(row_cos) - 1) > 1e-3 or abs(np.linalg.norm(col_cos) - 1) > 1e-3 \
      or abs(row_cos @ col_cos) > 1e-3:
    raise DataError(f"DICOM file {f0!r}: ImageOrientationPatient {iop0.tolist()} is not two "
                    "orthogonal unit vectors")
  row_cos, col_cos = row_cos / np.linalg.norm(row_cos), col_cos / np.linalg.norm(col_cos)
  normal = np.cross(row_cos, col_cos)
  ipps = np.asarray(ipps)
  dist = ipps @ normal
  order = np.argsort(dist, kind="stable")
  files = [items[i][0] for i in order]
  ipps, dist = ipps[order], dist[order]
  n = len(files)
  if n > 1:
    gaps = np.diff(dist)
    step = float(np.median(gaps))
    tol = max(1e-3, 0.02 * step)
    for i, g in enumerate(gaps):
      if g <= tol:
        raise DataError(f"DICOM series {uid}: {files[i]!r} and {files[i + 1]!r} are at the same "
                        f"position along the slice normal ({dist[i]:.3f} mm): duplicated slice")
    for i, g in enumerate(gaps):
      if g > 1.5 * step:
        raise DataError(f"DICOM series {uid}: {g:.3f} mm between {files[i]!r} and "
                        f"{files[i + 1]!r} for a slice spacing of {step:.3f} mm: about "
                        f"{round(g / step) - 1} slice(s) missing")
      if abs(g - step) > tol:
        raise DataError(f"DICOM series {uid}: uneven slice spacing ({g:.3f} mm between "
                        f"{files[i]!r} and {files[i + 1]!r}, {step:.3f} mm elsewhere)")
    step_vec = (ipps[-1] - ipps[0]) / (n - 1)
    off = ipps - (ipps[0] + np.arange(n)[:, None] * step_vec)
    worst = int(np.argmax(np.linalg.norm(off, axis=1)))
    if np.linalg.norm(off[worst]) > max(1e-3, 0.05 * step):
      raise DataError(f"DICOM series {uid}: ImagePositionPatient of {files[worst]!r} is "
                      f"{np.linalg.norm(off[worst]):.3f} mm off the line through the other "
                      "slices")
  else:
    thick = d0.get("SpacingBetweenSlices") or d0.get("SliceThickness") or 1.0
    step_vec = normal * float(thick)
  lps = np.eye(4)
  lps[:3, 0] = row_cos * ps0[1]  # voxel axis 0: column index, along the row direction.
  lps[:3, 1] = col_cos * ps0[0]  # voxel axis 1: row index, along the column direction.
  lps[:3, 2] = step_vec
  lps[:3, 3] = ipps[0]
  return files, LPS_TO_RAS @ lps, (size0[1], size0[0], n)


_SAFE_ID = re.compile(r"[^A-Za-z0-9._-]+")


def _subject_ids(groups: dict[str, dict]) -> dict[str, str]:
  """Series UID -> subject id: PatientID, made unique per series when a patient has several."""
  per_patient = Counter(g["patient_id"] for g in groups.values())
  ids = {}
  for uid, g in groups.items():
    pid = _SAFE_ID.sub("_", g["patient_id"]).strip("_") or "series"
    if per_patient[g["patient_id"]] > 1 or not g["patient_id"]:
      number = _SAFE_ID.sub("_", g["series_number"]).strip("_")
      pid = f"{pid}_{number}" if number else f"{pid}_{uid}"
    ids[uid] = pid
  counts = Counter(ids.values())
  return {uid: (sid if counts[sid] == 1 else f"{sid}_{uid}") for uid, sid in ids.items()}


def find_dicom_series(root: str, what: str = "data.path") -> list[SeriesInfo]:
  """Scans ``root`` (a folder tree or one file) for CT/MR image series, header-only.

  Non-DICOM files are ignored; localizers, secondary captures, multi-frame and
  non-image objects are skipped (counted in the log).  Every kept series is
  validated: one orientation, pixel spacing and image size; no duplicated or
  missing slice along the normal; a decoder for its transfer syntax.

  Returns the series sorted by subject id.  Raises DataError naming the file and
  the problem, or ``root`` when it holds no CT/MR image series.
  """
  pydicom = import_pydicom()
  root = os.path.expanduser(str(root))
  if os.path.isdir(root):
    paths = _walk_files(root)
  elif os.path.isfile(root):
    paths = [root]
  else:
    raise DataError(f"{what}={root!r} does not exist")
  skipped: Counter = Counter()
  groups: dict[str, dict] = {}
  for f in paths:
    try:
      ds = _dcmread(pydicom, f, header_only=True)
    except pydicom.errors.InvalidDicomError:  # no 'DICM' marker: not a DICOM file.
      skipped["not DICOM"] += 1
      continue
    except Exception as e:  # a DICOM file whose header is damaged: pydicom raises many types.
      raise DataError(f"cannot read the header of DICOM file {f!r} ({type(e).__name__}: {e})"
                      ) from None
    reason = _skip_reason(ds)
    if reason:
      skipped[reason] += 1
      continue
    uid = _str(ds, "SeriesInstanceUID")
    if not uid:
      raise DataError(f"DICOM file {f!r} has no SeriesInstanceUID")
    check_decodable(ds, f)
    g = groups.setdefault(uid, {
        "patient_id": _str(ds, "PatientID"), "patient_name": _str(ds, "PatientName"),
        "study_uid": _str(ds, "StudyInstanceUID"),
        "frame_of_reference_uid": _str(ds, "FrameOfReferenceUID"),
        "modality": IMAGE_SOP_CLASSES[_str(ds, "SOPClassUID")],
        "series_number": _str(ds, "SeriesNumber"),
        "description": _str(ds, "SeriesDescription"), "items": []})
    g["items"].append((f, ds))
  if skipped:
    log.info("%s: skipped %s", root, ", ".join(f"{n} {k}" for k, n in sorted(skipped.items())))
  if not groups:
    detail = ", ".join(f"{n} {k}" for k, n in sorted(skipped.items())) or "no files"
    raise DataError(f"{what}={root!r} holds no CT/MR DICOM image series ({detail})")
  ids = _subject_ids(groups)
  out = []
  for uid, g in groups.items():
    files, affine, shape = _series_geometry(uid, g["items"])
    folder = os.path.commonpath([os.path.dirname(os.path.abspath(f)) for f in files])
    out.append(SeriesInfo(
        series_uid=uid, subject_id=ids[uid], patient_id=g["patient_id"],
        patient_name=g["patient_name"], study_uid=g["study_uid"],
        frame_of_reference_uid=g["frame_of_reference_uid"], modality=g["modality"],
        series_number=g["series_number"], description=g["description"],
        files=tuple(files), path=folder, affine=affine, shape=shape))
  return sorted(out, key=lambda s: s.subject_id)


def _slice_pixels(f: str, rows: int, cols: int) -> np.ndarray:
  """One slice's stored values rescaled (slope/intercept), float64 [rows, cols]."""
  pydicom = import_pydicom()
  try:
    ds = _dcmread(pydicom, f, header_only=False)
  except Exception as e:  # pydicom raises many types for damaged files.
    raise DataError(f"cannot read DICOM file {f!r} ({type(e).__name__}: {e})") from None
  check_decodable(ds, f)
  if int(ds.get("SamplesPerPixel", 1) or 1) != 1:
    raise DataError(f"DICOM file {f!r} has {ds.SamplesPerPixel} samples per pixel; a "
                    "grayscale CT/MR image is needed")
  try:
    with warnings.catch_warnings():
      warnings.simplefilter("ignore")
      px = np.asarray(ds.pixel_array, np.float64)
  except Exception as e:  # decoders raise many types for damaged pixel data.
    raise DataError(f"cannot decode the pixel data of DICOM file {f!r} "
                    f"({type(e).__name__}: {e})") from None
  if px.shape != (rows, cols):
    raise DataError(f"DICOM file {f!r} has pixel data of shape {px.shape}, its header says "
                    f"{rows}x{cols}")
  slope = ds.get("RescaleSlope")
  intercept = ds.get("RescaleIntercept")
  slope = 1.0 if slope in (None, "") else float(slope)
  intercept = 0.0 if intercept in (None, "") else float(intercept)
  return px * slope + intercept


def load_dicom_series(series: SeriesInfo, replace_nonfinite: bool = False) -> Volume:
  """Reads a series' voxels (rescaled to HU for CT) as a canonical RAS :class:`Volume`.

  ``Volume.path`` is the series folder.  Raises DataError naming the file that
  cannot be read or decoded, and for a constant (empty) volume.
  """
  cols, rows, n = series.shape
  data = np.empty((cols, rows, n), np.float32)
  for k, f in enumerate(series.files):
    data[:, :, k] = _slice_pixels(f, rows, cols).T  # [column, row] = voxel axes (0, 1).
  img = nib.as_closest_canonical(nib.Nifti1Image(data, series.affine))
  out = np.asarray(img.dataobj, dtype=np.float32)
  out = check_finite(out, series.path, replace_nonfinite)
  lo, hi = float(out.min()), float(out.max())
  if lo == hi:
    raise DataError(f"DICOM series {series.series_uid} in {series.path!r} is empty: every "
                    f"voxel equals {lo:g}")
  affine = np.asarray(img.affine, np.float64)
  return Volume(data=np.ascontiguousarray(out), affine=affine,
                spacing=spacing_from_affine(affine), path=series.path)


def plan_dicom(cfg, match_masks: Callable[[str, list[str]], dict[str, str]]) -> dict[str, Any]:
  """The data pipeline's input plan for ``data.source='dicom'`` (headers only).

  Same keys as the NIfTI plan (``files`` holds each series' folder, used as the
  slices' ``source_file``) plus ``load`` (subject id -> Volume), ``label_keys``
  (subject id -> labels CSV key: PatientID or SeriesInstanceUID when the CSV is
  keyed by those columns) and ``subject_meta`` (subject id -> extra cache fields).
  ``match_masks(mask_path, subject_ids)`` pairs mask NIfTIs with subjects as for NIfTI.
  """
  series = find_dicom_series(cfg.path, "data.path")
  ids = [s.subject_id for s in series]
  ax = axis_index(cfg.axis)
  shapes = [s.canonical_shape() for s in series]
  ranges = [resolve_slice_range(tuple(cfg.slice_range), shape[ax], s.path)
            for s, shape in zip(series, shapes)]
  masks = match_masks(cfg.mask_path, ids) if cfg.mask_path else {}
  table, label_keys = None, {}
  if cfg.labels_csv:
    table = load_labels(cfg.labels_csv, None, [cfg.label_column] if cfg.label_column else [])
    known = set(table.ids)
    for s in series:
      if table.id_column == "PatientID":
        label_keys[s.subject_id] = s.patient_id
      elif table.id_column == "SeriesInstanceUID":
        label_keys[s.subject_id] = s.series_uid
      else:  # subject_id: a patient with several series may be listed by PatientID.
        label_keys[s.subject_id] = s.subject_id if s.subject_id in known else s.patient_id
    table.lookup([label_keys[i] for i in ids])  # Unknown keys fail before any compute.
  elif cfg.label_column:
    raise ConfigError(f"data.label_column={cfg.label_column!r} needs data.labels_csv "
                      "for source 'dicom'")
  by_id = {s.subject_id: s for s in series}
  inputs = [f for s in series for f in s.files] + [masks[i] for i in ids if i in masks]
  if cfg.labels_csv:
    inputs.append(cfg.labels_csv)
  return dict(files=[s.path for s in series], ids=ids, axis=ax, ranges=ranges, shapes=shapes,
              masks=masks, table=table, inputs=inputs, label_keys=label_keys,
              load=lambda sid: load_dicom_series(by_id[sid], cfg.replace_nonfinite),
              subject_meta={s.subject_id: {"dicom": s.metadata()} for s in series})
