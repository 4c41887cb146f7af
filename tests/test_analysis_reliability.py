"""analyze.py never mixes, corrupts or loses results: fingerprints, lock, early checks.

Two tiny DCGANs (same config, other seeds, initial weights saved as checkpoint 0)
stand for two models with the same latent shape.  Every test is a failing scenario of issue 21: another model's report folder,
a truncated ``latents.npz``, two runs on one ``--out``, and checks that used to fail
only after compute (or after creating folders).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

from cli_runs import run_analyze as _run
from jaxlatent.training import complete_train_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = "--config=" + os.path.join(REPO, "configs", "analyze_ct_tiny.py")
# SeFa only (closed form), no factor regressor, a few inversion steps: the stages that
# are re-used, at the least compute.
TINY = [
    "--config.methods=('sefa',)", "--config.sefa_components=4",
    "--config.alignment.enabled=False", "--config.images.num_images=16",
    "--config.images.max_subjects=1", "--config.inversion.steps=5",
    "--config.inversion.restarts=1", "--config.traversal.alpha_num=5",
    "--config.traversal.directions_per_method=1", "--config.traversal.max_subjects=1",
    "--config.report.num_samples=4", "--config.report.grid_directions=2",
    "--malloc=system",
]


def _hashes(folder) -> dict[str, str]:
  """sha256 of every file under ``folder`` (hidden ones included), by relative path."""
  out = {}
  for root, dirs, files in os.walk(folder):
    for name in dirs:
      out[os.path.relpath(os.path.join(root, name), folder) + "/"] = ""
    for name in files:
      p = os.path.join(root, name)
      with open(p, "rb") as f:
        out[os.path.relpath(p, folder)] = hashlib.sha256(f.read()).hexdigest()
  return out


def _error_lines(capsys):
  return [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]


def _init_run(path: str, seed: int) -> str:
  """A train.py workdir whose checkpoint 0 is the tiny DCGAN's initial state (no step run)."""
  import jax  # pylint: disable=g-import-not-at-top
  from jaxlatent.training.checkpoint import CHECKPOINT_DIR, Checkpointer, save_run_config
  from jaxlatent.training.trainers import make_trainer
  sys.path.insert(0, REPO)
  from configs import dcgan_tiny  # pylint: disable=g-import-not-at-top
  c = complete_train_config(dcgan_tiny.get_config())
  c.image_size, c.batch_size, c.seed = 16, 8, seed
  # Schön's initial weights (N(0, 0.02) convs) render near-constant images, which two
  # seeds cannot tell apart by inversion error; the resample layers' init can.
  c.model.arch = "resample"
  c.data.num_images = 16
  c.model.gen_channels = c.model.disc_channels = c.model.max_channels = 8
  os.makedirs(path)
  save_run_config(path, c)
  ckpt = Checkpointer(os.path.join(path, CHECKPOINT_DIR), keep=1)
  ckpt.save(0, jax.jit(make_trainer(c).init)(jax.random.PRNGKey(seed)))
  ckpt.wait()
  ckpt.close()
  return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """Two tiny DCGANs with the same latent shape (initial weights of seeds 0 and 1)."""
  root = tmp_path_factory.mktemp("models")
  return {"a": _init_run(str(root / "a"), 0), "b": _init_run(str(root / "b"), 1)}


@pytest.fixture(scope="module")
def report_a(runs, tmp_path_factory):
  """Model A analysed into a fresh folder: (folder, metrics.json)."""
  out = str(tmp_path_factory.mktemp("report_a") / "out")
  assert _run([CONFIG, f"--workdir={runs['a']}", f"--out={out}"] + TINY) == 0
  with open(os.path.join(out, "metrics.json")) as f:
    return out, json.load(f)


def test_other_models_report_folder_is_recomputed_not_reused(runs, report_a, tmp_path, capsys):
  """issue 21.3: --out=<report of B> for model A reported B's inversion error."""
  _, metrics_a = report_a
  out = str(tmp_path / "report_b")
  assert _run([CONFIG, f"--workdir={runs['b']}", f"--out={out}"] + TINY) == 0
  with open(os.path.join(out, "metrics.json")) as f:
    error_b = json.load(f)["inversion"]["error_mean"]
  assert error_b != pytest.approx(metrics_a["inversion"]["error_mean"], rel=1e-3)
  before = _hashes(out)

  # Refused on request: one line naming the file and why, nothing changed.
  capsys.readouterr()
  assert _run([CONFIG, f"--workdir={runs['a']}", f"--out={out}",
               "--config.cache_mismatch=error"] + TINY) == 2
  err = _error_lines(capsys)
  assert len(err) == 1 and "sefa_directions.npz" in err[0], err
  assert "another generator" in err[0] and "cache_mismatch" in err[0]
  assert _hashes(out) == before

  # By default: recomputed with a log line per stage, and A's own figures reported.
  assert _run([CONFIG, f"--workdir={runs['a']}", f"--out={out}"] + TINY) == 0
  log = capsys.readouterr().out
  assert "sefa: not re-using" in log and "inversion: not re-using" in log
  assert "made by another generator" in log
  assert "re-using" not in log.replace("not re-using", "")
  with open(os.path.join(out, "metrics.json")) as f:
    inv = json.load(f)["inversion"]
  np.testing.assert_allclose(inv["error_mean"], metrics_a["inversion"]["error_mean"], rtol=1e-5)
  with open(os.path.join(out, "inversion", "latents.json")) as f:
    side = json.load(f)
  with open(os.path.join(report_a[0], "inversion", "latents.json")) as f:
    assert side["fingerprint"] == json.load(f)["fingerprint"]
  assert side["fingerprint"]["generator"]["checkpoint_step"] == 0


def test_truncated_latents_and_directions_are_recomputed(runs, report_a, tmp_path, capsys):
  """A kill mid-write used to leave a truncated latents.npz: a traceback on the next run."""
  out = str(tmp_path / "out")
  shutil.copytree(report_a[0], out)
  for name in ("inversion/latents.npz", "directions/sefa_directions.npz"):
    path = os.path.join(out, name)
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
      f.truncate(size // 2)
  capsys.readouterr()
  assert _run([CONFIG, f"--workdir={runs['a']}", f"--out={out}"] + TINY) == 0
  log = capsys.readouterr().out
  assert "inversion: not re-using" in log and "checksum" in log
  assert "sefa: not re-using" in log and "cannot read" in log
  with open(os.path.join(out, "metrics.json")) as f:
    inv = json.load(f)["inversion"]
  np.testing.assert_allclose(inv["error_mean"], report_a[1]["inversion"]["error_mean"],
                             rtol=1e-5)
  with np.load(os.path.join(out, "inversion", "latents.npz")) as f:
    assert f["latents"].shape == (8, 32)
  # Intact now: the next run re-uses both.
  assert _run([CONFIG, f"--workdir={runs['a']}", f"--out={out}"] + TINY) == 0
  log = capsys.readouterr().out
  assert "inversion: re-using" in log and "sefa: re-using" in log


def test_second_run_on_the_same_out_gets_the_lock_error(runs, tmp_path, capsys):
  """Another process holds --out's lock: one error line naming it, nothing written."""
  out = tmp_path / "out"
  out.mkdir()
  holder = subprocess.Popen(
      [sys.executable, "-c",
       "import sys, time\n"
       "from jaxlatent.workdir_lock import hold_workdir_lock\n"
       "with hold_workdir_lock(sys.argv[1], 'analysis output folder (--out)'):\n"
       "  print('locked', flush=True)\n"
       "  time.sleep(120)\n", str(out)],
      stdout=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=REPO))
  try:
    assert holder.stdout.readline().strip() == "locked"
    before = _hashes(out)
    capsys.readouterr()
    assert _run([CONFIG, f"--workdir={runs['a']}", f"--out={out}"] + TINY) == 2
    err = _error_lines(capsys)
    assert len(err) == 1 and f"pid {holder.pid}" in err[0] and "in use" in err[0], err
    assert _hashes(out) == before
  finally:
    holder.kill()
    holder.wait()


def _nifti_folder(path, ids):
  os.makedirs(path)
  rng = np.random.default_rng(0)
  for sid in ids:
    vol = rng.uniform(0, 100, (16, 16, 3)).astype(np.float32)
    nib.save(nib.Nifti1Image(vol, np.eye(4)), os.path.join(path, f"{sid}.nii.gz"))


@pytest.mark.parametrize("case", [
    "images_path", "num_directions", "n_components", "one_class", "wrong_classes",
    "label_rows", "out_file", "missing_workdir", "classifier", "held_out"])
def test_late_checks_fail_before_any_write(case, runs, tmp_path, capsys):
  """Each check that used to fail after compute (or after creating folders) now fails
  first: exit 2, one line naming the key, no file written anywhere."""
  out = tmp_path / "out"
  workdir = runs["a"]
  extra = []
  if case == "images_path":
    extra = ["--config.images.source=nifti", f"--config.images.path={tmp_path / 'nope'}"]
    expect = ["config.images.path", "nope", "does not exist"]
  elif case == "num_directions":
    extra = ["--config.methods=('sefa', 'voynov')", "--config.voynov.num_directions=0"]
    expect = ["config.voynov", "num_directions", ">= 2"]
  elif case == "n_components":
    extra = ["--config.traversal.n_components=6"]
    expect = ["config.traversal.n_components=6", "alpha_num=5"]
  elif case == "one_class":  # one held-out thorax subject: one sex only
    extra = ["--config.methods=('interfacegan',)", "--config.supervised.negative=F",
             "--config.supervised.positive=M"]
    expect = ["config.supervised.label_column='group'", "negative='F'", "positive='M'",
              "found {'"]
  elif case == "wrong_classes":  # thorax phantoms have no HC / MS
    extra = ["--config.methods=('interfacegan',)", "--config.images.max_subjects=0"]
    expect = ["config.supervised.label_column='group'", "negative='HC'", "positive='MS'",
              "found {'"]
  elif case == "label_rows":
    data = tmp_path / "scans"
    _nifti_folder(str(data), ["s1"])
    (tmp_path / "labels.csv").write_text("subject_id,group\ns1,HC\ns2,MS\ns3,MS\n")
    extra = ["--config.images.source=nifti", f"--config.images.path={data}",
             f"--config.images.labels_csv={tmp_path / 'labels.csv'}"]
    expect = ["config.images.labels_csv", "['s2', 's3']", "no image"]
  elif case == "classifier":
    extra = ["--config.methods=('interfacegan',)", "--config.supervised.classifier=lda"]
    expect = ["config.supervised.classifier='lda'", "'mean_difference'"]
  elif case == "held_out":
    extra = ["--config.methods=('interfacegan',)", "--config.supervised.held_out=slices"]
    expect = ["config.supervised.held_out='slices'", "'subjects' or 'codes'"]
  elif case == "out_file":
    out.write_text("not a folder")
    expect = [str(out), "regular file"]
  else:
    workdir = str(tmp_path / "no_run")
    expect = ["no_run"]
  tree_before, run_before = _hashes(tmp_path), _hashes(runs["a"])
  capsys.readouterr()
  assert _run([CONFIG, f"--workdir={workdir}", f"--out={out}"] + TINY + extra) == 2
  captured = capsys.readouterr()
  err = [ln for ln in captured.err.splitlines() if ln.startswith("error:")]
  assert len(err) == 1 and "Traceback" not in captured.err, captured.err
  for text in expect:
    assert text in err[0], (text, err[0])
  assert _hashes(tmp_path) == tree_before and _hashes(runs["a"]) == run_before
  assert "discovering" not in captured.out and "inverting" not in captured.out


def test_missing_workdir_without_out_creates_nothing(tmp_path, capsys):
  """Without --out the default report folder lies in the workdir: not created either."""
  assert _run([CONFIG, f"--workdir={tmp_path / 'run'}"] + TINY) == 2
  assert "run" in _error_lines(capsys)[0]
  assert os.listdir(tmp_path) == []


def test_mismatch_log_names_what_differs():
  """The log names the settings that differ (not only 'another generator')."""
  from jaxlatent.studies import fingerprint as fp
  gen = {"model": "dcgan", "checkpoint_step": 4, "params_sha256": "x", "config_sha256": "y"}
  stored = fp.artifact_fingerprint(gen, inversion={"steps": 5, "lr": 0.1}, seed=0)
  expected = fp.artifact_fingerprint(gen, inversion={"steps": 9, "lr": 0.1}, seed=0)
  lines = []
  assert not fp.reuse_decision("inversion", "x.npz", stored, expected, "recompute", lines.append)
  assert lines == ["inversion: not re-using x.npz: it was made with other settings: "
                   "inversion.steps; recomputing"]
  later = fp.artifact_fingerprint(dict(gen, checkpoint_step=8), inversion={"steps": 5,
                                                                           "lr": 0.1}, seed=0)
  assert "another checkpoint (step 4, this run 8)" in fp.describe_differences(stored, later)
  assert fp.reuse_decision("inversion", "x.npz", stored, json.loads(json.dumps(stored)),
                           "recompute", lines.append)
  assert lines[-1] == "inversion: re-using x.npz"


def test_edit_comparison_refuses_another_models_directions(runs, report_a, tmp_path):
  """compare_edits reads a direction file analyze.py wrote: it must be the named run's."""
  from jaxlatent.directions import load_directions, save_directions
  from jaxlatent.errors import ConfigError
  from jaxlatent.studies import config as study_config
  from jaxlatent.studies import edit_comparison as ec
  out_b = str(tmp_path / "report_b")
  assert _run([CONFIG, f"--workdir={runs['b']}", f"--out={out_b}"] + TINY) == 0

  def with_rows(report, name):  # the factor alignment compare_edits needs (rows only)
    d = load_directions(os.path.join(report, "directions", "sefa_directions"))
    d.meta["alignment_rows"] = [
        {"direction": n, "name": n, "best_factor": "breast_size", "alignment": 0.9,
         "slope[breast_size]": 1.0} for n in d.names]
    return save_directions(str(tmp_path / name), d)[0][:-len(".npz")]

  for stem, refused in ((with_rows(report_a[0], "own"), False),
                        (with_rows(out_b, "other"), True)):
    c = study_config.complete_comparison_config(study_config.default_comparison_config())
    c.thorax.dcgan, c.thorax.dcgan_directions = runs["a"], stem
    (entry,) = ec.check_models(c)
    if refused:
      with pytest.raises(ConfigError, match="made by another generator, not by the run in "
                         "config.thorax.dcgan="):
        ec.load_model(entry, c)
    else:
      ec.load_model(entry, c)
      assert entry.directions.meta["fingerprint"]["generator"]["checkpoint_step"] == 0


def test_sefa_on_a_decoder_without_a_dense_z_layer_is_refused_before_compute():
  """Schön's VAE decoder takes z as a 1x1 image (no dense layer): SeFa's closed form has
  no weight to factorise, and the analysis says so before any discovery runs."""
  import types  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import ml_collections  # pylint: disable=g-import-not-at-top
  from jaxlatent.errors import ConfigError  # pylint: disable=g-import-not-at-top
  from jaxlatent.generator import from_flax  # pylint: disable=g-import-not-at-top
  from jaxlatent.models.vae import SchonDecoder  # pylint: disable=g-import-not-at-top
  from jaxlatent.studies.config import complete_analysis_config  # pylint: disable=g-import-not-at-top
  from jaxlatent.studies.preflight import preflight_analysis  # pylint: disable=g-import-not-at-top
  decoder = SchonDecoder(image_size=16, latent_dim=8, ch=4)
  variables = decoder.init(jax.random.PRNGKey(0), jnp.zeros((1, 8)))
  gen = from_flax(decoder, variables, (8,), (16, 16, 1), name="schon_vae")
  config = complete_analysis_config(ml_collections.ConfigDict(
      {"methods": ("sefa",), "sefa_components": 4}))
  trained = types.SimpleNamespace(generator=gen)
  with pytest.raises(ConfigError, match="no dense layer taking the 8-d z"):
    preflight_analysis(config, trained)
