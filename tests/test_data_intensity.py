"""Intensity normalisation, automatic masks and aspect-preserving square resizing."""

from __future__ import annotations

import numpy as np
import pytest

from jaxlatent import data
from jaxlatent.errors import DataError


def test_ct_window_matches_numpy_reference():
  hu = np.random.default_rng(0).uniform(-1500, 2500, size=(4, 9, 9)).astype(np.float32)
  out = data.window_ct(hu)  # default (-1000, 2000).
  ref = np.empty_like(hu)
  for i, v in np.ndenumerate(hu):  # the slow, obvious reference.
    v = min(max(float(v), -1000.0), 2000.0)
    ref[i] = (v + 1000.0) / 3000.0 * 2.0 - 1.0
  assert out.dtype == np.float32 and out.shape == hu.shape
  np.testing.assert_allclose(out, ref, atol=1e-6)
  np.testing.assert_allclose(data.window_ct(np.array([-1000.0, 500.0, 2000.0])), [-1, 0, 1])
  np.testing.assert_allclose(data.window_ct(np.array([0.0, 40.0, 80.0]), (0, 80)), [-1, 0, 1])


def test_mr_normalisation_matches_numpy_reference():
  rng = np.random.default_rng(1)
  vol = np.zeros((12, 12, 6), np.float32)
  vol[2:10, 2:10] = rng.gamma(3.0, 100.0, size=(8, 8, 6))
  vol[5, 5, 3] = 1e5  # an outlier the percentiles must clip.
  out = data.normalize_mr(vol)  # foreground = nonzero voxels.
  fg = vol[vol != 0]
  lo, hi = np.percentile(fg.astype(np.float64), 0.5), np.percentile(fg.astype(np.float64), 99.5)
  ref = 2.0 * (np.clip(vol, lo, hi) - lo) / (hi - lo) - 1.0
  np.testing.assert_allclose(out, ref, atol=1e-5)
  assert out.min() == -1.0 and out.max() == 1.0 and out[0, 0, 0] == -1.0
  # An explicit mask changes the voxels the percentiles are taken over.
  mask = np.zeros(vol.shape, bool)
  mask[2:6, 2:10] = True
  lo2, hi2 = np.percentile(vol[mask].astype(np.float64), [2.0, 98.0])
  np.testing.assert_allclose(
      data.normalize_mr(vol, (2.0, 98.0), mask),
      2.0 * (np.clip(vol, lo2, hi2) - lo2) / (hi2 - lo2) - 1.0, atol=1e-5)
  with pytest.raises(DataError, match=r"flat\.nii.*constant"):
    data.normalize_mr(np.where(vol != 0, 5.0, 0.0), path="flat.nii")


def _disc_with_hole_and_speck(n=40):
  yy, xx = np.mgrid[:n, :n]
  r = np.hypot(yy - 20, xx - 18)
  img = np.where(r < 12, 100.0, 0.0)
  img[np.hypot(yy - 20, xx - 18) < 4] = 0.0  # a hole inside the body.
  img[2:4, 35:37] = 100.0  # a separate speck.
  return img, r


def test_auto_mask_keeps_largest_component_and_fills_holes():
  img, r = _disc_with_hole_and_speck()
  mask = data.auto_mask(img)  # Otsu threshold on the 2D image.
  np.testing.assert_array_equal(mask, r < 12)
  assert not mask[2:4, 35:37].any() and mask[20, 18]
  # 3D: stack the slices; the hole is open in 3D at the ends, closed per slice.
  vol = np.stack([img] * 5, axis=-1)
  mask3 = data.auto_mask(vol, threshold=50.0, axis=2)
  np.testing.assert_array_equal(mask3, np.stack([r < 12] * 5, axis=-1))
  t = data.otsu_threshold(img)
  assert 0.0 < t < 100.0
  with pytest.raises(DataError, match="empty"):
    data.auto_mask(img, threshold=1000.0, path="v.nii")


def test_ct_auto_mask_threshold_keeps_lungs():
  hu = np.full((30, 30), -1000.0)
  yy, xx = np.mgrid[:30, :30]
  body = np.hypot(yy - 15, xx - 15) < 12
  hu[body] = 40.0
  hu[np.hypot(yy - 15, xx - 10) < 4] = -850.0  # lung: air-like, inside the body.
  np.testing.assert_array_equal(data.auto_mask_for_modality(hu, "ct"), body)


def test_square_geometry_respects_physical_aspect():
  # 20 rows x 40 cols at (2 mm, 0.5 mm): 40 mm x 20 mm -> tall content.
  g = data.square_geometry((20, 40), (2.0, 0.5), 32)
  assert g.content_shape == (32, 16) and g.offset == (0, 8)
  g = data.square_geometry((10, 10), (1.0, 1.0), 16)
  assert g.content_shape == (16, 16) and g.offset == (0, 0)


def test_resize_images_and_masks_pad_and_align():
  img = np.full((2, 20, 40), 0.5, np.float32)
  msk = np.ones((2, 20, 40), bool)
  g = data.square_geometry((20, 40), (1.0, 1.0), 16)  # 20 x 40 mm -> 8 x 16 content.
  out = data.resize_images(img, g)
  m = data.resize_masks(msk, g)
  assert out.shape == (2, 16, 16) and out.dtype == np.float32
  assert m.shape == (2, 16, 16) and m.dtype == bool
  np.testing.assert_allclose(out[:, 4:12], 0.5, atol=1e-6)
  np.testing.assert_array_equal(out[:, :4], -1.0)
  np.testing.assert_array_equal(out[:, 12:], -1.0)
  np.testing.assert_array_equal(m, out > -1.0)
  # Nearest-neighbour on a 2x downsample picks one pixel of each 2x2 block.
  checker = (np.add.outer(np.arange(20), np.arange(40)) // 2 % 2).astype(bool)[None]
  g2 = data.square_geometry((20, 40), (1.0, 1.0), 20)
  assert g2.content_shape == (10, 20) and g2.offset == (5, 0)
  m2 = data.resize_masks(checker, g2)[0]
  np.testing.assert_array_equal(m2[5:15], checker[0, 1::2, 1::2])
  assert not m2[:5].any() and not m2[15:].any()
  # Linear resize of a ramp stays a ramp within [-1, 1].
  ramp = np.tile(np.linspace(-1, 1, 40, dtype=np.float32), (1, 20, 1))
  r = data.resize_images(ramp, g)[0, 8]
  assert np.all(np.diff(r) > 0) and r.min() >= -1 and r.max() <= 1
