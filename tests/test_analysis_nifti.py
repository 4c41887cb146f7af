"""NIfTI output of component / subtraction maps: affines and layout."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from jaxlatent.analysis import slice_grid_affine, write_component_volumes, write_subject_maps
from jaxlatent.data.resize import resize_masks, square_geometry
from jaxlatent.data.slicing import extract_slices, slice_pixel_spacing
from jaxlatent.errors import DataError


def _affine(spacing=(1.0, 2.0, 1.5), angle=0.3, shift=(-10.0, 5.0, 20.0)):
  c, s = np.cos(angle), np.sin(angle)
  rot = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
  a = np.eye(4)
  a[:3, :3] = rot @ np.diag(spacing)
  a[:3, 3] = shift
  return a


def test_written_files_carry_the_affine_and_layout(tmp_path):
  rng = np.random.default_rng(0)
  comp = rng.normal(size=(3, 2, 8, 8, 1)).astype(np.float32)  # [S, K, H, W, 1]
  sub = rng.normal(size=(3, 4, 8, 8)).astype(np.float32)  # [S, T, H, W]
  aff = _affine()
  paths = write_component_volumes(str(tmp_path / "out"), "sub-001", comp, aff,
                                  subtraction_maps=sub, tag="hc2ms")
  img = nib.load(paths["components"])
  np.testing.assert_allclose(img.affine, aff, atol=1e-5)
  np.testing.assert_allclose(img.get_sform(), aff, atol=1e-5)
  np.testing.assert_allclose(img.get_qform(), aff, atol=1e-4)
  data = np.asarray(img.dataobj)
  assert data.shape == (8, 8, 3, 2)  # [H, W, slices, components]
  np.testing.assert_array_equal(data[:, :, 1, 0], comp[1, 0, ..., 0])
  sub_img = nib.load(paths["subtraction"])
  np.testing.assert_allclose(sub_img.affine, aff, atol=1e-5)
  np.testing.assert_array_equal(np.asarray(sub_img.dataobj)[:, :, 2, 3], sub[2, 3])
  assert paths["components"].endswith("sub-001_hc2ms_components.nii.gz")
  with pytest.raises(DataError, match="components"):
    write_component_volumes(str(tmp_path), "s", comp[0, 0], aff)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_slice_grid_affine_native_grid_is_exact(axis):
  """Without resizing, every stored voxel lands on the source voxel it came from."""
  rng = np.random.default_rng(axis)
  vol = rng.normal(size=(7, 9, 5))
  aff = _affine()
  idx = np.array([1, 3])  # every other slice
  slices = extract_slices(vol, axis, idx)  # [2, H, W]
  data = slices.transpose(1, 2, 0)  # [H, W, k]
  out_aff = slice_grid_affine(aff, vol.shape, axis, idx)
  r, c, k = np.meshgrid(*[np.arange(n) for n in data.shape], indexing="ij")
  vox = np.stack([r, c, k, np.ones_like(r)], -1).reshape(-1, 4).T
  src = (np.linalg.inv(aff) @ out_aff @ vox)[:3]
  np.testing.assert_allclose(src, np.rint(src), atol=1e-9)
  src = np.rint(src).astype(int)
  np.testing.assert_array_equal(vol[src[0], src[1], src[2]], data.reshape(-1))


def test_slice_grid_affine_through_the_square_resize():
  """Pipeline geometry (anisotropic, padded, resized): nearest source voxel of every
  content pixel is the voxel ``resize_masks`` sampled."""
  rng = np.random.default_rng(3)
  shape, spacing, axis, size = (12, 8, 6), (1.0, 2.0, 1.5), 1, 16
  mask = rng.random(shape) < 0.5
  aff = _affine(spacing)
  idx = np.array([2, 3, 4, 5])
  slices = extract_slices(mask, axis, idx)  # [4, H=6 (z), W=12 (x)]
  geom = square_geometry(slices.shape[1:], slice_pixel_spacing(spacing, axis), size)
  assert geom.offset != (0, 0)  # there is padding to account for
  resized = resize_masks(slices, geom)  # [4, 16, 16]
  out_aff = slice_grid_affine(aff, shape, axis, idx, geom.to_dict())
  top, left = geom.offset
  ch, cw = geom.content_shape
  r, c, k = np.meshgrid(np.arange(top, top + ch), np.arange(left, left + cw), np.arange(4),
                        indexing="ij")
  vox = np.stack([r, c, k, np.ones_like(r)], -1).reshape(-1, 4).T
  src = np.rint((np.linalg.inv(aff) @ out_aff @ vox)[:3]).astype(int)
  assert src.min() >= 0 and np.all(src.max(1) < np.array(shape))
  np.testing.assert_array_equal(mask[src[0], src[1], src[2]],
                                resized[k.reshape(-1), r.reshape(-1), c.reshape(-1)])
  with pytest.raises(DataError, match="evenly"):
    slice_grid_affine(aff, shape, axis, [1, 2, 4], geom)


def test_write_subject_maps_fills_skipped_slices(tmp_path):
  shape, spacing, size = (10, 10, 12), (1.0, 1.0, 2.0), 8
  aff = _affine(spacing)
  geom = square_geometry((10, 10), slice_pixel_spacing(spacing, 2), size)
  info = {"affine": aff.tolist(), "shape": list(shape), "axis": "axial",
          "geometry": geom.to_dict()}
  maps = np.arange(3 * 2 * size * size, dtype=np.float32).reshape(3, 2, size, size) + 1
  paths = write_subject_maps(str(tmp_path), "sub-002", info, [8, 2, 4], maps)
  img = nib.load(paths["components"])
  data = np.asarray(img.dataobj)
  assert data.shape == (size, size, 4, 2)  # slices 2, 4, 6 (skipped: zeros), 8
  np.testing.assert_array_equal(data[:, :, 0, 1], maps[1, 1])
  np.testing.assert_array_equal(data[:, :, 3, 0], maps[0, 0])
  assert np.all(data[:, :, 2] == 0)
  np.testing.assert_allclose(img.affine, slice_grid_affine(aff, shape, 2, [2, 4, 6, 8], geom),
                             atol=1e-5)
  # Phantom subjects have no affine: the identity is stored.
  ph = write_subject_maps(str(tmp_path / "ph"), "sub-003", {"affine": None}, [0, 1], maps[:2])
  np.testing.assert_allclose(nib.load(ph["components"]).affine, np.eye(4))
