"""run_edit_comparison: one table of attribute edits, same subjects per kind, user errors.

Workdirs: each model (IFcVAE-GAN, SS-DAAE, StyleGAN2, DCGAN) is its trainer's initial
state written with the real checkpointer and run config (``_write_init_run``), so
``load_trained`` reads it like any train.py workdir without compiling a train step
(tests/test_analyze_cli.py covers train.py -> load_trained).  Direction files are
written by hand (``_write_directions``): an InterFaceGAN-style HC->MS direction with an
alpha unit for the StyleGAN, and three DCGAN directions whose factor-alignment rows come
from a hand-set slope matrix through the real ``AlignmentResult.rows`` / ``apply_to``.
The score functions themselves (an oracle edit scoring 1) are tested in
tests/test_attr_models.py.
"""

from __future__ import annotations

import json
import math
import os
import sys

import jax
import ml_collections
import numpy as np
import pytest

from jaxlatent.studies import config as study_config
from jaxlatent.training import complete_train_config
from jaxlatent.studies import edit_comparison as ec
from jaxlatent.directions import AlignmentResult, Directions, save_directions
from jaxlatent.errors import ConfigError
from jaxlatent.viz.grids import read_png

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
S = 16
THORAX_FACTORS = ["rotation", "body_width", "breast_size", "lung_size", "heart_size"]


def _tiny_config(name: str):
  """configs/<name>.py at 16 px with tiny channels (the config files' own fields)."""
  sys.path.insert(0, REPO)
  import importlib  # pylint: disable=g-import-not-at-top
  c = complete_train_config(importlib.import_module(f"configs.{name}").get_config())
  c.image_size, c.batch_size = S, 8
  c.data.num_images = 64
  c.ckpt_every = c.sample_every = c.log_every = 2
  c.num_samples, c.fid_every = 4, 0
  m = c.model
  if m.name in ("ifcvae_gan", "ssdaae"):
    m.channels = m.max_channels = 16
    m.num_res_blocks, m.z_dim = 0, 8
    if m.name == "ifcvae_gan":
      m.disc_channels, m.aux_hidden = 16, (16,)
    else:
      m.disc_hidden = (16,)
  elif m.name == "stylegan2":
    m.latent_dim = m.w_dim = 16
    m.num_mapping_layers, m.channel_base, m.channel_max = 1, 256, 16
  else:  # dcgan
    m.gen_channels = m.disc_channels = m.max_channels = 16
  return c


def _write_init_run(path: str, config, state=None):
  """A train.py workdir holding the trainer's initial state (or ``state``) as checkpoint 0.

  Returns (path, state).
  """
  from jaxlatent.training.checkpoint import CHECKPOINT_DIR, Checkpointer, save_run_config  # pylint: disable=g-import-not-at-top
  from jaxlatent.training.trainers import make_trainer  # pylint: disable=g-import-not-at-top
  os.makedirs(path, exist_ok=True)
  if state is None:
    state = jax.jit(make_trainer(config).init)(jax.random.PRNGKey(int(config.seed)))
  save_run_config(path, config)
  ckpt = Checkpointer(os.path.join(path, CHECKPOINT_DIR), keep=1)
  ckpt.save(0, state)
  ckpt.wait()
  ckpt.close()
  return path, state


def _thorax_alignment_meta(directions: Directions, slopes: np.ndarray) -> Directions:
  """``directions`` named and annotated as studies.analysis.align_or_load does, from ``slopes``."""
  imp = np.abs(slopes)
  score = imp.max(1) / imp.sum(1)
  best = imp.argmax(1)
  names = [THORAX_FACTORS[b] if s >= 0.5 else n
           for b, s, n in zip(best, score, directions.names)]
  res = AlignmentResult(slopes=slopes, slope_std=np.zeros_like(slopes), r2=np.ones_like(slopes),
                        best_factor=best, score=score, total_change=imp.max(1) * 12.0,
                        names=names, factor_names=THORAX_FACTORS,
                        direction_names=list(directions.names), summary={"mean_score": 0.5})
  named = res.apply_to(directions)
  named.meta = dict(named.meta, alignment_rows=res.rows(), alignment_summary=res.summary)
  return named


# Direction 0: rotation; 1: breast_size (named, the factor DEcreases along +d);
# 2: breast_size best but below the naming threshold.
SLOPES = np.array([[0.9, 0.05, 0.05, 0.0, 0.0],
                   [0.1, 0.0, -0.8, 0.05, 0.05],
                   [0.3, 0.0, 0.35, 0.2, 0.15]])


def _write_directions(dcgan_dir: str, stylegan_dir: str) -> None:
  rng = np.random.default_rng(0)
  d = Directions(rng.normal(size=(3, 32)).astype(np.float32), "voynov", model="dcgan")
  save_directions(os.path.join(dcgan_dir, "report", "directions", "voynov_directions"),
                  _thorax_alignment_meta(d, SLOPES))
  ifg = Directions(rng.normal(size=(1, 16)).astype(np.float32), "interfacegan",
                   model="stylegan2", space="w", names=["HC->MS"],
                   meta={"alpha_unit": 0.05, "class_separation": 1.25})
  save_directions(os.path.join(stylegan_dir, "report", "directions", "interfacegan_directions"),
                  ifg)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("runs"))
  p = lambda name: os.path.join(root, name)
  ssdaae = _tiny_config("ssdaae_brain_tiny")
  ssdaae.image_size = 32  # another size: subjects are rendered at 16 and 32 px
  ifc_brain, ifc_state = _write_init_run(p("ifcvae_brain"), _tiny_config("ifcvae_brain_tiny"))
  out = {
      "dcgan": _write_init_run(p("dcgan_ct"), _tiny_config("dcgan_tiny"))[0],
      "ifc_brain": ifc_brain,
      "ssdaae": _write_init_run(p("ssdaae_brain"), ssdaae)[0],
      "stylegan": _write_init_run(p("stylegan_brain"), _tiny_config("stylegan_tiny"))[0],
      # Same architecture as the brain model: its initial weights, the thorax run config.
      "ifc_thorax": _write_init_run(p("ifcvae_thorax"), _tiny_config("ifcvae_thorax_tiny"),
                                    ifc_state)[0],
  }
  _write_directions(out["dcgan"], out["stylegan"])
  return out


def _config(runs, **over):
  """configs/compare_edits_tiny.py pointed at the test runs, every loop cut short."""
  sys.path.insert(0, REPO)
  from configs import compare_edits_tiny  # pylint: disable=g-import-not-at-top
  c = compare_edits_tiny.get_config()
  c.steps = 4
  c.subjects.num_subjects = 2
  c.brain.ifcvae_gan, c.brain.ssdaae = runs["ifc_brain"], runs["ssdaae"]
  c.brain.stylegan = runs["stylegan"]
  c.thorax.ifcvae_gan, c.thorax.dcgan = runs["ifc_thorax"], runs["dcgan"]
  for kind in ("brain", "thorax"):
    c[kind].inversion.steps, c[kind].inversion.restarts = 3, 1
    c[kind].inversion.w_avg_samples = 64
  for dotted, v in over.items():
    node = c
    *parents, leaf = dotted.split("__")
    for k in parents:
      node = node[k]
    node[leaf] = v
  return c


def test_one_table_same_subjects_every_model(runs, tmp_path, capsys):
  out = tmp_path / "cmp"
  out.mkdir()
  (out / "notes.txt").write_text("mine")  # an unrelated file: left alone
  path = ec.run_edit_comparison(_config(runs), str(out))
  printed = capsys.readouterr().out
  assert path == str(out / "edit_comparison.md")
  # .lock: the folder's lock file (emptied when the run ended), see jaxlatent.workdir_lock.
  assert sorted(os.listdir(out)) == [".lock", "edit_comparison.json", "edit_comparison.md",
                                     "edit_comparison_brain.png", "edit_comparison_thorax.png",
                                     "notes.txt"]
  assert (out / "notes.txt").read_text() == "mine"
  rec = json.loads((out / "edit_comparison.json").read_text())
  rows = rec["rows"]
  assert [(r["kind"], r["model"]) for r in rows] == [
      ("brain", "ifcvae_gan"), ("brain", "ssdaae"), ("brain", "stylegan2"),
      ("thorax", "ifcvae_gan"), ("thorax", "dcgan")]
  # Same subjects in every row of a kind (also across the 16 and 32 px models).
  for kind in ("brain", "thorax"):
    ids = rec["subjects"][kind]["subject_ids"]
    assert len(ids) == 2 and all(r["subject_ids"] == ids for r in rows if r["kind"] == kind)
  assert rec["subjects"]["brain"]["image_sizes"] == [16, 32]
  assert rec["subjects"]["thorax"]["mean_factor_change"] == {"breast_size": pytest.approx(0.9)}
  for r in rows:
    ps = r["per_subject"]
    for k in ("edit_corr", "component2_corr", "edit_magnitude", "reconstruction_mse"):
      assert len(ps[k]) == 2 and all(v is not None and math.isfinite(v) for v in ps[k]), (r, k)
    assert all(-1.0 - 1e-6 <= v <= 1.0 + 1e-6 for v in ps["edit_corr"] + ps["component2_corr"])
    assert r["summary"]["edit_corr_mean"] == pytest.approx(np.mean(ps["edit_corr"]), abs=1e-6)
    assert len(r["schedule"]) == 4 and r["schedule"][0] == 0.0
    inverted = r["model"] in ("stylegan2", "dcgan")
    assert (ps["inversion_error"] is not None) == inverted
    if inverted:
      assert all(math.isfinite(v) and v >= 0 for v in ps["inversion_error"])
  # Attribute edits go from the subjects' class to the target class in the label ids of
  # the training data (HC 0 -> MS 1; large_breast 0 -> 1); SS-DAAE's y is one-hot.
  edits = {(r["kind"], r["model"]): r.get("edit") for r in rows}
  assert edits[("brain", "ifcvae_gan")]["y_from"] == [0.0]
  assert edits[("brain", "ifcvae_gan")]["y_to"] == [1.0]
  assert edits[("brain", "ssdaae")]["y_from"] == [1.0, 0.0]
  assert edits[("brain", "ssdaae")]["y_to"] == [0.0, 1.0]
  assert edits[("thorax", "ifcvae_gan")]["y_to"] == [1.0]
  # StyleGAN: alpha 0..50 in the file's alpha units; DCGAN: the named breast_size
  # direction (index 1), flipped because breast_size decreases along it.
  sg = rows[2]["direction"]
  assert sg["alpha_unit"] == 0.05 and sg["sign"] == 1.0 and rows[2]["schedule"][-1] == 50.0
  dc = rows[4]["direction"]
  assert (dc["index"], dc["sign"], dc["name"]) == (1, -1.0, "breast_size")
  assert rows[4]["schedule"][-1] == 18.0
  # THE table: one row per model, grouped by kind, also printed.
  table = rec["table"]
  assert [t["phantom"] for t in table] == ["brain"] * 3 + ["thorax"] * 2
  md = (out / "edit_comparison.md").read_text()
  assert md.count("| brain |") == 3 and md.count("| thorax |") == 2
  for t in table:
    assert t["method"] in md and t["method"] in printed
  assert "inversion" in table[2]["recon MSE"] and "encode" in table[0]["recon MSE"]
  # Figures: a labelled row per model (brain 3 rows, thorax 2), same 5 columns.
  brain_png = read_png(str(out / "edit_comparison_brain.png"))
  thorax_png = read_png(str(out / "edit_comparison_thorax.png"))
  assert brain_png.shape[1] == thorax_png.shape[1] and brain_png.shape[0] > thorax_png.shape[0]
  assert rec["figures"] == {"brain": "edit_comparison_brain.png",
                            "thorax": "edit_comparison_thorax.png"}


def test_label_ids_match_the_data_pipeline(tmp_path):
  """EDIT_LABELS' class ids are those the training data gives (SliceDataset.label_ids)."""
  from jaxlatent.data import load_dataset  # pylint: disable=g-import-not-at-top
  from jaxlatent.data.config import default_data_config  # pylint: disable=g-import-not-at-top
  for (kind, column), (y_from, y_to, _) in study_config.EDIT_LABELS.items():
    d = default_data_config()
    d.source, d.num_images, d.label_column = f"phantom_{kind}", 128, column
    d.modality = "mr" if kind == "brain" else "ct"
    ds = load_dataset(d, S, str(tmp_path / f"{kind}_{column}"))
    ids, classes = ds.label_ids(column)
    values = np.asarray(ds.labels[column])
    if kind == "brain":  # HC -> MS
      assert classes[y_from] == "HC" and classes[y_to] == "MS"
    elif column == "group":  # male -> female
      assert classes[y_from] == "M" and classes[y_to] == "F"
    else:  # large_breast = breast_size > 0.6: 0 -> 1
      large = ds.factors["breast_size"] > 0.6
      assert set(ids[large].tolist()) == {y_to} and set(ids[~large].tolist()) == {y_from}
    assert set(np.unique(ids).tolist()) == {y_from, y_to}, (kind, column, values[:4])


def test_select_aligned_direction():
  d = _thorax_alignment_meta(Directions(np.eye(3, 32, dtype=np.float32), "sefa"), SLOPES)
  assert ec.select_aligned_direction(d, "breast_size")[:2] == (1, -1.0)
  assert ec.select_aligned_direction(d, "rotation")[:2] == (0, 1.0)
  with pytest.raises(ConfigError, match=r"no sefa direction has 'heart_size'.*d0: best "
                                        r"rotation"):
    ec.select_aligned_direction(d, "heart_size", "config.thorax.dcgan_directions")
  with pytest.raises(ConfigError, match="no factor 'noise'.*breast_size"):
    ec.select_aligned_direction(d, "noise")
  plain = Directions(np.eye(2, 32, dtype=np.float32), "voynov")
  with pytest.raises(ConfigError, match="no factor alignment"):
    ec.select_aligned_direction(plain, "breast_size")
  collapsed = Directions(np.eye(2, 32, dtype=np.float32), "voynov", meta={"collapsed": True})
  with pytest.raises(ConfigError, match="collapsed"):
    ec.select_aligned_direction(collapsed, "breast_size")


def test_user_errors_name_the_field_and_path(runs, tmp_path):
  out = str(tmp_path / "out")
  missing = str(tmp_path / "nope")
  cases = [
      ({"brain__ssdaae": missing}, r"config\.brain\.ssdaae=.*nope.*does not exist"),
      ({"brain__stylegan": runs["dcgan"]},
       r"config\.brain\.stylegan=.*dcgan_ct.*'dcgan' run.*expected 'stylegan2'"),
      ({"brain__ifcvae_gan": runs["ifc_thorax"]},
       r"config\.brain\.ifcvae_gan=.*ifcvae_thorax.*'phantom_thorax'.*'phantom_brain'"),
      ({"thorax__dcgan": runs["stylegan"]}, r"config\.thorax\.dcgan=.*'stylegan2' run"),
      ({"brain__stylegan_directions": missing},
       r"config\.brain\.stylegan_directions: the directions file .*nope\.npz does not exist"),
      ({"thorax__dcgan_directions": os.path.join(
          runs["stylegan"], "report", "directions", "interfacegan_directions")},
       r"config\.thorax\.dcgan_directions.*directions in 'w'"),
      ({"thorax__factor": "heart_size"}, r"config\.thorax\.factor='heart_size'.*breast_size"),
      ({"brain__stylegan_space": "w+"}, r"in 'w', but config\.brain\.stylegan_space='w\+'"),
      ({"steps": 2}, r"config\.steps=2"),
  ]
  no_ckpt = tmp_path / "no_ckpt"
  no_ckpt.mkdir()
  (no_ckpt / "config.json").write_text(open(os.path.join(runs["ssdaae"], "config.json")).read())
  cases.append(({"brain__ssdaae": str(no_ckpt)}, r"config\.brain\.ssdaae=.*no checkpoints/"))
  for over, pattern in cases:
    with pytest.raises(ConfigError, match=pattern):
      ec.run_edit_comparison(_config(runs, **over), out)
  empty = _config(runs)
  for kind, fields in study_config.MODEL_FIELDS.items():
    for f in fields:
      empty[kind][f] = ""
  with pytest.raises(ConfigError, match="nothing to compare"):
    ec.run_edit_comparison(empty, out)
  assert not os.path.exists(out)  # every error is raised before anything is written


def test_config_files_take_flat_command_line_overrides():
  from jaxlatent.config_cli import parse_config_flags  # pylint: disable=g-import-not-at-top
  sys.path.insert(0, REPO)
  for name in ("compare_edits", "compare_edits_tiny"):
    c, _ = parse_config_flags([
        "analyze.py", f"--config={os.path.join(REPO, 'configs', name + '.py')}",
        "--config.brain.ssdaae=", "--config.thorax.dcgan=/x/dcgan",
        "--config.thorax.inversion.steps=7", "--config.subjects.num_subjects=4"],
        complete=study_config.complete_study_config)
    assert c.task == "compare_edits" and c.brain.ssdaae == "" and c.thorax.dcgan == "/x/dcgan"
    assert c.thorax.inversion.steps == 7 and c.subjects.num_subjects == 4
    assert c.brain.ifcvae_gan.startswith("runs/ifcvae_brain") and c.steps == 15
    assert (c.brain.alpha_stop, c.thorax.alpha_stop) == (50.0, 18.0)
    assert c.brain.inversion.learning_rate == 0.1  # the W projector of analyze_ms*.py
    study_config.validate_comparison_config(study_config.complete_comparison_config(c))


def test_partial_config_takes_defaults():
  c = ml_collections.ConfigDict({"brain": {"stylegan": "x"}, "steps": 5})
  full = study_config.complete_comparison_config(c)
  assert full.brain.stylegan == "x" and full.steps == 5 and full.thorax.factor == "breast_size"
  assert full.brain.inversion.learning_rate == 0.1 and full.task == "compare_edits"
