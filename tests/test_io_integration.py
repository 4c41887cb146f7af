"""DICOM in, TensorBoard out and the scrubbable report, end to end through the drivers."""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from configs import dcgan_tiny  # noqa: E402  pylint: disable=g-import-not-at-top
from jaxlatent.training import complete_train_config  # noqa: E402
from jaxlatent.training import metrics as metrics_lib  # noqa: E402
from jaxlatent.training import tensorboard as tb  # noqa: E402
from jaxlatent.training.loop import train_and_evaluate  # noqa: E402
from jaxlatent.training.testing import toy_dataset, toy_trainer  # noqa: E402

SIZE = 16
DATA = toy_dataset(64, SIZE)


def _tiny_config(**overrides):
  c = complete_train_config(dcgan_tiny.get_config())
  c.image_size, c.batch_size, c.steps = SIZE, 8, 12
  c.log_every, c.ckpt_every, c.keep_checkpoints = 3, 4, 2
  c.sample_every, c.num_samples = 6, 4
  c.fid_every, c.fid_num_samples = 4, 16
  for k, v in overrides.items():
    c[k] = v
  return c


def _train(workdir, **overrides):
  train_and_evaluate(_tiny_config(**overrides), str(workdir), trainer=toy_trainer(SIZE),
                     dataset=DATA)


def _accumulator(logdir):
  ea = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
  acc = ea.EventAccumulator(str(logdir), size_guidance={ea.SCALARS: 0, ea.IMAGES: 0})
  acc.Reload()
  return acc


# ---------------------------------------------------------------------------
# TensorBoard from the training loop.


def test_tensorboard_scalars_images_and_fd_survive_a_resume(tmp_path):
  _train(tmp_path, steps=8)  # stops at the checkpoint of step 8
  # A crash after logging step 9 but before its checkpoint leaves an orphaned point.
  with tb.SummaryWriter(str(tmp_path), start_step=8) as w:
    w.scalars(9, {"loss": 123.0})
  _train(tmp_path)  # resumes from step 8 to 12

  records = metrics_lib.read_metrics(str(tmp_path / "metrics.jsonl"))
  assert [r["step"] for r in records] == [3, 4, 6, 8, 9, 12]
  acc = _accumulator(tmp_path)
  tags = acc.Tags()
  expected = {}  # tag -> {step: value}: every finite scalar of metrics.jsonl
  for r in records:
    for tag, value in tb.scalar_metrics(r).items():
      expected.setdefault(tag, {})[r["step"]] = value
  assert {"loss", "fd_random_features", "images_per_sec"} <= set(expected)
  assert set(expected) <= set(tags["scalars"])
  for tag, by_step in expected.items():
    events = acc.Scalars(tag)
    steps = [e.step for e in events]
    assert steps == sorted(by_step), (tag, steps)  # once per step, none rewound
    np.testing.assert_allclose([e.value for e in events], [by_step[s] for s in steps],
                               rtol=1e-6, err_msg=tag)
  # The FD curve at its own steps (every 4 and the last of each run).
  assert [e.step for e in acc.Scalars("fd_random_features")] == [4, 8, 12]
  # Sample grids at the sample steps of both runs, as decodable PNGs.
  assert "samples" in tags["images"]
  images = acc.Images("samples")
  assert [e.step for e in images] == [6, 8, 12]
  from PIL import Image  # pylint: disable=g-import-not-at-top
  import io  # pylint: disable=g-import-not-at-top
  png = Image.open(io.BytesIO(images[-1].encoded_image_string))
  assert png.size == (images[-1].width, images[-1].height) and png.width > SIZE


def test_finished_run_leaves_event_files_alone(tmp_path):
  _train(tmp_path, steps=4, fid_every=0, sample_every=0)
  files = tb.event_files(str(tmp_path))
  assert len(files) == 1
  before = open(files[0], "rb").read()
  _train(tmp_path, steps=4, fid_every=0, sample_every=0)  # nothing to do
  assert tb.event_files(str(tmp_path)) == files
  assert open(files[0], "rb").read() == before


# ---------------------------------------------------------------------------
# DICOM in, DICOM maps and scrubber pages out, through train.py and analyze.py.

SHAPE = (24, 20, 10)  # voxels of each synthetic CT series


def _load_cli(name):
  import importlib.util  # pylint: disable=g-import-not-at-top
  spec = importlib.util.spec_from_file_location(f"{name}_cli", os.path.join(ROOT, f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _cli(name, argv):
  """``<name>.py``'s main in-process; the exit status (0 or SystemExit's code)."""
  try:
    return _load_cli(name).main([f"{name}.py"] + list(argv) + ["--malloc=system"])
  except SystemExit as e:
    return e.code


def _ct_volume(seed):
  """Integer HU: a soft-tissue ellipsoid with an air 'lung' and noise, in air."""
  rng = np.random.default_rng(seed)
  x, y, z = np.meshgrid(*[np.linspace(-1, 1, n) for n in SHAPE], indexing="ij")
  vol = np.full(SHAPE, -1000.0)
  vol[(x / 0.8) ** 2 + (y / 0.7) ** 2 + (z / 1.3) ** 2 < 1] = 40.0
  vol[((x + 0.3 - 0.1 * seed) / 0.25) ** 2 + (y / 0.3) ** 2 + (z / 0.9) ** 2 < 1] = -820.0
  return np.round(vol + rng.normal(0, 8, SHAPE)).astype(np.float32)


def _write_dicom_folder(root, subjects=("p1", "p2", "p3")):
  """One axial CT series per subject (<root>/<id>/series/slice_*.dcm) by our writer."""
  from jaxlatent.data import dicom_write  # pylint: disable=g-import-not-at-top
  affine = np.diag([0.8, 0.9, 2.5, 1.0])
  affine[:3, 3] = [12.5, -30.25, 41.0]
  for i, sid in enumerate(subjects):
    dicom_write.write_dicom_series(os.path.join(str(root), sid, "series"), _ct_volume(i),
                                   affine, patient_id=sid)
  return str(root)


TRAIN = ["--config.image_size=16", "--config.batch_size=8", "--config.steps=2",
         "--config.model.gen_channels=16", "--config.model.disc_channels=16",
         "--config.model.max_channels=16", "--config.log_every=1", "--config.ckpt_every=2",
         "--config.sample_every=2", "--config.num_samples=4", "--config.fid_every=0",
         "--config.data.source=dicom", "--config.data.modality=ct"]
ANALYZE = [  # configs/analyze_ct_tiny.py cut to a few steps, SeFa only
    "--config.methods=('sefa',)", "--config.sefa_components=4",
    "--config.images.source=dicom", "--config.images.max_subjects=2",
    "--config.inversion.steps=3", "--config.inversion.restarts=1",
    "--config.traversal.alpha_num=5", "--config.traversal.directions_per_method=1",
    "--config.traversal.max_subjects=2", "--config.report.num_samples=4",
    "--config.report.grid_directions=2", "--config.report.scrubber_slices=3"]


@pytest.fixture(scope="module")
def dicom_run(tmp_path_factory):
  """(DICOM folder, workdir): train.py on DICOM series written by our writer."""
  pytest.importorskip("pydicom")
  root = tmp_path_factory.mktemp("dicom_e2e")
  dcm = _write_dicom_folder(root / "dcm")
  workdir = str(root / "run")
  assert _cli("train", [f"--config={os.path.join(ROOT, 'configs', 'dcgan_tiny.py')}",
                        f"--workdir={workdir}", f"--config.data.path={dcm}"] + TRAIN) == 0
  return dcm, workdir


@pytest.mark.slow  # train.py then analyze.py, each compiling its programs
def test_train_on_dicom_then_analyze_writes_dicom_maps_and_scrubber_pages(dicom_run, tmp_path):
  import pydicom  # pylint: disable=g-import-not-at-top
  dcm, workdir = dicom_run
  assert os.path.isdir(os.path.join(workdir, "checkpoints", "2"))
  acc = _accumulator(workdir)  # TensorBoard beside metrics.jsonl
  assert [e.step for e in acc.Scalars("g_loss")] == [1, 2]
  assert [e.step for e in acc.Images("samples")] == [2]

  out = str(tmp_path / "report")
  assert _cli("analyze", [f"--config={os.path.join(ROOT, 'configs', 'analyze_ct_tiny.py')}",
                          f"--workdir={workdir}", f"--out={out}",
                          f"--config.images.path={dcm}"] + ANALYZE) == 0
  index = open(os.path.join(out, "index.html")).read()

  # DICOM maps next to the NIfTI ones, in the source series' study and frame of reference.
  assert any(f.endswith("_components.nii.gz") for f in os.listdir(os.path.join(out, "nifti")))
  series = {}
  for sid in ("p1", "p2", "p3"):
    f = pydicom.dcmread(os.path.join(dcm, sid, "series", "slice_0000.dcm"))
    series[sid] = (f.FrameOfReferenceUID, f.StudyInstanceUID)
  folders = sorted(os.listdir(os.path.join(out, "dicom")))
  analysed = sorted({f.split("_")[0] for f in folders})
  assert len(analysed) == 2 and set(analysed) <= set(series)
  assert {f.split("_", 1)[1].rsplit("_", 1)[1] for f in folders} == {"components", "subtraction"}
  for folder in folders:
    sid = folder.split("_")[0]
    for k in sorted(os.listdir(os.path.join(out, "dicom", folder))):
      names = sorted(os.listdir(os.path.join(out, "dicom", folder, k)))
      assert names
      m = pydicom.dcmread(os.path.join(out, "dicom", folder, k, names[0]))
      assert (m.FrameOfReferenceUID, m.StudyInstanceUID) == series[sid]
      assert m.PatientID == sid and m.pixel_array.shape == (16, 16)
  assert "dicom/" in index

  # One self-contained scrubber page per analysed direction, linked from index.html.
  pages = sorted(os.listdir(os.path.join(out, "scrub")))
  assert pages and all(p.startswith("sefa-") and p.endswith(".html") for p in pages)
  metrics = json.load(open(os.path.join(out, "metrics.json")))
  assert sorted(metrics["scrubber_pages"]) == [os.path.join("scrub", p) for p in pages]
  for page in pages:
    assert f"href='scrub/{page}'" in index
    text = open(os.path.join(out, "scrub", page)).read()
    assert "http://" not in text and "https://" not in text
    assert 'id="alpha"' in text and 'id="slice"' in text and 'id="subject"' in text
  _scrub_in_browser(os.path.join(out, "scrub", pages[0]), tmp_path)


_SHOWN = """(() => {
  const set = (id, value, type) => {
    const e = document.getElementById(id);
    e.value = String(value);
    e.dispatchEvent(new Event(type, {bubbles: true}));
  };
  %s
  return ["generated", "subtraction", "component2"].map(
      p => document.getElementById("panel-" + p).dataset.frame);
})()"""


def _scrub_in_browser(page, tmp_path):
  """Drives the page in headless chromium: the three panels follow every control."""
  scrubber_test = pytest.importorskip("test_viz_scrubber")
  binary = scrubber_test._browser()  # skips where no chromium is installed
  browser = scrubber_test._DevTools(binary, tmp_path / "profile", tmp_path / "chromium.log")
  try:
    browser.open_page("file://" + os.path.abspath(page))
    moves = [(0, 0, 4, 'set("alpha", 4, "input");'), (0, 2, 4, 'set("slice", 2, "input");'),
             (1, 2, 4, 'set("subject", 1, "change");'), (1, 2, 1, 'set("alpha", 1, "input");')]
    for s, k, a, script in moves:
      assert browser.evaluate(_SHOWN % script) == [f"{s},{k},{a}"] * 3, script
  finally:
    browser.close()


def test_bad_dicom_images_for_analyze_exit_2_and_write_nothing(dicom_run, tmp_path, capsys):
  import pydicom  # pylint: disable=g-import-not-at-top
  _, workdir = dicom_run
  bad = _write_dicom_folder(tmp_path / "bad", subjects=("q1",))
  named = os.path.join(bad, "q1", "series", "slice_0003.dcm")
  f = pydicom.dcmread(named)
  f.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]
  f.save_as(named)
  out = tmp_path / "report"
  capsys.readouterr()
  assert _cli("analyze", [f"--config={os.path.join(ROOT, 'configs', 'analyze_ct_tiny.py')}",
                          f"--workdir={workdir}", f"--out={out}",
                          f"--config.images.path={bad}"] + ANALYZE) == 2
  err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
  assert len(err) == 1 and err[0].startswith("error: ") and "slice_0003.dcm" in err[0], err
  assert "mixed orientations" in err[0]
  written = [os.path.relpath(os.path.join(d, n), out) for d, _, files in os.walk(out)
             for n in files]
  # Only the (empty, released) lock file of the locked --out: no cache, no directions,
  # no report.
  assert written in ([], [".lock"]), written
  assert not os.path.exists(out / ".lock") or os.path.getsize(out / ".lock") == 0


def test_bad_dicom_training_data_exit_2_and_write_nothing(tmp_path, capsys):
  pytest.importorskip("pydicom")
  dcm = tmp_path / "dcm"
  (dcm / "p1").mkdir(parents=True)
  (dcm / "p1" / "slice_0000.dcm").write_bytes(b"DICM" + b"\0" * 200)  # not a DICOM file
  capsys.readouterr()
  assert _cli("train", [f"--config={os.path.join(ROOT, 'configs', 'dcgan_tiny.py')}",
                        f"--workdir={tmp_path / 'run'}", f"--config.data.path={dcm}"]
              + TRAIN) == 2
  err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
  assert len(err) == 1 and err[0].startswith("error: "), err
  written = [n for _, _, files in os.walk(tmp_path / "run") for n in files]
  # Only the workdir's released (empty) lock file: no cache, config or checkpoint.
  assert written in ([], [".lock"]), written
  assert not (tmp_path / "run" / ".lock").exists() or (tmp_path / "run" / ".lock").stat().st_size == 0


# ---------------------------------------------------------------------------
# The scrubber stage on a toy generator: what the pages show is the analysed traversal.


def test_scrubber_frames_are_the_analysed_traversal_of_evenly_spaced_slices():
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from jaxlatent.analysis import traverse  # pylint: disable=g-import-not-at-top
  from jaxlatent.directions import Directions  # pylint: disable=g-import-not-at-top
  from jaxlatent.directions.toy import bump_generator  # pylint: disable=g-import-not-at-top
  from jaxlatent.inversion import InvertedSlices  # pylint: disable=g-import-not-at-top
  from jaxlatent.studies import analysis  # pylint: disable=g-import-not-at-top
  from jaxlatent.studies.config import complete_analysis_config  # pylint: disable=g-import-not-at-top
  from jaxlatent.viz import traversal_panels  # pylint: disable=g-import-not-at-top

  gen, planted = bump_generator(jax.random.PRNGKey(0), latent_dim=6, size=8)
  # Rows out of slice order; subject a has slices 4, 5, 6 and b has 1, 3, 5.
  subject = np.array(["b", "a", "b", "a", "a", "b"])
  slices = np.array([5, 5, 1, 4, 6, 3])
  latents = np.random.default_rng(0).normal(0, 0.5, (6, 6)).astype(np.float32)
  inv = InvertedSlices(latents, np.zeros((6, 8, 8, 1), np.float32), np.zeros(6), np.arange(6),
                       subject, slices)
  masks = np.ones((6, 8, 8), bool)
  masks[:, 0] = False  # the subtraction maps are masked, the generated slices are not
  config = complete_analysis_config(ml_collections_config(
      {"traversal": {"alpha_num": 5, "alpha_stop": 2.0, "directions_per_method": 2},
       "report": {"scrubber_slices": 2}}))
  found = {"sefa": Directions(np.asarray(planted[:3], np.float32), "sefa", names=["x", "y", "z"])}
  eigen = analysis.traverse_and_eigen(gen, found, inv, masks, None, config)
  scrubbers = analysis.scrubber_frames(gen, eigen, inv, config)

  assert [(s.method, s.direction) for s in scrubbers] == [("sefa", "x"), ("sefa", "y")]
  shown = {"a": [3, 4], "b": [2, 0]}  # rows of slices (4, 6) and (1, 5): first and last
  res = eigen.methods[0].result  # rows of the eigen-analysis = positions in eigen.selected
  for j, s in enumerate(scrubbers):
    assert s.slice_labels == ["slice 1 of 2", "slice 2 of 2"]  # subjects cut differently
    assert list(s.frames) == ["b", "a"]  # first-seen subject order, as the analysis
    for sid, rows in shown.items():
      pos = [int(np.flatnonzero(eigen.selected == r)[0]) for r in rows]
      want = traversal_panels(
          np.asarray(traverse(gen, jnp.asarray(latents[rows]), jnp.asarray(planted[j]),
                              jnp.asarray(eigen.alphas))),
          jax.tree.map(lambda x, j=j, pos=pos: np.asarray(x)[pos][:, j], res))
      for panel in ("generated", "subtraction", "component2"):
        np.testing.assert_allclose(s.frames[sid][panel], want[panel], atol=1e-5)
      g = s.frames[sid]["generated"]  # [2, T, 8, 8]
      np.testing.assert_allclose(s.frames[sid]["subtraction"],
                                 (g - g[:, :1]) * masks[0], atol=1e-5)
      assert np.abs(s.frames[sid]["component2"]).max() > 0

  config.report.scrubber_slices = 0
  assert analysis.scrubber_frames(gen, eigen, inv, config) == []


def ml_collections_config(d):
  """A ConfigDict of the plain dict ``d``."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  return ml_collections.ConfigDict(d)


def test_report_links_pages_and_flags_a_missing_one(tmp_path):
  from jaxlatent.viz.report import Section, write_report  # pylint: disable=g-import-not-at-top
  (tmp_path / "scrub").mkdir()
  (tmp_path / "scrub" / "a.html").write_text("<p>a</p>")
  sec = Section("Traversals", links=[("scrub/a.html", "direction a"),
                                     ("scrub/b.html", "direction b")])
  html = open(write_report(str(tmp_path), "t", [sec])).read()
  assert "<a href='scrub/a.html'>direction a</a>" in html
  assert "missing page: scrub/b.html" in html and "href='scrub/b.html'" not in html
