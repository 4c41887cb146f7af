"""``python -m jaxlatent.demo --quick``: the MS path end to end with a few steps each.

Within the test budget: the CT path is the same ``run_analysis`` that
tests/test_analyze_cli.py runs through ``analyze.py``, so only the MS path runs here,
on a tiny DCGAN of brain phantoms (``--ms-model=dcgan``): the same InterFaceGAN /
eigen-analysis / ground-truth code as with StyleGAN, without StyleGAN's compile time
(StyleGAN projection is covered by tests/test_inversion_stylegan.py).
"""

from __future__ import annotations

import json
import math
import os
import sys

import numpy as np
import pytest

from jaxlatent import demo
from jaxlatent.errors import ConfigError


def test_demo_quick_ms_path(tmp_path, capsys, monkeypatch):
  out = str(tmp_path / "demo")
  # --malloc=system: 'retain' would outlive the test in this process.
  assert demo.main(["--out", out, "--quick", "--paths", "ms", "--ms-model", "dcgan",
                    "--malloc=system"]) == 0
  printed = capsys.readouterr().out
  ms_report = os.path.join(out, "ms_dcgan", "report", "index.html")
  assert ms_report in printed and os.path.isfile(ms_report)
  assert not os.path.exists(os.path.join(out, "ct_dcgan"))

  ms = json.load(open(os.path.join(out, "ms_dcgan", "report", "metrics.json")))
  gt = ms["ground_truth"]
  for k in ("component2_corr_mean", "subtraction_corr_mean"):
    assert gt[k] is not None and -1.0 <= gt[k] <= 1.0, k
  assert gt["change"]["ventricle_size"] > 0  # HC -> MS enlarges the ventricles
  sup = ms["interfacegan"]
  assert sup["num_labelled"]["HC"] >= 2 and sup["num_labelled"]["MS"] >= 2
  assert sup["alpha_unit"] > 0 and math.isfinite(sup["train_accuracy"])
  html = open(ms_report).read()
  assert "Ground truth on brain phantoms" in html and "component 2" in html

  timing = json.load(open(os.path.join(out, "demo_timing.json")))
  stages = [r["stage"] for r in timing["timing"]]
  assert stages[-1] == "total" and len(stages) == 3
  assert all(r["cpu_s"] >= 0 and r["wall_s"] >= 0 for r in timing["timing"])

  # Shipped as a pretrained model (validation/ship.py), the run reproduces its recorded
  # ground-truth scores from the shipped files alone, and the demo's pretrained MS path
  # analyses it with the shipped direction and codes (nothing is inverted again).
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  from validation import ship  # pylint: disable=g-import-not-at-top
  run_dir = os.path.join(out, "ms_dcgan")
  packed = ship.pack(run_dir, os.path.join(run_dir, "report"),
                     demo.ms_analysis_config("dcgan", True), str(tmp_path / "pt" / "ms64"),
                     {"name": "ms64"})
  recorded = json.load(open(os.path.join(packed, "recorded.json")))
  assert recorded["metrics"]["ground_truth"] == gt
  again = ship.recompute_ground_truth(packed)
  for k in ("component2_corr_mean", "subtraction_corr_mean"):
    np.testing.assert_allclose(again[k], gt[k], atol=1e-5)
  monkeypatch.setattr(demo, "PRETRAINED_MS", "ms64")
  monkeypatch.setattr(demo, "pretrained_folder", lambda name: str(tmp_path / "pt" / name))
  capsys.readouterr()
  result = demo.run_demo(str(tmp_path / "demo2"), quick=True, paths=("ms",))
  log = capsys.readouterr().out
  assert [r["stage"] for r in result["timing"]][0] == "analyse the pretrained ms64 (interfacegan)"
  assert "inverting" not in log and "ground_truth_latents.npz" in log, log
  again = json.load(open(os.path.join(str(tmp_path / "demo2"), "ms64", "metrics.json")))
  assert again["ground_truth"] == gt


def test_demo_rejects_unknown_path(tmp_path, capsys):
  try:
    demo.main(["--out", str(tmp_path), "--paths", "xray"])
  except SystemExit as e:
    assert e.code == 2
  else:
    raise AssertionError("expected exit status 2")
  assert "xray" in capsys.readouterr().err


def test_incomplete_shipped_model_is_a_clear_error(tmp_path):
  (tmp_path / "analysis").mkdir()
  with pytest.raises(ConfigError, match=r"analysis/config.json does not exist.*--models=tiny"):
    demo.shipped_analysis_config(str(tmp_path))


def test_demo_edits_path_config_names_the_demo_runs(tmp_path):
  """Path 3 reads the runs of paths 1 and 2 and its own attribute models."""
  attr = {n: str(tmp_path / n) for n in ("ifcvae_brain", "ssdaae_brain", "ifcvae_thorax")}
  c = demo.comparison_config(True, str(tmp_path / "ct_dcgan"), None, attr)
  assert c.task == "compare_edits" and c.brain.stylegan == ""  # no MS StyleGAN run
  assert c.thorax.dcgan == str(tmp_path / "ct_dcgan")
  assert (c.brain.ifcvae_gan, c.brain.ssdaae, c.thorax.ifcvae_gan) == (
      attr["ifcvae_brain"], attr["ssdaae_brain"], attr["ifcvae_thorax"])
  assert c.subjects.num_subjects == 2 and c.thorax.inversion.steps == 5
  full = demo.comparison_config(False, None, str(tmp_path / "ms"), attr)
  assert full.thorax.dcgan == "" and full.brain.stylegan == str(tmp_path / "ms")
  assert full.steps == 15 and full.subjects.num_subjects == 8
