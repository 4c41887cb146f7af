"""load_dataset end to end: config checks, NIfTI and phantom sources, the cache."""

from __future__ import annotations

import json
import logging
import os
import sys
import types

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


def _ct_volume(seed, shape=(20, 16, 8)):
  """A CT-like ellipse body (soft tissue) with an air 'lung' in air, in HU."""
  rng = np.random.default_rng(seed)
  x, y = np.mgrid[:shape[0], :shape[1]]
  body = ((x - 10) / 8.0) ** 2 + ((y - 8) / 6.0) ** 2 < 1
  vol = np.full(shape, -1000.0, np.float32)
  vol[body] = 40.0
  vol[(x - 7) ** 2 + (y - 8) ** 2 < 4] = -800.0
  vol += rng.normal(0, 5, size=shape).astype(np.float32)
  vol[..., 0] = -1000.0  # an empty slice for skip_empty.
  return vol


@pytest.fixture
def ct_dir(tmp_path):
  d = tmp_path / "ct"
  d.mkdir()
  aff = np.diag([1.0, 2.0, 3.0, 1.0])  # anisotropic voxels.
  for i, sid in enumerate(["p1", "p2", "p3"]):
    _write(d / f"{sid}.nii.gz", _ct_volume(i), aff)
  return d


def _cfg(path, **kw):
  cfg = data.default_data_config()
  cfg.source, cfg.path, cfg.modality = "nifti", str(path), "ct"
  for k, v in kw.items():
    cfg[k] = v
  return cfg


def test_default_config_fields():
  cfg = data.default_data_config()
  assert set(cfg.keys()) == {
      "source", "path", "labels_csv", "label_column", "mask_path", "modality", "ct_window",
      "mr_percentiles", "axis", "slice_range", "skip_empty", "empty_fraction",
      "replace_nonfinite", "volume_index", "num_images", "seed", "cache_dir"}
  assert tuple(cfg.ct_window) == (-1000.0, 2000.0) and tuple(cfg.mr_percentiles) == (0.5, 99.5)
  data.validate_data_config(cfg, 64)


def test_nifti_dataset_and_cache_round_trip(ct_dir, tmp_path, caplog):
  labels = tmp_path / "labels.csv"
  labels.write_text("subject_id,group,age\np1,HC,30\np2,MS,40\np3,MS,50\n")
  cfg = _cfg(ct_dir, labels_csv=str(labels), label_column="group")
  cache = str(tmp_path / "cache")
  ds = data.load_dataset(cfg, 16, cache)
  # 3 volumes x 8 axial slices, slice 0 of each is empty and skipped.
  assert len(ds) == 21
  assert ds.images.shape == (21, 16, 16, 1) and ds.images.dtype == np.float32
  assert isinstance(ds.images, np.memmap) and not ds.images.flags.writeable
  assert ds.images.min() >= -1.0 and ds.images.max() <= 1.0
  assert ds.masks.shape == (21, 16, 16)
  np.testing.assert_array_equal(ds.slice_index[:7], np.arange(1, 8))
  np.testing.assert_allclose(ds.slice_position[:7], np.arange(1, 8) / 7.0, rtol=1e-6)
  np.testing.assert_array_equal(ds.subject_id, np.repeat(["p1", "p2", "p3"], 7))
  assert ds.source_file[0] == os.path.join(str(ct_dir), "p1.nii.gz")
  np.testing.assert_array_equal(ds.labels["age"], np.repeat([30.0, 40.0, 50.0], 7))
  ids, classes = ds.label_ids()
  assert classes == ["HC", "MS"] and ids.tolist() == [0] * 7 + [1] * 14
  sub = ds.subjects["p2"]
  np.testing.assert_allclose(sub["affine"], np.diag([1.0, 2.0, 3.0, 1.0]))
  assert sub["spacing"] == [1.0, 2.0, 3.0] and sub["shape"] == [20, 16, 8]
  assert sub["axis"] == "axial" and sub["source_file"].endswith("p2.nii.gz")
  # Physical aspect: X = 20 mm (columns) x Y = 32 mm (rows) -> content 16 x 10.
  assert sub["geometry"]["content_shape"] == [16, 10]
  assert ds.factors == {}

  # Pixel-level check of one slice against a straightforward reference.
  vol = nib.load(str(ct_dir / "p2.nii.gz")).get_fdata().astype(np.float32)
  ref2d = np.clip(vol[:, :, 4], -1000, 2000)
  ref2d = (2 * (ref2d + 1000) / 3000 - 1)[::-1, ::-1].T  # anterior up, right on the left.
  import jax
  ref = jax.image.resize(ref2d, (16, 10), "linear", antialias=True)
  row = int(np.flatnonzero((ds.subject_id == "p2") & (ds.slice_index == 4))[0])
  np.testing.assert_allclose(ds.images[row, :, 3:13, 0], np.clip(ref, -1, 1), atol=1e-5)
  np.testing.assert_array_equal(ds.images[row, :, :3], -1.0)
  np.testing.assert_array_equal(ds.masks[:, :, :3], 0)

  # Second load re-uses the cache (logged, files untouched) and returns equal data.
  mtime = os.stat(os.path.join(cache, "images.npy")).st_mtime_ns
  with caplog.at_level(logging.INFO, logger="jaxlatent.data"):
    ds2 = data.load_dataset(cfg, 16, cache)
  assert "re-using the preprocessed cache" in caplog.text
  assert os.stat(os.path.join(cache, "images.npy")).st_mtime_ns == mtime
  np.testing.assert_array_equal(ds2.images, ds.images)
  np.testing.assert_array_equal(ds2.masks, ds.masks)
  np.testing.assert_array_equal(ds2.labels["group"], ds.labels["group"])
  assert ds2.subjects == ds.subjects
  assert not any(n.startswith(("images.npy.tmp", "masks.npy.tmp")) for n in os.listdir(cache))

  # Changed settings rebuild.
  caplog.clear()
  with caplog.at_level(logging.INFO, logger="jaxlatent.data"):
    ds3 = data.load_dataset(_cfg(ct_dir, ct_window=(-200.0, 200.0), skip_empty=False), 16,
                            cache)
  assert "building" in caplog.text and len(ds3) == 24
  assert not np.array_equal(np.asarray(ds3.images[1]), np.asarray(ds.images[0]))


def test_corrupt_cache_is_rebuilt(ct_dir, tmp_path, caplog):
  cfg = _cfg(ct_dir)
  cache = str(tmp_path / "cache")
  ref = np.array(data.load_dataset(cfg, 16, cache).images)
  img_path = os.path.join(cache, "images.npy")
  with open(img_path, "r+b") as f:  # truncate: an interrupted copy.
    f.truncate(os.path.getsize(img_path) - 100)
  with caplog.at_level(logging.WARNING, logger="jaxlatent.data"):
    ds = data.load_dataset(cfg, 16, cache)
  assert "truncated" in caplog.text
  np.testing.assert_array_equal(ds.images, ref)
  with pytest.raises(DataError, match="unusable: no meta.json"):
    os.remove(os.path.join(cache, "meta.json"))  # an interrupted build.
    data.open_cache(cache)
  np.testing.assert_array_equal(data.load_dataset(cfg, 16, cache).images, ref)
  # meta.json that disagrees with the arrays.
  meta_path = os.path.join(cache, "meta.json")
  meta = json.load(open(meta_path))
  meta["num_slices"] += 1
  json.dump(meta, open(meta_path, "w"))
  with pytest.raises(DataError, match="images.npy"):
    data.open_cache(cache)
  np.testing.assert_array_equal(data.load_dataset(cfg, 16, cache).images, ref)
  # Touching an input changes the fingerprint.
  os.utime(ct_dir / "p1.nii.gz", ns=(1, 1))
  caplog.clear()
  with caplog.at_level(logging.INFO, logger="jaxlatent.data"):
    data.load_dataset(cfg, 16, cache)
  assert "fingerprint differs" in caplog.text


def test_interrupted_build_leaves_no_complete_cache(ct_dir, tmp_path):
  bad = ct_dir / "p4.nii.gz"
  arr = _ct_volume(4)
  arr[3, 3, 3] = np.nan  # fails only when p4's voxels are read, after p1..p3 were written.
  _write(bad, arr)
  cache = str(tmp_path / "cache")
  with pytest.raises(DataError, match=r"p4\.nii\.gz.*1 NaN/Inf"):
    data.load_dataset(_cfg(ct_dir), 16, cache)
  assert os.listdir(cache) == []  # temp arrays removed, no meta.json.
  ds = data.load_dataset(_cfg(ct_dir, replace_nonfinite=True), 16, cache)
  assert len(ds) == 28


def test_mask_files_and_slice_range(ct_dir, tmp_path):
  mdir = tmp_path / "masks"
  mdir.mkdir()
  for sid in ("p1", "p2", "p3"):
    m = np.zeros((20, 16, 8), np.uint8)
    m[5:15, 4:12, 2:6] = 1
    _write(mdir / f"{sid}_mask.nii.gz", m, np.diag([1.0, 2.0, 3.0, 1.0]))
  ds = data.load_dataset(_cfg(ct_dir, mask_path=str(mdir)), 16, str(tmp_path / "c1"))
  assert len(ds) == 12 and set(ds.slice_index.tolist()) == {2, 3, 4, 5}
  ds = data.load_dataset(_cfg(ct_dir, mask_path=str(mdir), slice_range=(3, 5),
                              skip_empty=False), 16, str(tmp_path / "c2"))
  assert ds.slice_index.tolist() == [3, 4] * 3
  ds = data.load_dataset(_cfg(ct_dir, axis="sagittal", slice_range=(0.25, 0.75)), 16,
                         str(tmp_path / "c3"))
  assert set(ds.slice_index.tolist()) <= set(range(5, 15))
  with pytest.raises(DataError, match=r"p1\.nii\.gz.*\(2, 30\).*extent of 8"):
    data.load_dataset(_cfg(ct_dir, slice_range=(2, 30)), 16, str(tmp_path / "c4"))
  os.remove(mdir / "p3_mask.nii.gz")
  with pytest.raises(DataError, match=r"no mask for subject.*p3"):
    data.load_dataset(_cfg(ct_dir, mask_path=str(mdir)), 16, str(tmp_path / "c5"))
  _write(mdir / "p3_mask.nii.gz", np.zeros((20, 16, 8), np.uint8), np.diag([1., 2., 3., 1.]))
  with pytest.raises(DataError, match=r"p3_mask\.nii\.gz.*all zero"):
    data.load_dataset(_cfg(ct_dir, mask_path=str(mdir)), 16, str(tmp_path / "c6"))


def test_config_and_input_errors(ct_dir, tmp_path):
  cache = str(tmp_path / "cache")
  with pytest.raises(ConfigError, match="data.source='dcm'"):
    data.load_dataset(_cfg(ct_dir, source="dcm"), 16, cache)
  with pytest.raises(ConfigError, match="data.path is empty"):
    data.load_dataset(_cfg(""), 16, cache)
  with pytest.raises(ConfigError, match="data.axis"):
    data.load_dataset(_cfg(ct_dir, axis="transverse"), 16, cache)
  with pytest.raises(ConfigError, match="no cache folder"):
    data.load_dataset(_cfg(ct_dir), 16, "")
  with pytest.raises(ConfigError, match="image_size"):
    data.load_dataset(_cfg(ct_dir), 0, cache)
  with pytest.raises(ConfigError, match="data.slice_range"):
    data.load_dataset(_cfg(ct_dir, slice_range=(0.5, 1.5)), 16, cache)
  with pytest.raises(DataError, match="no files match"):
    data.load_dataset(_cfg(str(tmp_path / "*.nii")), 16, cache)
  with pytest.raises(DataError, match="does not exist"):
    data.load_dataset(_cfg(str(tmp_path / "nowhere")), 16, cache)
  labels = tmp_path / "l.csv"
  labels.write_text("subject_id,group\np1,HC\np2,MS\n")
  with pytest.raises(DataError, match=r"l\.csv.*no row for subject 'p3'"):
    data.load_dataset(_cfg(ct_dir, labels_csv=str(labels)), 16, cache)
  with pytest.raises(DataError, match=r"l\.csv.*no column 'sex'"):
    data.load_dataset(_cfg(ct_dir, labels_csv=str(labels), label_column="sex"), 16, cache)
  with pytest.raises(ConfigError, match="needs data.labels_csv"):
    data.load_dataset(_cfg(ct_dir, label_column="group"), 16, cache)
  (tmp_path / "txt").mkdir()
  (tmp_path / "txt" / "x.nii").write_text("hello")
  with pytest.raises(DataError, match=r"x\.nii.*not a readable NIfTI"):
    data.load_dataset(_cfg(tmp_path / "txt"), 16, cache)
  with pytest.raises(DataError, match="4D"):
    data.load_dataset(_cfg(os.path.join(NIB_DATA, "example4d.nii.gz")), 16, cache)
  assert not os.path.exists(cache)  # every check ran before any compute.


def test_nibabel_files_end_to_end(tmp_path):
  cfg = _cfg(os.path.join(NIB_DATA, "example4d.nii.gz"), modality="mr", volume_index=0,
             axis="coronal")
  ds = data.load_dataset(cfg, 24, str(tmp_path / "c"))
  assert ds.images.shape[1:] == (24, 24, 1) and len(ds) > 0
  assert ds.subjects["example4d"]["volume_index"] == 0
  assert ds.images.min() == -1.0 and ds.images.max() <= 1.0
  cfg = _cfg(os.path.join(NIB_DATA, "anatomical.nii"), modality="mr", skip_empty=False)
  ds = data.load_dataset(cfg, 16, str(tmp_path / "d"))
  assert len(ds) == 25 and ds.slice_position[-1] == 1.0


def _fake_render_dataset(kind, n, size, seed):
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[:size, :size]
  radius = rng.uniform(0.2, 0.45, size=n) * size
  masks = np.hypot(yy - size / 2, xx - size / 2)[None] < radius[:, None, None]
  if kind == "thorax":
    images = np.where(masks, 60.0, -1000.0).astype(np.float32)
  else:
    images = np.where(masks, rng.uniform(100, 900, size=(n, size, size)), 0).astype(np.float32)
  return {"images": images, "masks": masks, "factors": {"radius": radius.astype(np.float32)},
          "labels": {"group": np.array(["HC", "MS"] * (n // 2) + ["HC"] * (n % 2))},
          "subject_id": np.array([f"ph{i % 3}" for i in range(n)]),  # interleaved.
          "slice_position": np.linspace(0, 1, n)}


def test_phantom_sources_with_fake_renderer(tmp_path, monkeypatch):
  fake = types.ModuleType("jaxlatent.phantoms")
  fake.render_dataset = _fake_render_dataset
  monkeypatch.setitem(sys.modules, "jaxlatent.phantoms", fake)
  cfg = data.default_data_config()
  cfg.source, cfg.num_images, cfg.label_column = "phantom_brain", 10, "group"
  ds = data.load_dataset(cfg, 16, str(tmp_path / "brain"))
  raw = _fake_render_dataset("brain", 10, 16, 0)
  assert ds.images.shape == (10, 16, 16, 1) and ds.images.min() == -1.0
  for sid in np.unique(raw["subject_id"]):  # MR percentiles over each subject's mask.
    idx = raw["subject_id"] == sid
    x, m = raw["images"][idx], raw["masks"][idx]
    lo, hi = np.percentile(x[m].astype(np.float64), [0.5, 99.5])
    np.testing.assert_allclose(ds.images[idx][..., 0],
                               2 * (np.clip(x, lo, hi) - lo) / (hi - lo) - 1, atol=1e-5)
  np.testing.assert_array_equal(ds.masks, raw["masks"])
  np.testing.assert_allclose(ds.factors["radius"], raw["factors"]["radius"])
  np.testing.assert_array_equal(ds.labels["group"], raw["labels"]["group"])
  assert ds.label_ids()[1] == ["HC", "MS"]
  assert ds.subjects["ph0"]["source_file"] == "phantom_brain"
  cfg.source = "phantom_thorax"
  ds = data.load_dataset(cfg, 16, str(tmp_path / "thorax"))
  np.testing.assert_allclose(ds.images[..., 0], np.where(raw["masks"], 2 * 1060 / 3000 - 1, -1),
                             atol=1e-6)
  cfg.label_column = "sex"
  with pytest.raises(ConfigError, match="'sex'"):
    data.load_dataset(cfg, 16, str(tmp_path / "thorax"))


def test_phantom_sources_with_real_renderer(tmp_path):
  from jaxlatent.phantoms import render_dataset  # noqa: F401  (the real module)
  for source in ("phantom_thorax", "phantom_brain"):
    cfg = data.default_data_config()
    cfg.source, cfg.num_images = source, 8
    ds = data.load_dataset(cfg, 16, str(tmp_path / source))
    assert ds.images.shape == (8, 16, 16, 1) and ds.images.dtype == np.float32
    assert ds.images.min() >= -1.0 and ds.images.max() <= 1.0
    assert ds.images.max() > ds.images.min()
    assert ds.masks.shape == (8, 16, 16) and ds.masks.any()
    assert ds.factors and all(v.shape == (8,) for v in ds.factors.values())


def test_slices_back_to_nifti(tmp_path):
  """Exact round trip on a native-size grid, then a planted blob in an anisotropic one."""
  rng = np.random.default_rng(5)
  vol = rng.uniform(-900, 900, size=(16, 16, 6)).astype(np.float32)
  aff = np.diag([-1.0, 1.0, 1.0, 1.0])  # stored LAS: the export is in canonical RAS.
  aff[0, 3] = 15.0
  src = _write(tmp_path / "v.nii.gz", vol, aff)
  ds = data.load_dataset(_cfg(src, skip_empty=False, slice_range=(1, 5), axis="coronal"),
                         16, str(tmp_path / "c"))
  # Coronal slices of a 16 x 6 (X x Z) plane at 1 mm -> content 6 x 16, not square.
  out, out_aff = data.slices_to_volume(ds, "v", ds.images, fill=-5.0, method="nearest")
  canon = nib.as_closest_canonical(nib.load(src))
  np.testing.assert_allclose(out_aff, canon.affine)
  ref = np.clip(canon.get_fdata(), -1000, 2000)
  ref = 2 * (ref + 1000) / 3000 - 1
  np.testing.assert_allclose(out[:, 1:5], ref[:, 1:5], atol=1e-5)
  np.testing.assert_array_equal(out[:, [0, 5]], -5.0)
  path = str(tmp_path / "map.nii.gz")
  data.save_slices_as_nifti(ds, "v", np.asarray(ds.masks), path, method="nearest")
  saved = nib.load(path)
  np.testing.assert_allclose(saved.affine, canon.affine)
  assert saved.shape == (16, 16, 6)
  with pytest.raises(DataError, match="expected values of shape"):
    data.slices_to_volume(ds, "v", ds.images[:2])
  # Anisotropic (1 x 2 x 1 mm) axial slices are resized; a planted block comes back in place.
  blob = np.full((20, 8, 4), -1000.0, np.float32)
  blob[4:11, 2:5] = 1000.0
  src = _write(tmp_path / "b.nii", blob, np.diag([1.0, 2.0, 1.0, 1.0]))
  ds = data.load_dataset(_cfg(src, skip_empty=False), 16, str(tmp_path / "d"))
  assert ds.subjects["b"]["geometry"]["content_shape"] == [13, 16]
  out, _ = data.slices_to_volume(ds, "b", ds.images)
  planted, found = blob > 0, out > 0
  assert (planted & found).sum() / (planted | found).sum() > 0.75
  assert found[7, 3].all() and not found[15:].any() and not found[:, 6:].any()


def test_phantom_folder_with_masks_and_labels(tmp_path):
  """The layout `python -m jaxlatent.phantoms` writes: volumes, *_mask files, labels.csv."""
  from jaxlatent import phantoms
  out = tmp_path / "brain"
  phantoms.write_dataset("brain", 3, str(out), size=16, n_slices=6, seed=1)
  cfg = data.default_data_config()
  cfg.source, cfg.path, cfg.modality = "nifti", str(out), "mr"
  cfg.mask_path, cfg.labels_csv, cfg.label_column = str(out), str(out / "labels.csv"), "group"
  cfg.skip_empty = False
  ds = data.load_dataset(cfg, 16, str(tmp_path / "cache"))
  assert sorted(set(ds.subject_id)) == ["sub-000", "sub-001", "sub-002"]  # masks not subjects
  assert len(ds) == 3 * 6
  mask_vol = nib.as_closest_canonical(nib.load(str(out / "sub-000_mask.nii.gz"))).get_fdata()
  first = ds.subject_id == "sub-000"
  assert ds.masks[first].sum() == (mask_vol > 0).sum()  # the given mask, not the volume
  assert set(ds.labels["group"]) <= {"HC", "MS"}
