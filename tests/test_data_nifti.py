"""NIfTI loading, canonical orientation, slicing and the file-level errors."""

from __future__ import annotations

import os

import nibabel as nib
import numpy as np
import pytest

from jaxlatent import data
from jaxlatent.errors import ConfigError, DataError

NIB_DATA = os.path.join(os.path.dirname(nib.__file__), "tests", "data")


def _write(path, arr, affine=None):
  nib.save(nib.Nifti1Image(np.asarray(arr), np.eye(4) if affine is None else affine),
           str(path))
  return str(path)


def _ramp(shape=(6, 7, 5)):
  return np.arange(np.prod(shape), dtype=np.float32).reshape(shape) + 1.0


def test_load_volume_ras_identity(tmp_path):
  arr = _ramp()
  aff = np.diag([2.0, 3.0, 4.0, 1.0])
  vol = data.load_volume(_write(tmp_path / "a.nii.gz", arr, aff))
  assert vol.data.dtype == np.float32 and vol.data.shape == (6, 7, 5)
  np.testing.assert_array_equal(vol.data, arr)
  np.testing.assert_allclose(vol.spacing, [2, 3, 4])
  np.testing.assert_allclose(vol.affine, aff)
  with pytest.raises(Exception):
    vol.path = "x"  # frozen dataclass.


def test_lps_flipped_file_gives_identical_slices(tmp_path):
  """The same anatomy stored LPS (x, y flipped) must slice identically after RAS."""
  rng = np.random.default_rng(0)
  arr = rng.normal(size=(6, 7, 5)).astype(np.float32)
  ras_aff = np.diag([2.0, 2.0, 3.0, 1.0])
  ras_aff[:3, 3] = [-5.0, -6.0, -7.0]
  # Voxel i' = X-1-i along x and y: world = ras_aff @ flip.
  flip = np.diag([-1.0, -1.0, 1.0, 1.0])
  flip[:2, 3] = [5, 6]  # X-1, Y-1.
  lps_aff = ras_aff @ flip
  a = data.load_volume(_write(tmp_path / "ras.nii", arr, ras_aff))
  b = data.load_volume(_write(tmp_path / "lps.nii", arr[::-1, ::-1, :].copy(), lps_aff))
  assert nib.aff2axcodes(lps_aff) == ("L", "P", "S")
  np.testing.assert_array_equal(a.data, b.data)
  np.testing.assert_allclose(a.affine, b.affine, atol=1e-6)
  for axis in range(3):
    np.testing.assert_array_equal(data.extract_slices(a.data, axis, [1, 2]),
                                  data.extract_slices(b.data, axis, [1, 2]))


def test_slice_display_orientation():
  """Axial: anterior up, subject right on image left (radiological)."""
  vol = np.zeros((4, 5, 3), np.float32)
  vol[3, 4, 1] = 1.0  # most right (x max), most anterior (y max).
  vol[0, 0, 2] = 2.0  # most left, most posterior, most superior.
  ax = data.extract_slices(vol, 2, [1])[0]  # [H=Y, W=X]
  assert ax.shape == (5, 4) and ax[0, 0] == 1.0
  cor = data.extract_slices(vol, 1, [0])[0]  # [H=Z, W=X]
  assert cor.shape == (3, 4) and cor[0, 3] == 2.0  # superior up, left on the right.
  sag = data.extract_slices(vol, 0, [0])[0]  # [H=Z, W=Y]
  assert sag.shape == (3, 5) and sag[0, 4] == 2.0  # superior up, posterior on the right.
  assert data.slice_pixel_spacing([1.0, 2.0, 3.0], 2) == (2.0, 1.0)


def test_slice_range_resolution():
  assert data.resolve_slice_range((0.0, 1.0), 25) == (0, 25)
  assert data.resolve_slice_range((0.2, 0.8), 10) == (2, 8)
  assert data.resolve_slice_range((3, 7), 10) == (3, 7)
  with pytest.raises(DataError, match=r"vol\.nii.*\(3, 40\).*extent of 10"):
    data.resolve_slice_range((3, 40), 10, "vol.nii")
  with pytest.raises(DataError, match="out of bounds"):
    data.resolve_slice_range((-1, 5), 10, "vol.nii")
  with pytest.raises(ConfigError, match="mixes"):
    data.resolve_slice_range((0, 0.5), 10)
  np.testing.assert_allclose(data.slice_positions([0, 5, 10], 11), [0.0, 0.5, 1.0])


def test_nibabel_anatomical_and_4d():
  vol = data.load_volume(os.path.join(NIB_DATA, "anatomical.nii"))
  img = nib.load(os.path.join(NIB_DATA, "anatomical.nii"))  # LAS on disk.
  np.testing.assert_allclose(vol.data, np.asarray(img.dataobj, np.float32)[::-1])
  assert nib.aff2axcodes(vol.affine) == ("R", "A", "S")
  np.testing.assert_allclose(vol.spacing, [2, 2, 2])
  path4d = os.path.join(NIB_DATA, "example4d.nii.gz")
  with pytest.raises(DataError, match=r"example4d.*4D.*volume_index"):
    data.load_volume(path4d)
  with pytest.raises(DataError, match="out of range"):
    data.load_volume(path4d, volume_index=2)
  v1 = data.load_volume(path4d, volume_index=1)
  ref = nib.as_closest_canonical(nib.load(path4d)).get_fdata()[..., 1]
  np.testing.assert_allclose(v1.data, ref, rtol=1e-6)
  assert data.canonical_shape(path4d, 1) == v1.shape
  np.testing.assert_allclose(v1.spacing, [2.0, 2.0, 2.2], atol=1e-4)


def test_file_errors(tmp_path):
  with pytest.raises(DataError, match=r"nope\.nii.*does not exist"):
    data.load_volume(str(tmp_path / "nope.nii"))
  fake = tmp_path / "fake.nii"
  fake.write_text("subject,age\nA,3\n")
  with pytest.raises(DataError, match=r"fake\.nii.*not a readable NIfTI"):
    data.load_volume(str(fake))
  with pytest.raises(DataError, match=r"flat\.nii.*2D image.*3D volume is needed"):
    data.load_volume(_write(tmp_path / "flat.nii", np.ones((5, 6), np.float32)))
  with pytest.raises(DataError, match=r"zeros\.nii.*empty"):
    data.load_volume(_write(tmp_path / "zeros.nii", np.zeros((4, 4, 4), np.float32)))
  with pytest.raises(DataError, match=r"const\.nii.*empty.*7"):
    data.load_volume(_write(tmp_path / "const.nii", np.full((4, 4, 4), 7, np.float32)))
  # Truncated gzip: header readable, voxels not.
  good = _write(tmp_path / "good.nii.gz", _ramp((20, 20, 20)))
  blob = open(good, "rb").read()
  with open(tmp_path / "cut.nii.gz", "wb") as f:
    f.write(blob[: len(blob) // 2])
  with pytest.raises(DataError, match=r"cut\.nii\.gz"):
    data.load_volume(str(tmp_path / "cut.nii.gz"))


def test_nonfinite_voxels(tmp_path):
  arr = _ramp()
  arr[0, 0, 0] = np.nan
  arr[1, 2, 3] = np.inf
  path = _write(tmp_path / "nan.nii", arr)
  with pytest.raises(DataError, match=r"nan\.nii.*2 NaN/Inf"):
    data.load_volume(path)
  vol = data.load_volume(path, replace_nonfinite=True)
  finite_min = np.nanmin(np.where(np.isfinite(arr), arr, np.nan))
  assert vol.data[0, 0, 0] == finite_min and vol.data[1, 2, 3] == finite_min
  assert np.isfinite(vol.data).all()


def test_masks_from_file(tmp_path):
  vol = data.load_volume(_write(tmp_path / "v.nii", _ramp()))
  m = np.zeros((6, 7, 5), np.uint8)
  m[2:4, 2:5, 1:4] = 1
  np.testing.assert_array_equal(data.load_mask(_write(tmp_path / "m.nii", m), vol), m > 0)
  with pytest.raises(DataError, match=r"empty_mask\.nii.*all zero"):
    data.load_mask(_write(tmp_path / "empty_mask.nii", np.zeros_like(m)), vol)
  with pytest.raises(DataError, match=r"small\.nii.*shape"):
    data.load_mask(_write(tmp_path / "small.nii", m[:4]), vol)


def test_find_files_and_subject_ids(tmp_path):
  assert data.subject_id_from_path("/x/sub-01.nii.gz") == "sub-01"
  assert data.subject_id_from_path("b.nii") == "b"
  _write(tmp_path / "b.nii", _ramp())
  _write(tmp_path / "a.nii.gz", _ramp())
  (tmp_path / "notes.txt").write_text("x")
  files = data.find_nifti_files(str(tmp_path))
  assert [os.path.basename(f) for f in files] == ["a.nii.gz", "b.nii"]
  assert data.find_nifti_files(str(tmp_path / "*.nii")) == [str(tmp_path / "b.nii")]
  with pytest.raises(DataError, match="no files match"):
    data.find_nifti_files(str(tmp_path / "*.mgz"))
  with pytest.raises(DataError, match="does not exist"):
    data.find_nifti_files(str(tmp_path / "missing_dir"))
