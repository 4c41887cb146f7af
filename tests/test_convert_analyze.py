"""analyze.py runs unchanged on a converted official snapshot; an RGB one gets one error line.

A tiny official-format snapshot (our PyTorch port of the official networks, 32 px) is
converted with ``python -m jaxlatent.convert stylegan2-ada`` and analysed with
``configs/analyze_ms_tiny.py`` cut to a few steps: W projection of held-out brain
phantoms, InterFaceGAN HC -> MS, traversal eigen-analysis.
"""

from __future__ import annotations

import json
import os
import sys

import pytest

pytest.importorskip("torch")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests", "reference"))

from cli_runs import run_analyze as _analyze  # pylint: disable=g-import-not-at-top,wrong-import-position
from test_stylegan2_ada_convert import write_snapshot  # pylint: disable=g-import-not-at-top,wrong-import-position

from jaxlatent.convert import cli  # pylint: disable=g-import-not-at-top,wrong-import-position

G32 = dict(z_dim=8, c_dim=0, w_dim=8, img_resolution=32, img_channels=1,
           mapping_kwargs=dict(num_layers=2),
           synthesis_kwargs=dict(channel_base=64, channel_max=8, conv_clamp=256))
TINY = ["--config.images.num_images=16", "--config.images.max_subjects=0",
        "--config.inversion.steps=3", "--config.inversion.w_avg_samples=32",
        "--config.inversion.batch_size=16", "--config.traversal.alpha_num=3",
        "--config.traversal.n_components=3",
        "--config.traversal.max_subjects=1", "--config.ground_truth.num_subjects=2",
        "--config.report.num_samples=4", "--malloc=system"]


def _convert(pkl, out, capsys):
  try:
    code = cli.main(["stylegan2-ada", str(pkl), f"--workdir={out}"])
  except SystemExit as e:
    code = e.code
  assert code == 0, capsys.readouterr().err


def test_analyze_runs_on_a_converted_snapshot(tmp_path, capsys):
  pkl = tmp_path / "network-snapshot-000200.pkl"
  write_snapshot(pkl, G32, seed=2)
  run = tmp_path / "run"
  _convert(pkl, run, capsys)
  out = tmp_path / "report"
  argv = [f"--config={os.path.join(REPO, 'configs', 'analyze_ms_tiny.py')}",
          f"--workdir={run}", f"--out={out}"] + TINY
  assert _analyze(argv) == 0, capsys.readouterr().err
  assert "missing figure" not in (out / "index.html").read_text()
  for name in ("inversion.png", "traversal_interfacegan.png"):
    assert os.path.isfile(out / name), name
  assert any(f.startswith("components_") for f in os.listdir(out))
  metrics = json.loads((out / "metrics.json").read_text())
  assert any(k.startswith("interfacegan/") for k in metrics["eigen"]), metrics["eigen"]
  # The boundary's held-out codes are whole subjects it was not fitted on.
  assert metrics["interfacegan"]["held_out"] == "groups", metrics["interfacegan"]


def test_rgb_snapshot_analysed_with_mr_slices_is_one_error_line(tmp_path, capsys):
  pkl = tmp_path / "rgb.pkl"
  write_snapshot(pkl, dict(G32, img_channels=3, img_resolution=16), seed=4)
  run = tmp_path / "run"
  _convert(pkl, run, capsys)  # converts: load_stylegan2_ada / the workdir keep RGB
  capsys.readouterr()
  argv = [f"--config={os.path.join(REPO, 'configs', 'analyze_ms_tiny.py')}",
          f"--workdir={run}", f"--out={tmp_path / 'report'}"] + TINY
  assert _analyze(argv) == 2
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and err.startswith("error: model.img_channels=3: this network "
                                                 "makes 3-channel images"), err
  assert "data.modality='mr'" in err
