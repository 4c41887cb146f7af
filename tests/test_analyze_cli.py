"""analyze.py end to end on a tiny trained DCGAN workdir, and its user errors (exit 2)."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

from jaxlatent.directions import load_directions
from jaxlatent.viz.grids import read_png
from jaxlatent.training import complete_train_config  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = [  # every loop of configs/analyze_ct_tiny.py cut to a few steps
    "--config.voynov.steps=10", "--config.voynov.eval_every=5", "--config.voynov.eval_batches=1",
    "--config.voynov.batch_size=8", "--config.voynov.num_directions=4",
    "--config.voynov.reconstructor=mlp", "--config.voynov.reconstructor_width=16",
    "--config.ganspace_samples=64", "--config.ganspace_components=4",
    "--config.sefa_components=4", "--config.alignment.regressor_images=64",
    "--config.alignment.regressor_steps=5", "--config.alignment.num_latents=2",
    "--config.images.num_images=16", "--config.images.max_subjects=1",
    "--config.inversion.steps=5", "--config.inversion.restarts=1",
    "--config.traversal.alpha_num=5", "--config.traversal.directions_per_method=1",
    "--config.traversal.max_subjects=1", "--config.report.num_samples=4",
    "--config.report.grid_directions=4",
]


def _analyze_module():
  spec = importlib.util.spec_from_file_location("analyze_cli", os.path.join(REPO, "analyze.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _run(argv):
  """analyze.main in-process; returns the exit status (0 or SystemExit's code).

  ``--malloc=system`` unless given: the allocator setting would outlive the test.
  """
  argv = list(argv) + ([] if any(a.startswith("--malloc") for a in argv) else
                       ["--malloc=system"])
  try:
    return _analyze_module().main(["analyze.py"] + argv)
  except SystemExit as e:
    return e.code


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  """A DCGAN trained for 2 steps on 16 px thorax phantoms (tiny channels)."""
  from jaxlatent.training import train_and_evaluate
  sys.path.insert(0, REPO)
  from configs import dcgan_tiny  # pylint: disable=g-import-not-at-top
  c = complete_train_config(dcgan_tiny.get_config())
  c.image_size, c.batch_size, c.steps = 16, 8, 2
  c.data.num_images = 64
  c.model.gen_channels = c.model.disc_channels = c.model.max_channels = 16
  c.ckpt_every = c.sample_every = c.log_every = 2
  c.num_samples, c.fid_every = 4, 0
  path = str(tmp_path_factory.mktemp("dcgan16"))
  train_and_evaluate(c, path)
  return path


def test_analyze_writes_report_and_reuses_stages(workdir, tmp_path, capsys):
  out = str(tmp_path / "report")
  argv = ["--config=" + os.path.join(REPO, "configs", "analyze_ct_tiny.py"),
          f"--workdir={workdir}", f"--out={out}"] + TINY
  assert _run(argv) == 0
  assert os.path.isfile(os.path.join(out, "index.html"))
  html = open(os.path.join(out, "index.html")).read()
  assert "missing figure" not in html
  for name in ("samples.png", "traversal_voynov.png", "traversal_sefa.png",
               "traversal_ganspace.png", "rca_curve.png", "inversion.png", "traversal.gif"):
    assert os.path.isfile(os.path.join(out, name)), name
    assert name in html, name
  for prefix in ("sequence_sefa-", "eigenvectors_sefa-", "components_sefa-"):
    assert any(f.startswith(prefix) and f.endswith(".png") for f in os.listdir(out)), prefix
  # The inversion figure: 3 rows (target / reconstruction / error), 16 px tiles shown 6x.
  assert read_png(os.path.join(out, "inversion.png")).shape[0] == 3 * 96 + 4 * 2

  metrics = json.load(open(os.path.join(out, "metrics.json")))
  inv = metrics["inversion"]
  assert inv["num_images"] == 8 and math.isfinite(inv["error_mean"])
  assert inv["error_std"] >= 0
  saved = np.load(os.path.join(out, "inversion", "latents.npz"))
  np.testing.assert_allclose(saved["errors"].mean(), inv["error_mean"], rtol=1e-5)
  assert saved["latents"].shape == (8, 32) and len(set(saved["subject_id"].tolist())) == 1
  eig = metrics["eigen"]
  assert eig and all(0.0 <= v["abs_corr_v2_alpha_mean"] <= 1.0 + 1e-6 for v in eig.values())
  assert all(math.isfinite(v["explained_c1"]) for v in eig.values())
  for v in eig.values():  # components 1-4 against the schedule's polynomials: |cosines|
    assert len(v["polynomial_match_mean"]) == 4
    assert all(0.0 <= p <= 1.0 + 1e-5 for p in v["polynomial_match_mean"])
  assert 0.0 <= metrics["voynov"]["rca"] <= 1.0
  assert 0.0 <= metrics["sefa"]["alignment"]["mean_score"] <= 1.0

  # Directions saved as .npz + .json, unit norm, the latent's shape.
  for method in ("voynov", "sefa", "ganspace"):
    d = load_directions(os.path.join(out, "directions", f"{method}_directions"))
    assert d.vectors.shape == (4, 32)
    np.testing.assert_allclose(np.linalg.norm(d.flat(), axis=1), 1.0, atol=1e-5)
    # Thorax phantoms: scored against the known factors (a collapsed Voynov run is not).
    assert ("alignment_rows" in d.meta) != d.collapsed

  # Per-subject NIfTI maps: [H, W, slices, K], identity affine for phantoms.
  files = sorted(os.listdir(os.path.join(out, "nifti")))
  comp = [f for f in files if f.endswith("_components.nii.gz")]
  assert comp and any(f.endswith("_subtraction.nii.gz") for f in files)
  img = nib.load(os.path.join(out, "nifti", comp[0]))
  assert img.shape[:2] == (16, 16) and img.shape[3] == 4
  np.testing.assert_allclose(img.affine, np.eye(4))

  # A second run into the same folder re-uses the directions and the inverted codes.
  capsys.readouterr()
  assert _run(argv) == 0
  log = capsys.readouterr().out
  assert "voynov: re-using" in log and "inversion: re-using" in log


def _one_error_line(capsys):
  err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
  assert len(err) == 1
  return err[0]


def test_missing_workdir_exits_2(tmp_path, capsys):
  missing = str(tmp_path / "nope")
  assert _run(["--config=" + os.path.join(REPO, "configs", "analyze_ct_tiny.py"),
               f"--workdir={missing}"]) == 2
  assert "nope" in _one_error_line(capsys)


def test_workdir_without_checkpoint_exits_2(workdir, tmp_path, capsys):
  empty = tmp_path / "run"
  empty.mkdir()
  (empty / "config.json").write_text(open(os.path.join(workdir, "config.json")).read())
  assert _run(["--config=" + os.path.join(REPO, "configs", "analyze_ct_tiny.py"),
               f"--workdir={empty}"]) == 2
  line = _one_error_line(capsys)
  assert "checkpoint" in line and str(empty) in line


def test_bad_config_exits_2(workdir, capsys):
  cfg = "--config=" + os.path.join(REPO, "configs", "analyze_ct_tiny.py")
  assert _run([cfg, f"--workdir={workdir}", "--config.voynov.stepz=3"]) == 2
  assert "stepz" in _one_error_line(capsys)
  assert _run([cfg, f"--workdir={workdir}", "--config.methods=('pca',)"]) == 2
  assert "pca" in _one_error_line(capsys)
  assert _run([cfg, f"--workdir={workdir}", "--malloc=lots"]) == 2
  assert "--malloc='lots': expected one of ('retain', 'system')" in _one_error_line(capsys)


def test_cli_subprocess_one_line_error(tmp_path):
  """The real command line: status 2 and one ``error:`` line, no traceback."""
  proc = subprocess.run(
      [sys.executable, os.path.join(REPO, "analyze.py"),
       "--config=" + os.path.join(REPO, "configs", "analyze_ct_tiny.py"),
       f"--workdir={tmp_path / 'missing'}"], capture_output=True, text=True, timeout=300)
  assert proc.returncode == 2
  lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
  assert lines[-1].startswith("error:") and "Traceback" not in proc.stderr


def test_task_configs_route_to_their_study_and_need_out(tmp_path, capsys):
  """configs with ``task`` run a study over the runs they name, writing into --out."""
  cfg = "--config=" + os.path.join(REPO, "configs", "compare_edits_tiny.py")
  assert _run([cfg]) == 2
  assert "--out" in _one_error_line(capsys)
  # Routed to the edit comparison: its own check names the missing run's field.
  missing = str(tmp_path / "no_run")
  assert _run([cfg, f"--out={tmp_path / 'cmp'}", f"--config.brain.ifcvae_gan={missing}"]) == 2
  line = _one_error_line(capsys)
  assert "brain.ifcvae_gan" in line and "no_run" in line
  assert not (tmp_path / "cmp" / "edit_comparison.md").exists()
  assert _run(["--config=" + os.path.join(REPO, "configs", "label_fraction_brain_tiny.py"),
               f"--out={tmp_path / 'lf'}", "--config.task=fit"]) == 2
  assert "task='fit'" in _one_error_line(capsys)
