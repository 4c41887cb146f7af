"""Reading NIfTI volumes into canonical RAS orientation.

Every volume is reoriented with ``nib.as_closest_canonical`` so that voxel axis 0
points to the subject's Right, axis 1 to Anterior and axis 2 to Superior (RAS+).
Slicing along 'sagittal'/'coronal'/'axial' then means the same thing for every
file, whatever orientation the scanner wrote.
"""

from __future__ import annotations

import dataclasses
import glob
import os

import nibabel as nib
import numpy as np

from jaxlatent import atomic_io
from jaxlatent.errors import DataError

NIFTI_SUFFIXES = (".nii.gz", ".nii")


@dataclasses.dataclass(frozen=True)
class Volume:
  """One 3D image in canonical RAS orientation.

  Attributes:
    data: float32 [X, Y, Z] voxel values (HU for CT), finite.
    affine: float64 [4, 4] voxel-to-world (RAS mm) affine of the canonical image.
    spacing: float64 (3,) voxel size in mm along X, Y, Z.
    path: the file it was read from.
  """

  data: np.ndarray
  affine: np.ndarray
  spacing: np.ndarray
  path: str

  @property
  def shape(self) -> tuple[int, int, int]:
    return tuple(self.data.shape)


def is_nifti_path(path: str) -> bool:
  return path.lower().endswith(NIFTI_SUFFIXES)


def subject_id_from_path(path: str) -> str:
  """File name without folder and ``.nii``/``.nii.gz``: ``a/sub-01.nii.gz`` -> ``sub-01``."""
  name = os.path.basename(path)
  for suffix in NIFTI_SUFFIXES:
    if name.lower().endswith(suffix):
      return name[: -len(suffix)]
  return name


def find_nifti_files(path: str, what: str = "data.path") -> list[str]:
  """Expands a file, folder (its ``*.nii``/``*.nii.gz``) or glob into sorted file paths.

  Raises DataError when the path does not exist or nothing matches.
  """
  path = os.path.expanduser(str(path))
  if any(ch in path for ch in "*?["):
    files = sorted(p for p in glob.glob(path, recursive=True) if os.path.isfile(p))
    if not files:
      raise DataError(f"{what}: no files match the glob {path!r}")
    return files
  if os.path.isdir(path):
    files = sorted(os.path.join(path, f) for f in os.listdir(path)
                   if is_nifti_path(f) and os.path.isfile(os.path.join(path, f)))
    if not files:
      raise DataError(f"{what}: folder {path!r} holds no .nii or .nii.gz files")
    return files
  if os.path.isfile(path):
    return [path]
  raise DataError(f"{what}: {path!r} does not exist")


def _load_image(path: str):
  if not os.path.isfile(path):
    raise DataError(f"NIfTI file {path!r} does not exist")
  try:
    img = nib.load(path)
  except Exception as e:  # nibabel raises many types for garbage input.
    raise DataError(f"{path!r} is not a readable NIfTI file ({type(e).__name__}: {e})") from None
  if not isinstance(img, (nib.Nifti1Pair, nib.Nifti2Pair)):
    raise DataError(f"{path!r} is a {type(img).__name__}, not a NIfTI image")
  return img


def _checked_header(path: str, volume_index: int):
  """Loads the header (not the voxels) and checks dimensionality; -> (img, 3D shape)."""
  img = _load_image(path)
  shape = tuple(int(d) for d in img.shape)
  # Trailing singleton dimensions (e.g. [X, Y, Z, 1]) are 3D for our purposes.
  while len(shape) > 3 and shape[-1] == 1:
    shape = shape[:-1]
  if len(shape) < 3:
    raise DataError(f"{path!r} is a {len(shape)}D image of shape {tuple(img.shape)}; "
                    "a 3D volume is needed")
  if len(shape) == 3:
    if volume_index > 0:
      raise DataError(f"{path!r} is 3D (shape {shape}) but data.volume_index="
                      f"{volume_index} asks for volume {volume_index} of a 4D file")
  elif len(shape) == 4:
    if volume_index < 0:
      raise DataError(f"{path!r} is 4D (shape {shape}, {shape[3]} volumes): set "
                      f"data.volume_index to the volume to use (0 .. {shape[3] - 1})")
    if volume_index >= shape[3]:
      raise DataError(f"{path!r} has {shape[3]} volumes; data.volume_index="
                      f"{volume_index} is out of range")
  else:
    raise DataError(f"{path!r} is a {len(shape)}D image of shape {tuple(img.shape)}; "
                    "only 3D volumes and 4D files (with data.volume_index) are supported")
  return img, shape


def canonical_shape(path: str, volume_index: int = -1) -> tuple[int, int, int]:
  """The [X, Y, Z] shape the volume will have in RAS, from the header alone.

  Runs every header check of :func:`load_volume` without reading voxels, so a
  whole file list can be validated before any compute.
  """
  img, shape = _checked_header(path, volume_index)
  ornt = nib.io_orientation(img.affine)  # row j: (RAS axis of voxel axis j, flip).
  out = [0, 0, 0]
  for j in range(3):
    out[int(ornt[j, 0])] = shape[j]
  return tuple(out)


def _spatial_image(path: str, volume_index: int):
  """Returns a 3D nibabel image (one volume picked from 4D), not yet reoriented."""
  img, shape = _checked_header(path, volume_index)
  try:
    if len(shape) == 3:
      data = np.asarray(img.dataobj, dtype=np.float32).reshape(shape)
    else:
      data = np.asarray(img.dataobj[:, :, :, volume_index], dtype=np.float32).reshape(shape[:3])
  except Exception as e:  # truncated .gz, short file, bad dtype...
    raise DataError(f"cannot read the voxels of {path!r} ({type(e).__name__}: {e}); "
                    "the file may be truncated or corrupt") from None
  return nib.Nifti1Image(data, img.affine)


def check_finite(data: np.ndarray, path: str, replace_nonfinite: bool = False) -> np.ndarray:
  """Raises DataError on NaN/Inf voxels, or replaces them by the finite minimum."""
  bad = ~np.isfinite(data)
  n_bad = int(bad.sum())
  if n_bad == 0:
    return data
  if not replace_nonfinite:
    raise DataError(f"{path!r} has {n_bad} NaN/Inf voxel(s) of {data.size}; fix the file or "
                    "set data.replace_nonfinite=True to replace them by the volume minimum")
  if n_bad == data.size:
    raise DataError(f"{path!r}: all {data.size} voxels are NaN/Inf")
  data = data.copy()
  data[bad] = data[~bad].min()
  return data


def spacing_from_affine(affine: np.ndarray) -> np.ndarray:
  """Voxel size in mm along each voxel axis: the column norms of the 3x3 part."""
  return np.sqrt((np.asarray(affine, np.float64)[:3, :3] ** 2).sum(axis=0))


def load_volume(path: str, volume_index: int = -1, replace_nonfinite: bool = False) -> Volume:
  """Loads a NIfTI 3D volume (or volume ``volume_index`` of a 4D file) in canonical RAS.

  Raises DataError for a missing or non-NIfTI file, a 2D or 5D+ image, a 4D image
  without a valid ``volume_index``, NaN/Inf voxels (unless ``replace_nonfinite``)
  and an empty (constant) volume.
  """
  img = nib.as_closest_canonical(_spatial_image(path, volume_index))
  data = np.asarray(img.dataobj, dtype=np.float32)  # [X, Y, Z] in RAS.
  data = check_finite(data, path, replace_nonfinite)
  lo, hi = float(data.min()), float(data.max())
  if lo == hi:
    raise DataError(f"{path!r} is empty: every voxel equals {lo:g}")
  affine = np.asarray(img.affine, np.float64)
  return Volume(data=np.ascontiguousarray(data), affine=affine,
                spacing=spacing_from_affine(affine), path=str(path))


def load_mask(path: str, volume: Volume) -> np.ndarray:
  """Loads a foreground mask NIfTI for ``volume``: bool [X, Y, Z] in canonical RAS.

  Voxels > 0 are foreground.  Raises DataError when the mask's shape differs from
  the volume's or it has no foreground voxel.
  """
  img = nib.as_closest_canonical(_spatial_image(path, -1))
  data = np.asarray(img.dataobj, dtype=np.float32)
  if data.shape != volume.shape:
    raise DataError(f"mask {path!r} has shape {data.shape} (canonical RAS) but volume "
                    f"{volume.path!r} has shape {volume.shape}")
  if not np.allclose(img.affine, volume.affine, atol=1e-2):
    raise DataError(f"mask {path!r} and volume {volume.path!r} have different affines; "
                    "the mask is not in the volume's voxel grid")
  mask = np.nan_to_num(data, nan=0.0) > 0
  if not mask.any():
    raise DataError(f"mask {path!r} is all zero: it marks no foreground voxel")
  return mask


def save_volume(data: np.ndarray, affine: np.ndarray, path: str) -> None:
  """Writes ``data`` [X, Y, Z(, T)] with ``affine`` as NIfTI (e.g. an analysis map)."""
  with atomic_io.atomic_path(path) as tmp:
    nib.save(nib.Nifti1Image(np.asarray(data), np.asarray(affine, np.float64)), tmp)
