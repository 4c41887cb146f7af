"""validation/run.py lists a consistent study, and validation/collect.py reads its outputs."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from validation import collect, run, ship  # noqa: E402


def _literal(text):
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text  # a bare string such as proj


def _assert_overrides_reached(config, overrides):
  """Each ``key=value`` override reached ``config``, typed."""
  for o in overrides:
    key, value = o.split("=", 1)
    node = config
    for part in key.split(".")[:-1]:
      node = node[part]
    assert node[key.split(".")[-1]] == _literal(value), o


def test_every_stage_parses_with_its_overrides():
  stages = run.stages()
  assert len({s.name for s in stages}) == len(stages)
  assert len({s.folder for s in stages}) == len(stages)
  trains = {s.folder for s in stages if s.script == "train.py"}
  for s in stages:
    assert os.path.exists(os.path.join(ROOT, "configs", s.config.split(":")[0])), s.config
    if s.script == "analyze.py" and not s.workdir:  # a study over several runs
      argv = s.argv("/r")
      assert not any(a.startswith("--workdir") for a in argv)
      assert "--out=/r/" + s.folder in argv
      if ":" not in s.config:  # not a config that takes the runs folder
        _assert_overrides_reached(ship.effective_analysis_config(s), s.overrides)
      continue
    if s.script == "analyze.py":
      assert s.workdir in trains, s.name  # every analysis reads a run of the study
      config = ship.effective_analysis_config(s)
      assert set(config.methods) <= {"voynov", "sefa", "ganspace", "interfacegan"}
      _assert_overrides_reached(config, s.overrides)


def test_edit_comparison_reads_the_study_runs():
  """configs/validate_compare_edits.py, given the runs folder, points at the study's
  trainings and at the analyses whose directions it compares."""
  import importlib  # pylint: disable=g-import-not-at-top
  stage = {s.name: s for s in run.stages()}["compare_edits"]
  config_arg = next(a for a in stage.argv("/r") if a.startswith("--config="))
  assert config_arg.endswith("configs/validate_compare_edits.py:/r")
  c = importlib.import_module("configs.validate_compare_edits").get_config("/r")
  folders = {s.folder for s in run.stages()}
  for path in (c.brain.ifcvae_gan, c.brain.ssdaae, c.brain.stylegan, c.thorax.ifcvae_gan,
               c.thorax.dcgan):
    assert path.startswith("/r/") and path[3:] in folders, path
  assert c.brain.stylegan_directions.startswith("/r/stylegan_brain/ms/directions/")
  assert c.thorax.dcgan_directions.startswith("/r/dcgan_ct/proj_lenet_k100_s0/directions/")


def test_list_marks_done_stages(tmp_path):
  done = tmp_path / "dcgan_ct"
  done.mkdir()
  (done / "DONE").write_text("2026-01-01T00:00:00 10s\n")
  out = subprocess.run([sys.executable, os.path.join(ROOT, "validation", "run.py"),
                        f"--runs={tmp_path}", "--list", "--only=dcgan_ct/train,vae_ct/train"],
                       capture_output=True, text=True, check=True).stdout.splitlines()
  assert out[0].startswith("done    dcgan_ct/train")
  assert out[1].startswith("pending vae_ct/train")
  assert len(out) == 2


def _fake_analysis(folder, rows, rca):
  (folder / "directions").mkdir(parents=True)
  (folder / "DONE").write_text("2026-01-01T00:00:00 600s\n")
  (folder / "metrics.json").write_text(json.dumps(
      {"checkpoint_step": 8000, "methods": ["voynov"],
       "voynov": {"rca": rca, "chance": 0.01, "collapsed": False, "alignment": {}}}))
  (folder / "directions" / "voynov_directions.json").write_text(json.dumps(
      {"num_directions": len(rows), "meta": {"alignment_rows": rows,
                                              "regressor_val_r2": {"rotation": 0.98}}}))


def _row(d, factor, score):
  return {"direction": d, "best_factor": factor, "alignment": score, "r2": 0.9,
          "total_change": 2.0}


def test_collect_takes_the_best_direction_per_factor_over_variants(tmp_path):
  _fake_analysis(tmp_path / "dcgan_ct" / "proj_lenet_k100_s0",
                 [_row("d0", "rotation", 0.6), _row("d1", "rotation", 0.85),
                  _row("d2", "slice_position", 0.4)], rca=0.7)
  _fake_analysis(tmp_path / "dcgan_ct" / "ortho_lenet_k32_s0",
                 [_row("d5", "slice_position", 0.81)], rca=0.5)
  res = collect.collect(str(tmp_path))
  first = res["ct"]["dcgan_ct"]["proj_lenet_k100_s0"]["methods"]["voynov"]
  assert first["best"]["rotation"]["direction"] == "d1"
  assert res["ct"]["dcgan_ct"]["proj_resnet_k100_s0"] is None  # not run: pending
  table = collect.ct_table(res)
  assert "| dcgan_ct | rotation | 0.85 (proj_lenet_k100_s0, d1) |" in table
  assert "| dcgan_ct | slice_position | 0.81 (ortho_lenet_k32_s0, d5) |" in table
  assert "| dcgan_ct | body_width | none |" in table
  assert "| vae_ct | (analyses pending) |" in table
  voy = collect.voynov_table(res)
  assert "| dcgan_ct | proj_lenet_k100_s0 | 0.70 (0.010) | False | rotation |" in voy
  doc = tmp_path / "doc.md"
  doc.write_text("a\n<!-- results:ct -->\nold\n<!-- /results:ct -->\nb\n")
  collect.write_doc_tables(res, str(doc))
  text = doc.read_text()
  assert "old" not in text and "0.85 (proj_lenet_k100_s0, d1)" in text and text.endswith("b\n")


def _fake_inversion(folder, error_mean, error_std):
  folder.mkdir(parents=True)
  (folder / "DONE").write_text("2026-01-01T00:00:00 60s\n")
  (folder / "metrics.json").write_text(json.dumps(
      {"checkpoint_step": 8000, "methods": [],
       "inversion": {"num_images": 32, "error_mean": error_mean, "error_std": error_std}}))


def test_collect_compares_heldout_and_training_subject_inversions(tmp_path):
  _fake_inversion(tmp_path / "dcgan_ct" / "proj_lenet_k100_s0", 0.003, 0.001)
  _fake_inversion(tmp_path / "dcgan_ct" / run.TRAINING_SUBJECTS, 0.0025, 0.0005)
  _fake_inversion(tmp_path / "vae_ct" / "proj_lenet_k100_s0", 0.01, 0.002)
  res = collect.collect(str(tmp_path))
  table = collect.inversion_table(res)
  assert ("| dcgan_ct | 0.0030 +- 0.0010 (32) | 0.0025 +- 0.0005 (32) | 1.20 | <= 1.5 | yes |"
          in table)
  assert "| vae_ct | 0.0100 +- 0.0020 (32) | pending | n/a | <= 1.5 | n/a |" in table
  assert res["metric"] == {"dcgan_ct": None, "vae_ct": None}  # no regressor saved: no check


def test_collect_copies_the_figures_of_finished_brain_and_edit_stages(tmp_path):
  runs, figs = tmp_path / "runs", tmp_path / "figs"
  ms = runs / "stylegan_brain" / "ms"
  ms.mkdir(parents=True)
  (ms / "ground_truth.png").write_bytes(b"gt")
  (ms / "components_interfacegan-hc_to_ms.png").write_bytes(b"c")
  edits = runs / "compare_edits"
  edits.mkdir()
  (edits / "edit_comparison_brain.png").write_bytes(b"e")  # no DONE: still running
  assert collect.copy_run_figures(str(runs), str(figs)) == {}  # the MS stage has no DONE yet
  (ms / "DONE").write_text("")
  got = collect.copy_run_figures(str(runs), str(figs))
  assert sorted(got) == ["ms_components", "ms_ground_truth"]
  assert (figs / "ms_ground_truth.png").read_bytes() == b"gt"
  assert (figs / "ms_components.png").read_bytes() == b"c"
  assert not (figs / "edits_brain.png").exists()


def test_ms_table_reports_the_polynomial_series_next_to_the_ceiling():
  ceil = {"abs_corr_v2_alpha": {"mean": 0.99}, "component2_corr": {"mean": 0.94},
          "subtraction_corr": {"mean": 1.0}, "polynomial_match_mean": [0.999, 0.99, 0.97, 0.95]}
  ms = {"ground_truth": {"component2_corr_mean": 0.6, "component2_corr_std": 0.1,
                         "subtraction_corr_mean": 0.5, "subtraction_corr_std": 0.1},
        "interfacegan": {"val_balanced_accuracy": 0.8},
        "eigen": {"interfacegan/hc_to_ms": {"abs_corr_v2_alpha_mean": 0.995,
                                            "polynomial_match_mean": [0.98, 0.995, 0.7, 0.4]}}}
  table = collect.ms_table({"ms": ms, "ms_ceiling": {"exact": ceil, "fresh_noise": ceil}})
  assert ("| component 1 vs the schedule's constant (\\|cos\\|) | ~constant | 0.980 | "
          "0.999 / 0.999 | >= 0.99 | no |") in table
  assert "| component 3 vs the schedule's quadratic (\\|cos\\|) | polynomial series | 0.700 |" in table
  assert "| component-2 map vs true difference map (r) | maps the change | 0.60 +- 0.10 |" in table
  assert "not run yet" not in table
  assert "not run yet" in collect.ms_table({"ms": None, "ms_ceiling": {}})


def test_ms_directions_split_half_cosine():
  """Codes = subject identity + the class shift: the split-half cosine of class-mean
  directions is near 1 when the shift dominates the identities and near 0 when the
  identities swamp it (few subjects, many dimensions)."""
  from validation import ms_directions  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  u = np.eye(64)[0]
  subjects = np.repeat(np.arange(40), 4)
  labels = (subjects % 2).astype(int)
  identity = rng.normal(size=(40, 64))[subjects]
  strong = ms_directions._split_half_cos(identity + 20 * labels[:, None] * u, labels, subjects)
  weak = ms_directions._split_half_cos(identity + 0.1 * labels[:, None] * u, labels, subjects)
  assert strong > 0.9 and abs(weak) < 0.3, (strong, weak)


def _label_fraction_run(folder, rows):
  os.makedirs(folder)
  with open(os.path.join(folder, "label_fraction.json"), "w") as f:
    json.dump({"rows": [{"fraction": fr, "num_labelled": n, "accuracy": a, "chance": 0.5,
                         "supervised_accuracy": s} for fr, n, a, s in rows]}, f)
  open(os.path.join(folder, "DONE"), "w").close()


def test_label_fraction_restarts_table_gives_each_seed_and_the_spread(tmp_path):
  _label_fraction_run(str(tmp_path / "label_fraction"),
                      [(0.01, 45, 0.66, 0.70), (1.0, 4096, 0.82, 0.83)])
  _label_fraction_run(str(tmp_path / "label_fraction_s1"), [(0.01, 40, 0.72, 0.68)])
  res = collect.collect(str(tmp_path))
  assert res["label_fraction_restarts"]["2"] is None  # not run: no row, no error
  table = collect.label_fraction_restarts_table(res)
  assert "| 0.01 | 0 | 45 | 0.660 | 0.700 | -0.040 |" in table
  assert "| 0.01 | 1 | 40 | 0.720 | 0.680 | +0.040 |" in table
  # mean +- sample std over seeds 0 and 1: 0.690 +- 0.042, 0.690 +- 0.014, +0.000 +- 0.057
  assert "| 0.01 | mean +- std of 2 | | 0.690 +- 0.042 | 0.690 +- 0.014 | +0.000 +- 0.057 |" \
      in table, table
  assert not any(line.startswith("| 1 |") for line in table.splitlines())  # restarted only
  assert "not run yet" in collect.label_fraction_restarts_table({"label_fraction": None})


class _LinearRegressor:
  """A stand-in factor regressor: standardised predictions of a fixed linear map."""

  def __init__(self, weights, mean, std, r2):
    self.w, self.factor_mean, self.factor_std = np.asarray(weights), np.asarray(mean), np.asarray(std)
    self.factor_names, self.val_r2 = ["a", "b"], np.asarray(r2)

  def __call__(self, x):
    raw = np.asarray(x).reshape(len(x), -1) @ self.w
    return (raw - self.factor_mean) / self.factor_std


def test_regressor_ensemble_averages_raw_predictions_in_the_first_ones_units():
  from validation import ceiling  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  x = rng.normal(size=(5, 2, 2, 1)).astype(np.float32)
  r1 = _LinearRegressor(rng.normal(size=(4, 2)), [1.0, -2.0], [2.0, 0.5], [0.9, 0.3])
  r2 = _LinearRegressor(rng.normal(size=(4, 2)), [0.0, 3.0], [1.0, 4.0], [0.7, 0.5])
  ens = ceiling.RegressorEnsemble([r1, r2])
  raw = (x.reshape(5, -1) @ r1.w + x.reshape(5, -1) @ r2.w) / 2
  np.testing.assert_allclose(np.asarray(ens(x)), (raw - r1.factor_mean) / r1.factor_std,
                             rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(ens.val_r2, [0.8, 0.4])
  np.testing.assert_allclose(np.asarray(ceiling.RegressorEnsemble([r1, r1])(x)), r1(x),
                             rtol=1e-5, atol=1e-5)
  other = _LinearRegressor(r1.w, r1.factor_mean, r1.factor_std, r1.val_r2)
  other.factor_names = ["a", "c"]
  with pytest.raises(ValueError, match="same factors"):
    ceiling.RegressorEnsemble([r1, other])


def test_ensemble_table_sets_own_regressor_and_ensemble_scores_side_by_side():
  ceil = {f: {"alignment": 0.85} for f in collect.GOAL_FACTORS}
  ens_ceil = {f: {"alignment": 0.92} for f in collect.GOAL_FACTORS}
  best = {f: {"direction": "d3", "alignment_all": 0.7, "alignment_kept": 0.9}
          for f in collect.GOAL_FACTORS}
  res = {"metric": {"dcgan_ct": {"ceiling": ceil, "ensemble": {
             "members": ["s0", "s1"], "ceiling": ens_ceil,
             "restricted": {"s0": {"methods": {"voynov": best}},
                            "s1": {"methods": {"voynov": {"rotation": dict(
                                best["rotation"], direction="d9", alignment_all=0.75)}}}}}}},
         "ct": {"dcgan_ct": {"s0": {"methods": {"voynov": {"best": {
             "rotation": {"alignment": 0.6, "direction": "d1"}}}}}, "s1": None}}}
  table = collect.ensemble_table(res)
  assert "| dcgan_ct | rotation | 0.85 / 0.92 | 0.60 (s0) | 0.75 (s1, d9) | none | none |" \
      in table, table
  assert "| dcgan_ct | body_width | 0.85 / 0.92 | none | 0.70 (s0, d3) | none | none |" in table
  assert "| vae_ct | (fewer than two restarts finished) |" in table
  assert "regressors of s0, s1 (per model)" in table


def test_ms_directions_on_a_folder_without_an_ms_analysis_is_one_error(tmp_path, capsys):
  from validation import ms_directions  # pylint: disable=g-import-not-at-top
  (tmp_path / "inversion").mkdir()
  (tmp_path / "inversion" / "latents.npz").write_bytes(b"")
  assert ms_directions.main([f"--ms={tmp_path}"]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and str(tmp_path) in err[0], err
  assert "ground_truth_latents.npz" in err[0] and "interfacegan_directions.npz" in err[0]
  assert "inversion/latents.npz" not in err[0]  # present: not named
  assert not (tmp_path / "ms_directions.json").exists()
