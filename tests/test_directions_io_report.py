"""Saving/loading directions, traversal grids, RCA curve and summary tables."""

from __future__ import annotations

import csv
import json
import os

import jax
import numpy as np
import pytest

from jaxlatent import DataError, TrainingError
from jaxlatent.config_cli import config_from_file
from jaxlatent.viz.report import table_markdown
from jaxlatent.directions import (Directions, load_directions, save_directions,
                                  save_rca_curve, save_traversal_grid, summary_rows,
                                  traversal_grid, write_table)
from jaxlatent.directions import toy


def _dirs(**kw):
  v = np.random.default_rng(0).normal(size=(3, 2, 4)).astype(np.float32)  # w+-shaped
  args = dict(vectors=v, method="voynov", model="stylegan2-w+", space="w+",
              scores={"rca": 0.81, "per_dir": np.array([0.1, 0.2, 0.3])},
              names=["rotation", "d1", "slice position"],
              meta={"config": {"steps": 10, "shifts": (1.0, 2.0)}, "chance": 1 / 3})
  args.update(kw)
  return Directions(**args)


def test_round_trip(tmp_path):
  d = _dirs()
  np.testing.assert_allclose(np.linalg.norm(d.flat(), axis=1), 1.0, atol=1e-6)
  npz, js = save_directions(tmp_path / "sub" / "dirs", d)
  assert npz.endswith("dirs.npz") and js.endswith("dirs.json")
  with open(js) as f:
    record = json.load(f)
  assert record["latent_shape"] == [2, 4] and record["method"] == "voynov"
  for path in (tmp_path / "sub" / "dirs", npz, js):
    back = load_directions(path)
    np.testing.assert_array_equal(back.vectors, d.vectors)
    assert (back.method, back.model, back.space, back.names) == (d.method, d.model, d.space,
                                                                  d.names)
    assert back.scores["rca"] == pytest.approx(0.81)
    np.testing.assert_allclose(back.scores["per_dir"], [0.1, 0.2, 0.3])
    assert back.meta["config"] == {"steps": 10, "shifts": [1.0, 2.0]}
  with np.load(npz, allow_pickle=False) as data:  # plain arrays, no pickle
    assert data.files == ["vectors"]


def test_load_errors(tmp_path):
  with pytest.raises(DataError, match="does not exist"):
    load_directions(tmp_path / "missing")
  save_directions(tmp_path / "d", _dirs())
  with open(tmp_path / "d.npz", "wb") as f:
    f.write(b"not a zip file")
  with pytest.raises(DataError, match="cannot read"):
    load_directions(tmp_path / "d")
  save_directions(tmp_path / "e", _dirs())
  with open(tmp_path / "e.json", "w") as f:
    f.write("{broken")
  with pytest.raises(DataError):
    load_directions(tmp_path / "e.npz")
  save_directions(tmp_path / "f", _dirs())
  np.savez(tmp_path / "f.npz", vectors=np.ones((3, 8), np.float32))
  with pytest.raises(DataError, match="latent_shape"):
    load_directions(tmp_path / "f")


def test_collapsed_directions_are_not_saved_unless_forced(tmp_path):
  d = _dirs(meta={"collapsed": True, "chance": 1 / 3})
  with pytest.raises(TrainingError, match="collapsed"):
    save_directions(tmp_path / "c", d)
  assert not os.path.exists(tmp_path / "c.npz")
  save_directions(tmp_path / "c", d, force=True)
  assert load_directions(tmp_path / "c").collapsed


def test_traversal_grid_and_files(tmp_path):
  gen, planted = toy.bump_generator(jax.random.key(0), 4, 16)
  z = gen.sample_latents(jax.random.key(1), 1)[0]
  shifts = (-18.0, -6.0, 0.0, 6.0, 18.0)
  grid = traversal_grid(gen, Directions(planted[:2], "planted"), z, shifts)
  assert grid.shape == (2, 5, 16, 16, 1)
  for k in range(2):
    for j, s in enumerate(shifts):
      np.testing.assert_allclose(grid[k, j], gen(z[None] + s * planted[k][None])[0], atol=1e-5)
  png = save_traversal_grid(tmp_path / "grid.png", grid, ["a", "b"], [str(s) for s in shifts])
  assert os.path.getsize(png) > 0
  from jaxlatent.viz.grids import read_png
  tiles = read_png(save_traversal_grid(tmp_path / "plain.png", grid))  # unlabelled: exact tiles
  assert tiles.shape[:2] == (2 * 16 + 3 * 2, 5 * 16 + 6 * 2)
  csv_path, png_path = save_rca_curve(tmp_path / "rca", {"step": np.array([10, 20]),
                                                        "rca": np.array([[0.2, 0.5],
                                                                         [0.3, 0.6]])}, 0.25)
  with open(csv_path) as f:
    rows = list(csv.reader(f))
  assert rows[0] == ["step", "rca_restart0", "rca_restart1"] and rows[2][0] == "20"
  assert float(rows[2][2]) == pytest.approx(0.6)
  assert os.path.getsize(png_path) > 0


def test_summary_table(tmp_path):
  d = _dirs()
  rows = summary_rows(d)
  assert [r["name"] for r in rows] == d.names
  assert rows[2]["per_dir"] == pytest.approx(0.3) and rows[0]["rca"] == pytest.approx(0.81)
  csv_path, md_path = write_table(tmp_path / "summary", rows)
  with open(csv_path) as f:
    back = list(csv.DictReader(f))
  assert back[2]["name"] == "slice position" and float(back[1]["per_dir"]) == pytest.approx(0.2)
  md = open(md_path).read()
  assert md == table_markdown(rows)
  assert md.splitlines()[0].startswith("| index | name |") and len(md.splitlines()) == 5


def _load_config(name):
  return config_from_file(os.path.join(os.path.dirname(__file__), "..", "configs", f"{name}.py"))


def test_configs_hold_the_paper_settings():
  from jaxlatent.directions import VoynovConfig
  ct = VoynovConfig.from_config(_load_config("discover_ct").voynov)
  assert (ct.num_directions, ct.deformator, ct.steps, ct.batch_size, ct.learning_rate) == (
      100, "proj", 3000, 128, 1e-4)
  assert (ct.shift_scale, ct.min_shift, ct.label_weight, ct.shift_weight) == (6.0, 0.5, 1.0, 0.25)
  ct.validate(32)
  tiny = _load_config("discover_tiny")
  VoynovConfig.from_config(tiny.voynov).validate(32)
  assert tiny.image_size == 32 and tiny.voynov.steps <= 500


def test_discover_pipeline_writes_outputs(tmp_path):
  from jaxlatent.directions import discover
  config = _load_config("discover_tiny")
  config.methods = ("voynov", "ganspace")
  config.voynov.update(dict(num_directions=4, steps=20, eval_every=10, batch_size=16,
                            reconstructor="mlp", reconstructor_width=32,
                            collapse_threshold=0.0))
  config.ganspace_components = 3
  config.ganspace_samples = 200
  gen, _ = toy.bump_generator(jax.random.key(0), 6, 16)
  out = discover(gen, config, jax.random.key(1), workdir=str(tmp_path))
  assert out["voynov"]["saved"] and out["ganspace"]["directions"].num_directions == 3
  for name in ("voynov_directions.npz", "voynov_directions.json", "voynov_traversals.png",
               "voynov_summary.csv", "voynov_summary.md", "voynov_rca.csv", "voynov_rca.png",
               "ganspace_directions.npz", "ganspace_traversals.png", "ganspace_summary.md"):
    assert os.path.getsize(tmp_path / name) > 0, name
  back = load_directions(tmp_path / "voynov_directions")
  assert back.meta["run_config"]["voynov"]["steps"] == 20
  assert len(back.scores["rca_curve"]["rca"]) == 2
