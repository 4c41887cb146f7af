"""SS-DAAE head accuracy vs labelled fraction on brain phantoms (run_label_fraction)."""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from configs import label_fraction_brain, label_fraction_brain_tiny  # noqa: E402  pylint: disable=g-import-not-at-top
from jaxlatent.studies.label_fraction import run_label_fraction  # noqa: E402
from jaxlatent.errors import ConfigError  # noqa: E402
from jaxlatent.models import ssdaae as ssd  # noqa: E402


def tiny_config(cache_dir: str):
  """The tiny config at 16 px with one fraction (about 15 s on 2 CPU cores)."""
  c = label_fraction_brain_tiny.get_config()
  c.image_size = 16
  c.fractions = (0.1,)
  c.model.z_dim = 8
  c.model.disc_hidden = (32,)
  c.data.cache_dir = cache_dir
  return c


def test_head_beats_chance_with_10_percent_labels_and_writes_the_table(tmp_path):
  c = tiny_config(str(tmp_path / "cache"))
  out = tmp_path / "out"
  path = run_label_fraction(c, str(out))
  assert path == str(out / "label_fraction.md")
  with open(out / "label_fraction.json") as f:
    result = json.load(f)
  assert result["task"] == "label_fraction" and result["classes"] == ["HC", "MS"]
  assert result["num_train_images"] == 2048 and result["num_heldout_images"] == 512
  assert result["heldout_population_seed"] == 1000 != result["train_population_seed"]
  (row,) = result["rows"]
  assert row["fraction"] == 0.1
  # The labelled images are the per-index draw over the training set (label_seed 0).
  assert row["num_labelled"] == int(ssd.labelled_mask(2048, 0.1, 0).sum())
  assert 0.07 * 2048 < row["num_labelled"] < 0.13 * 2048
  assert row["chance"] == result["chance"] == 0.5  # 64 held-out subjects, half of them MS
  assert row["accuracy"] > row["chance"] + 0.05, row  # measured: 0.62 (seeds 1, 2: 0.62, 0.64)
  with open(path) as f:
    table = f.read()
  assert "| labelled fraction | labelled images | held-out accuracy | chance |" in table
  assert f"| 0.1 | {row['num_labelled']} | {row['accuracy']:.3f} | 0.500 |" in table


@pytest.mark.parametrize("field, value, message", [
    ("task", "analysis", "config.task"),
    ("fractions", (), "config.fractions"),
    ("fractions", (0.1, 1.5), "1.5"),
    ("fractions", (0.1, 0.1), "repeated"),
    ("fractions", "0.1", "config.fractions"),
    ("steps", 0, "config.steps"),
    ("heldout.seed_offset", 0, "seed_offset"),
    ("heldout.num_images", 0, "heldout.num_images"),
    ("data.source", "nifti", "data.source"),
    ("data.label_column", "", "label_column"),
    ("model.name", "vae", "ssdaae"),
    ("model.noise_std", -1.0, "noise_std"),
])
def test_bad_config_errors_before_any_data(tmp_path, field, value, message):
  c = tiny_config(str(tmp_path / "cache"))
  parent, _, key = field.rpartition(".")
  node = c
  for part in filter(None, parent.split(".")):
    node = node[part]
  del node[key]  # so a value of another type (a str for the tuple) can be set
  node[key] = value
  with pytest.raises(ConfigError, match=message):
    run_label_fraction(c, str(tmp_path / "out"))
  assert not (tmp_path / "cache").exists() and not (tmp_path / "out").exists()


def test_configs_name_the_task():
  for module in (label_fraction_brain, label_fraction_brain_tiny):
    c = module.get_config()
    assert c.task == "label_fraction" and c.model.name == "ssdaae"
    assert c.data.source == "phantom_brain" and c.data.label_column == "group"
    assert tuple(c.fractions) == (0.01, 0.1, 0.5, 1.0)
    assert c.heldout.seed_offset > 0
  assert np.isclose(label_fraction_brain.get_config().steps, 30 * 4096 // 64)
