"""DICOM series in (data.source='dicom') and component maps out as DICOM."""

from __future__ import annotations

import logging
import os
import shutil
import sys

import nibabel as nib
import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")

from jaxlatent import data  # noqa: E402
from jaxlatent.analysis.dicom_out import write_subject_maps_dicom  # noqa: E402
from jaxlatent.analysis.nifti_out import slice_grid_affine  # noqa: E402
from jaxlatent.data import dicom, dicom_write  # noqa: E402
from jaxlatent.data.nifti import load_volume  # noqa: E402
from jaxlatent.errors import ConfigError, DataError  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHAPE = (24, 20, 12)


def _phantom(seed: int, shape=SHAPE) -> np.ndarray:
  """Integer HU: an ellipsoid soft-tissue body with an air 'lung' and noise, in air."""
  rng = np.random.default_rng(seed)
  x, y, z = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
  vol = np.full(shape, -1000.0)
  vol[(x / 0.8) ** 2 + (y / 0.7) ** 2 + (z / 1.2) ** 2 < 1] = 40.0
  vol[((x + 0.3) / 0.25) ** 2 + (y / 0.3) ** 2 + (z / 0.8) ** 2 < 1] = -820.0
  return np.round(vol + rng.normal(0, 8, shape)).astype(np.float32)


def _rot(axis: int, deg: float) -> np.ndarray:
  c, s = np.cos(np.deg2rad(deg)), np.sin(np.deg2rad(deg))
  i, j = [a for a in range(3) if a != axis]
  r = np.eye(3)
  r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
  return r


# Voxel axes -> world (RAS) directions.  'sagittal': axis 0 -> P, 1 -> I, 2 -> L, the
# layout of a sagittally acquired series stored in LPS order (not RAS).
_ROTS = {"axial": np.eye(3),
         "sagittal": np.array([[0.0, 0, -1], [-1, 0, 0], [0, -1, 0]]),
         "oblique": _rot(0, 17.0) @ _rot(2, -25.0)}


def _affine(kind: str) -> np.ndarray:
  a = np.eye(4)
  a[:3, :3] = _ROTS[kind] @ np.diag([0.8, 0.9, 2.5])
  a[:3, 3] = [12.5, -30.25, 41.0]
  return a


def _write_subject(root, sid, vol, affine, **kw):
  """LIDC-like layout: <root>/<sid>/study/series/slice_*.dcm."""
  folder = os.path.join(str(root), sid, "study", "series")
  return dicom_write.write_dicom_series(folder, vol, affine, patient_id=sid, **kw)


def _edit(path, **fields):
  ds = pydicom.dcmread(path)
  for k, v in fields.items():
    setattr(ds, k, v)
  ds.save_as(path)


@pytest.mark.parametrize("kind", sorted(_ROTS))
def test_series_matches_nifti_voxels_and_affine(tmp_path, kind):
  vol, affine = _phantom(1), _affine(kind)
  _write_subject(tmp_path / "dcm", "p1", vol, affine)
  nib.save(nib.Nifti1Image(vol, affine), str(tmp_path / "p1.nii.gz"))
  (series,) = dicom.find_dicom_series(str(tmp_path / "dcm"))
  assert series.subject_id == series.patient_id == "p1" and series.modality == "CT"
  assert series.shape == SHAPE and len(series.files) == SHAPE[2]
  got, want = dicom.load_dicom_series(series), load_volume(str(tmp_path / "p1.nii.gz"))
  assert got.shape == want.shape == series.canonical_shape()
  np.testing.assert_allclose(got.data, want.data, atol=1e-5)
  np.testing.assert_allclose(got.affine, want.affine, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(got.spacing, want.spacing, rtol=1e-5)
  # The series' own (pre-canonical) affine is the written one, up to the slice order.
  world = lambda a, ijk: (a @ np.append(ijk, 1.0))[:3]  # noqa: E731
  corners = [(0, 0, 0), (SHAPE[0] - 1, SHAPE[1] - 1, SHAPE[2] - 1)]
  got_corners = {tuple(np.round(world(series.affine, c), 4)) for c in
                 [(0, 0, 0), (0, 0, SHAPE[2] - 1), (SHAPE[0] - 1, SHAPE[1] - 1, 0),
                  (SHAPE[0] - 1, SHAPE[1] - 1, SHAPE[2] - 1)]}
  for c in corners:
    assert tuple(np.round(world(affine, c), 4)) in got_corners


def test_shuffled_files_non_dicom_localizer_and_secondary_capture(tmp_path):
  vol, affine = _phantom(2), _affine("oblique")
  root = tmp_path / "dcm"
  paths = _write_subject(root, "p1", vol, affine)
  folder = os.path.dirname(paths[0])
  order = np.random.default_rng(0).permutation(len(paths))
  for new, i in enumerate(order):  # file names say nothing about the position.
    os.rename(paths[i], os.path.join(folder, f"IM{new:03d}"))
  (root / "p1" / "notes.txt").write_text("not DICOM")
  (root / "p1" / "study" / "069.xml").write_text("<LidcReadMessage/>")
  loc = dicom_write.write_dicom_series(str(root / "p1" / "scout"), vol[:, :, :1], affine,
                                       patient_id="p1", image_type=("ORIGINAL", "PRIMARY",
                                                                    "LOCALIZER"))
  dicom_write.write_dicom_series(str(root / "p1" / "sc"), vol[:, :, :2], affine,
                                 patient_id="p1", sop_class="SC", modality="OT")
  (series,) = dicom.find_dicom_series(str(root))
  assert len(series.files) == SHAPE[2] and loc[0] not in series.files
  nib.save(nib.Nifti1Image(vol, affine), str(tmp_path / "p1.nii.gz"))
  np.testing.assert_allclose(dicom.load_dicom_series(series).data,
                             load_volume(str(tmp_path / "p1.nii.gz")).data, atol=1e-5)


def test_pydicom_bundled_ct_and_mr_files(tmp_path):
  from pydicom.data import get_testdata_file
  for name in ("CT_small.dcm", "MR_small.dcm"):
    shutil.copy(get_testdata_file(name, download=False), tmp_path / name)
  found = {s.modality: s for s in dicom.find_dicom_series(str(tmp_path))}
  assert sorted(found) == ["CT", "MR"]
  for modality, name in (("CT", "CT_small.dcm"), ("MR", "MR_small.dcm")):
    ds = pydicom.dcmread(str(tmp_path / name))
    vol = dicom.load_dicom_series(found[modality])
    assert vol.shape == (int(ds.Columns), int(ds.Rows), 1)
    hu = ds.pixel_array.astype(np.float64) * float(ds.get("RescaleSlope", 1) or 1) \
        + float(ds.get("RescaleIntercept", 0) or 0)
    # Axial LPS rows/columns: canonical RAS flips both in-plane axes.
    np.testing.assert_allclose(vol.data[:, :, 0], hu.T[::-1, ::-1], atol=1e-4)
    ipp_ras = np.asarray([float(v) for v in ds.ImagePositionPatient]) * [-1, -1, 1]
    corner = vol.affine @ [vol.shape[0] - 1, vol.shape[1] - 1, 0, 1]
    np.testing.assert_allclose(corner[:3], ipp_ras, atol=1e-4)
    np.testing.assert_allclose(vol.spacing[:2], [float(v) for v in ds.PixelSpacing][::-1])
  ct = dicom.load_dicom_series(found["CT"])
  assert ct.data.min() < -800 and ct.data.max() > 100  # HU after the -1024 intercept


def _cfg(path, source, **kw):
  cfg = data.default_data_config()
  cfg.source, cfg.path, cfg.modality = source, str(path), "ct"
  for k, v in kw.items():
    cfg[k] = v
  return cfg


def test_pipeline_cache_equals_nifti_and_labels_by_patient_id(tmp_path, caplog):
  ndir, ddir = tmp_path / "nii", tmp_path / "dcm"
  ndir.mkdir()
  for i, (sid, kind) in enumerate((("p1", "axial"), ("p2", "sagittal"), ("p3", "oblique"))):
    vol, affine = _phantom(10 + i), _affine(kind)
    nib.save(nib.Nifti1Image(vol, affine), str(ndir / f"{sid}.nii.gz"))
    _write_subject(ddir, sid, vol, affine)
  csv = tmp_path / "labels.csv"
  csv.write_text("PatientID,group\np1,HC\np2,MS\np3,MS\n")
  kw = dict(labels_csv=str(csv), label_column="group")
  want = data.load_dataset(_cfg(ndir, "nifti", **kw), 16, str(tmp_path / "c_nii"))
  got = data.load_dataset(_cfg(ddir, "dicom", **kw), 16, str(tmp_path / "c_dcm"))
  assert len(got) == len(want) > 0
  np.testing.assert_allclose(np.asarray(got.images), np.asarray(want.images), atol=1e-5)
  np.testing.assert_array_equal(np.asarray(got.masks), np.asarray(want.masks))
  np.testing.assert_array_equal(got.subject_id, want.subject_id)
  np.testing.assert_array_equal(got.slice_index, want.slice_index)
  np.testing.assert_array_equal(got.labels["group"], want.labels["group"])
  sub = got.subjects["p2"]
  np.testing.assert_allclose(sub["affine"], want.subjects["p2"]["affine"], atol=1e-4)
  assert sub["dicom"]["patient_id"] == "p2" and sub["dicom"]["frame_of_reference_uid"]
  assert got.source_file[0] == os.path.join(str(ddir), "p1", "study", "series")
  with caplog.at_level(logging.INFO, logger="jaxlatent.data.loading"):
    data.load_dataset(_cfg(ddir, "dicom", **kw), 16, str(tmp_path / "c_dcm"))
  assert "re-using the preprocessed cache" in caplog.text
  # Mask NIfTIs pair with DICOM subjects by subject id, as with NIfTI volumes.
  mdir = tmp_path / "masks"
  mdir.mkdir()
  for sid in ("p1", "p2", "p3"):
    img = nib.load(str(ndir / f"{sid}.nii.gz"))
    nib.save(nib.Nifti1Image((np.asarray(img.dataobj) > -500).astype(np.uint8), img.affine),
             str(mdir / f"{sid}_mask.nii.gz"))
  want_m = data.load_dataset(_cfg(ndir, "nifti", mask_path=str(mdir)), 16, str(tmp_path / "m1"))
  got_m = data.load_dataset(_cfg(ddir, "dicom", mask_path=str(mdir)), 16, str(tmp_path / "m2"))
  np.testing.assert_array_equal(np.asarray(got_m.masks), np.asarray(want_m.masks))
  np.testing.assert_allclose(np.asarray(got_m.images), np.asarray(want_m.images), atol=1e-5)
  # A CSV keyed by SeriesInstanceUID.
  uids = {s.subject_id: s.series_uid for s in dicom.find_dicom_series(str(ddir))}
  csv2 = tmp_path / "by_series.csv"
  csv2.write_text("SeriesInstanceUID,age\n" + "".join(f"{uids[s]},{a}\n" for s, a in
                                                      (("p3", 70), ("p1", 50), ("p2", 60))))
  by_uid = data.load_dataset(_cfg(ddir, "dicom", labels_csv=str(csv2)), 16, str(tmp_path / "c3"))
  ages = {s: a for s, a in zip(by_uid.subject_id.tolist(), by_uid.labels["age"].tolist())}
  assert ages == {"p1": 50.0, "p2": 60.0, "p3": 70.0}
  # A rewritten slice changes the fingerprint: the cache is rebuilt.
  first = sorted(os.listdir(ddir / "p1" / "study" / "series"))[0]
  os.utime(ddir / "p1" / "study" / "series" / first, ns=(1, 1))
  caplog.clear()
  with caplog.at_level(logging.INFO, logger="jaxlatent.data.loading"):
    data.load_dataset(_cfg(ddir, "dicom", **kw), 16, str(tmp_path / "c_dcm"))
  assert "building the preprocessed cache" in caplog.text


def _mixed_orientation(paths):
  _edit(paths[3], ImageOrientationPatient=[0, 1, 0, 0, 0, -1])
  return paths[3], "mixed orientations"


def _mixed_spacing(paths):
  _edit(paths[5], PixelSpacing=[0.5, 0.5])
  return paths[5], "mixed pixel spacings"


def _missing_slice(paths):
  os.remove(paths[4])
  return paths[3], "slice\\(s\\) missing"


def _duplicated_slice(paths):
  ds = pydicom.dcmread(paths[6])
  ds.SOPInstanceUID = pydicom.uid.generate_uid()
  ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
  dup = paths[6].replace(".dcm", "_copy.dcm")
  ds.save_as(dup)
  return "slice_0006", "same position.*duplicated slice"


def _jpeg2000(paths):
  ds = pydicom.dcmread(paths[2])
  ds.file_meta.TransferSyntaxUID = pydicom.uid.JPEG2000Lossless
  ds.PixelData = pydicom.encaps.encapsulate([ds.PixelData])
  ds.save_as(paths[2])
  return paths[2], None


BAD = {"mixed_orientation": _mixed_orientation, "mixed_spacing": _mixed_spacing,
       "missing_slice": _missing_slice, "duplicated_slice": _duplicated_slice}


def _no_cache_written(cache):
  return not any(os.path.exists(os.path.join(cache, f)) for f in ("images.npy", "meta.json"))


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_series_raise_data_error_naming_the_file(tmp_path, case):
  paths = _write_subject(tmp_path / "dcm", "p1", _phantom(3), _affine("axial"))
  named, problem = BAD[case](paths)
  cache = str(tmp_path / "cache")
  with pytest.raises(DataError, match=f"{os.path.basename(named)}.*{problem}|"
                     f"{problem}.*{os.path.basename(named)}"):
    data.load_dataset(_cfg(tmp_path / "dcm", "dicom"), 16, cache)
  assert _no_cache_written(cache)


def test_compressed_without_decoder(tmp_path, monkeypatch):
  paths = _write_subject(tmp_path / "dcm", "p1", _phantom(4), _affine("axial"))
  named, _ = _jpeg2000(paths)
  from pydicom.pixels import get_decoder
  decoder = get_decoder(pydicom.uid.JPEG2000Lossless)
  cache = str(tmp_path / "cache")
  with monkeypatch.context() as m:
    m.setattr(decoder, "_available", {})  # as if no JPEG 2000 plugin were installed.
    with pytest.raises(DataError, match=f"{os.path.basename(named)}.*compressed.*JPEG 2000.*"
                       "no decoder is installed: install one of.*pylibjpeg"):
      data.load_dataset(_cfg(tmp_path / "dcm", "dicom"), 16, cache)
  assert _no_cache_written(cache)
  if decoder.is_available:  # a real decoder meets pixel bytes that are not JPEG 2000.
    with pytest.raises(DataError, match=f"cannot decode the pixel data.*"
                       f"{os.path.basename(named)}"):
      data.load_dataset(_cfg(tmp_path / "dcm", "dicom"), 16, cache)
    assert _no_cache_written(cache)


def test_folder_without_image_series(tmp_path, monkeypatch):
  root = tmp_path / "dcm"
  dicom_write.write_dicom_series(str(root / "scout"), _phantom(5)[:, :, :1], np.eye(4),
                                 image_type=("ORIGINAL", "PRIMARY", "LOCALIZER"))
  (root / "readme.txt").write_text("hello")
  with pytest.raises(DataError, match=r"dcm' holds no CT/MR DICOM image series "
                     r"\(1 localizer, 1 not DICOM\)"):
    data.load_dataset(_cfg(root, "dicom"), 16, str(tmp_path / "cache"))
  monkeypatch.setitem(sys.modules, "pydicom", None)  # pydicom not installed.
  with pytest.raises(DataError, match=r"pip install 'jaxlatent\[dicom\]'"):
    dicom.find_dicom_series(str(root))


def test_train_cli_bad_dicom_exits_2_in_one_line(tmp_path, capsys):
  paths = _write_subject(tmp_path / "dcm", "p1", _phantom(6), _affine("axial"))
  named, _ = _mixed_orientation(paths)
  cache = tmp_path / "cache"
  # train.py's main in this process (tests/test_train_cli.py runs the real process);
  # --malloc=system keeps the worker's allocator as it is.
  sys.path.insert(0, ROOT)
  import train  # pylint: disable=g-import-not-at-top
  capsys.readouterr()
  try:
    code = train.main(["train.py", f"--config={os.path.join(ROOT, 'configs', 'dcgan_tiny.py')}",
                       f"--workdir={tmp_path / 'run'}", "--config.data.source=dicom",
                       f"--config.data.path={tmp_path / 'dcm'}",
                       f"--config.data.cache_dir={cache}", "--malloc=system"])
  except SystemExit as e:
    code = e.code
  err = capsys.readouterr().err
  assert code == 2, err
  lines = [ln for ln in err.splitlines() if ln.strip()]
  assert len(lines) == 1 and lines[0].startswith("error: "), err
  assert named in lines[0] and "mixed orientations" in lines[0]
  assert _no_cache_written(str(cache))
  ckpts = tmp_path / "run" / "checkpoints"
  assert not ckpts.exists() or not os.listdir(ckpts)  # no step was saved


def test_component_and_subtraction_maps_as_dicom(tmp_path):
  ddir = tmp_path / "dcm"
  _write_subject(ddir, "p1", _phantom(7), _affine("oblique"))
  ds = data.load_dataset(_cfg(ddir, "dicom"), 16, str(tmp_path / "cache"))
  info = ds.subjects["p1"]
  rows = np.flatnonzero(ds.subject_id == "p1")[::2]  # every other slice: gaps in the grid.
  idx = ds.slice_index[rows]
  rng = np.random.default_rng(0)
  comps = rng.normal(0, 0.3, (len(rows), 2, 16, 16, 1)).astype(np.float32)
  subs = rng.normal(0, 0.1, (len(rows), 3, 16, 16)).astype(np.float32)
  out = write_subject_maps_dicom(str(tmp_path / "maps"), "p1", info, idx, comps,
                                 subtraction_maps=subs, tag="sefa")
  assert [len(out["components"]), len(out["subtraction"])] == [2, 3]
  grid = np.arange(idx.min(), idx.max() + 1, 2)
  affine = slice_grid_affine(np.asarray(info["affine"]), info["shape"],
                             data.axis_index(info["axis"]), grid, info["geometry"])
  for what, maps in (("components", comps[..., 0]), ("subtraction", subs)):
    for k, folder in enumerate(out[what]):
      files = sorted(os.listdir(folder))
      assert len(files) == len(grid)
      uids = set()
      for j, name in enumerate(files):
        f = pydicom.dcmread(os.path.join(folder, name))
        assert f.FrameOfReferenceUID == info["dicom"]["frame_of_reference_uid"]
        assert f.StudyInstanceUID == info["dicom"]["study_uid"] and f.PatientID == "p1"
        uids.add(f.SeriesInstanceUID)
        slope, icpt = float(f.RescaleSlope), float(f.RescaleIntercept)
        value = f.pixel_array.astype(np.float64) * slope + icpt  # [row, col]
        pos = np.flatnonzero(idx == grid[j])
        want = maps[pos[0], k] if pos.size else np.zeros((16, 16))
        np.testing.assert_allclose(value, want, atol=slope / 2 + 1e-6)
        # The DICOM plane is the slice grid's: pixel (r, c) of slice j sits at A @ (r, c, j).
        ipp = np.asarray([float(v) for v in f.ImagePositionPatient])
        np.testing.assert_allclose(ipp * [-1, -1, 1], (affine @ [0, 0, j, 1])[:3], atol=1e-3)
      assert len(uids) == 1 and uids != {info["dicom"]["series_uid"]}
  with pytest.raises(DataError, match="not read from DICOM"):
    write_subject_maps_dicom(str(tmp_path / "m2"), "p1", dict(info, dicom=None), idx, comps)


def test_analysis_inverts_a_dicom_folder(tmp_path):
  import ml_collections
  from jaxlatent.studies import analysis, config as study_config
  _write_subject(tmp_path / "dcm", "p9", _phantom(8), _affine("axial"))
  config = study_config.default_analysis_config()
  config.images.source, config.images.path = "dicom", str(tmp_path / "dcm")
  study_config.validate_analysis_config(config)
  train = ml_collections.ConfigDict({"data": data.default_data_config(), "image_size": 16})
  ds = analysis.load_images(config, train, str(tmp_path / "out"))
  assert set(ds.subject_id.tolist()) == {"p9"} and ds.subjects["p9"]["dicom"]["patient_id"] == "p9"
  config.images.path = ""
  with pytest.raises(ConfigError, match="images.path is empty.*source='dicom'"):
    study_config.validate_analysis_config(config)
