"""SS-DAAE head accuracy vs labelled fraction on brain phantoms, next to a supervised
baseline on the same labels (run_label_fraction)."""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from configs import label_fraction_brain, label_fraction_brain_tiny  # noqa: E402  pylint: disable=g-import-not-at-top
from jaxlatent.studies import report  # noqa: E402
from jaxlatent.studies.label_fraction import (SupervisedSettings,  # noqa: E402
                                              labelled_batch_indices, run_label_fraction,
                                              supervised_adam, supervised_settings)
from jaxlatent.errors import ConfigError, DataError  # noqa: E402
from jaxlatent.training.defaults import complete_train_config  # noqa: E402
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


@pytest.fixture(scope="module")
def phantom_cache(tmp_path_factory):
  """One rendering of the 16 px phantom sets, shared by the runs of this module."""
  return str(tmp_path_factory.mktemp("label_fraction_cache"))


def test_head_and_supervised_baseline_beat_chance_and_write_the_table(tmp_path, phantom_cache):
  c = tiny_config(phantom_cache)
  c.fractions = (0.1, 1.0)
  out = tmp_path / "out"
  path = run_label_fraction(c, str(out))
  assert path == str(out / "label_fraction.md")
  with open(out / "label_fraction.json") as f:
    result = json.load(f)
  assert result["task"] == "label_fraction" and result["classes"] == ["HC", "MS"]
  assert result["num_train_images"] == 2048 and result["num_heldout_images"] == 512
  assert result["heldout_population_seed"] == 1000 != result["train_population_seed"]
  assert result["supervised"]["steps"] == 600 and result["supervised"]["learning_rate"] == 3e-4
  row, full = result["rows"]
  assert (row["fraction"], full["fraction"]) == (0.1, 1.0)
  # The labelled images are the per-index draw over the training set (label_seed 0).
  assert row["num_labelled"] == int(ssd.labelled_mask(2048, 0.1, 0).sum())
  assert 0.07 * 2048 < row["num_labelled"] < 0.13 * 2048
  assert full["num_labelled"] == 2048
  assert row["chance"] == result["chance"] == 0.5  # 64 held-out subjects, half of them MS
  assert row["accuracy"] > row["chance"] + 0.05, row  # measured: 0.62 (seeds 1, 2: 0.62, 0.64)
  for r in (row, full):
    assert 0.0 <= r["supervised_accuracy"] <= 1.0 and r["supervised_seconds"] > 0
  # Every label, no unlabelled data: the encoder + head alone (measured 0.64, 0.67,
  # 0.66 with seeds 0, 1, 2).
  assert full["supervised_accuracy"] > full["chance"] + 0.08, full
  with open(path) as f:
    table = f.read()
  assert ("| labelled fraction | labelled images | SS-DAAE accuracy | supervised accuracy "
          "| chance |") in table
  assert (f"| 0.1 | {row['num_labelled']} | {row['accuracy']:.3f} | "
          f"{row['supervised_accuracy']:.3f} | 0.500 |") in table
  assert "encoder and class head, trained with cross-entropy on the labelled images" in table


def test_supervised_batches_hold_only_labelled_images():
  labelled = ssd.labelled_mask(200, 0.3, 0)
  subset = set(np.flatnonzero(labelled).tolist())
  assert 40 < len(subset) < 80
  # At least a batch of labelled images: shuffled epochs of the subset, no repeats
  # within an epoch, every labelled image once per epoch.
  epoch = np.concatenate([labelled_batch_indices(labelled, 8, 3, t)
                          for t in range(len(subset) // 8)])
  assert set(epoch.tolist()) <= subset and len(set(epoch.tolist())) == len(epoch)
  assert len(epoch) == len(subset) // 8 * 8
  np.testing.assert_array_equal(labelled_batch_indices(labelled, 8, 3, 5),
                                labelled_batch_indices(labelled, 8, 3, 5))
  # Fewer labelled images than a batch: drawn with replacement, still only those.
  few = np.zeros(200, bool)
  few[[7, 50, 199]] = True
  draws = np.stack([labelled_batch_indices(few, 32, 0, t) for t in range(4)])  # [4, 32]
  assert draws.shape == (4, 32) and set(draws.ravel().tolist()) == {7, 50, 199}
  assert not np.array_equal(draws[0], draws[1])  # a fresh draw per step
  with pytest.raises(DataError, match="labelled image"):
    labelled_batch_indices(np.zeros(200, bool), 8, 0, 0)


def test_table_without_baseline_and_fraction_without_labels(tmp_path):
  c = complete_train_config(tiny_config(str(tmp_path / "cache")))
  rows = [{"fraction": 0.0, "num_labelled": 0, "accuracy": 0.5, "chance": 0.5, "seconds": 1.0,
           "supervised_accuracy": None, "supervised_seconds": 0.0},
          {"fraction": 0.5, "num_labelled": 9, "accuracy": 0.75, "chance": 0.5,
           "seconds": 1.0, "supervised_accuracy": 0.625, "supervised_seconds": 1.0}]
  sup = {"classifier": "encoder + head", "steps": 600, "learning_rate": 3e-4}
  with open(report.write_label_fraction(str(tmp_path), c, rows, ["HC", "MS"], 16, 8, 0.5,
                                        report.Clock(), supervised=sup)) as f:
    table = f.read()
  assert "| 0 | 0 | 0.500 | n/a | 0.500 |" in table
  assert "| 0.5 | 9 | 0.750 | 0.625 | 0.500 |" in table
  assert "encoder + head (600 steps, Adam lr 0.0003" in table
  plain = [{k: v for k, v in r.items() if not k.startswith("supervised")} for r in rows]
  with open(report.write_label_fraction(str(tmp_path), c, plain, ["HC", "MS"], 16, 8, 0.5,
                                        report.Clock())) as f:
    table = f.read()
  assert "| labelled fraction | labelled images | SS-DAAE accuracy | chance |" in table
  assert "supervised" not in table.lower()
  with open(tmp_path / "label_fraction.json") as f:
    assert json.load(f)["supervised"] is None


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
    ("supervised.steps", -1, "config.supervised.steps"),
    ("supervised.steps", 2.5, "config.supervised.steps"),
    ("supervised.enabled", "yes", "config.supervised.enabled"),
    ("supervised.lr", -1e-3, "config.supervised.lr"),
    ("supervised.learning_rate", 1e-3, "config.supervised.learning_rate"),
])
def test_bad_config_errors_before_any_data(tmp_path, field, value, message):
  c = tiny_config(str(tmp_path / "cache"))
  parent, _, key = field.rpartition(".")
  node = c
  for part in filter(None, parent.split(".")):
    node = node[part]
  if key in node:
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
    assert c.supervised.enabled and c.supervised.steps == 0 and c.supervised.lr == 0.0
  assert np.isclose(label_fraction_brain.get_config().steps, 30 * 4096 // 64)


def test_supervised_settings_and_learning_rate():
  c = complete_train_config(label_fraction_brain_tiny.get_config())
  assert supervised_settings(c) == SupervisedSettings(enabled=True, steps=0, lr=0.0)
  assert supervised_adam(c)["lr"] == c.optim.lr == 3e-4  # the SS-DAAE autoencoder's Adam
  c.supervised.update(enabled=False, steps=50, lr=1e-3)
  assert supervised_settings(c) == SupervisedSettings(enabled=False, steps=50, lr=1e-3)
  assert supervised_adam(c)["lr"] == 1e-3 and supervised_adam(c)["b1"] == c.optim.b1
  del c["supervised"]  # a config written before the baseline: the defaults
  assert supervised_settings(c) == SupervisedSettings()
