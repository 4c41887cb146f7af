"""The generic training loop on a toy trainer: outputs, resume, checkpoints, guards."""

from __future__ import annotations

import json
import os
import sys

import jax
import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from configs import dcgan_tiny  # noqa: E402  pylint: disable=g-import-not-at-top
from jaxlatent.errors import CheckpointError, ConfigError, TrainingError  # noqa: E402
from jaxlatent.training import checkpoint as ckpt_lib  # noqa: E402
from jaxlatent.training import metrics as metrics_lib  # noqa: E402
from jaxlatent.training.loop import split_holdout, train_and_evaluate  # noqa: E402
from jaxlatent.training.testing import toy_dataset, toy_trainer  # noqa: E402
from jaxlatent.viz import read_png  # noqa: E402
from jaxlatent.training import complete_train_config  # noqa: E402

SIZE = 16


def tiny_config(**overrides):
  c = complete_train_config(dcgan_tiny.get_config())
  c.image_size = SIZE
  c.batch_size = 8
  c.steps = 12
  c.log_every = 3
  c.ckpt_every = 4
  c.keep_checkpoints = 2
  c.sample_every = 6
  c.num_samples = 4
  c.fid_every = 0  # FD (covered below and in test_training_fid.py) only where asked
  c.fid_num_samples = 16
  for k, v in overrides.items():
    c[k] = v
  return c


DATA = toy_dataset(64, SIZE)


def run(workdir, trainer=None, **overrides):
  trainer = trainer or toy_trainer(SIZE)
  state = train_and_evaluate(tiny_config(**overrides), str(workdir), trainer=trainer,
                             dataset=DATA)
  return trainer, jax.tree.map(np.asarray, state)


def assert_trees_equal(a, b):
  la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
  assert len(la) == len(lb)
  for x, y in zip(la, lb):
    np.testing.assert_array_equal(x, y)


def test_outputs_metrics_and_single_trace(tmp_path):
  trainer, state = run(tmp_path, fid_every=6)
  assert int(state.step) == 12
  # One trace of the step for 12 steps interleaved with logs, samples, FD, checkpoints.
  assert trainer.traces[0] == 1
  records = metrics_lib.read_metrics(str(tmp_path / "metrics.jsonl"))
  assert [r["step"] for r in records] == [3, 6, 9, 12]
  for r in records:
    assert {"loss", "mean_term", "std_term", "images_per_sec", "lr", "elapsed"} <= set(r)
    assert np.isfinite(r["loss"]) and r["images_per_sec"] > 0
  assert [("fd_random_features" in r) for r in records] == [False, True, False, True]
  assert records[-1]["loss"] < records[0]["loss"]  # moment matching learns
  assert sorted(os.listdir(tmp_path / "samples")) == ["step_000006.png", "step_000012.png"]
  grid = read_png(tmp_path / "samples" / "step_000012.png")
  assert grid.shape == (2 * (SIZE + 2) + 2, 2 * (SIZE + 2) + 2)  # 4 samples, 2x2
  with open(tmp_path / "losses.png", "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  saved = json.load(open(tmp_path / "config.json"))
  assert saved["image_size"] == SIZE and saved["model"]["name"] == "dcgan"
  # keep_checkpoints=2 of the saves at 4, 8, 12.
  assert ckpt_lib.load_state_tree(str(tmp_path))[0] == 12
  assert sorted(int(d) for d in os.listdir(tmp_path / "checkpoints")) == [8, 12]


def test_resume_equals_uninterrupted_run(tmp_path, capsys):
  _, straight = run(tmp_path / "straight")
  _, first_half = run(tmp_path / "resumed", steps=6)
  assert int(first_half.step) == 6
  capsys.readouterr()
  trainer, resumed = run(tmp_path / "resumed")  # picks up the checkpoint of step 6
  assert "from step 6 with changed settings: steps: 6 vs 12" in capsys.readouterr().out
  assert int(resumed.step) == 12
  assert_trees_equal(straight, resumed)
  # metrics.jsonl describes one run: no duplicated steps after the resume.
  steps = [r["step"] for r in metrics_lib.read_metrics(str(tmp_path / "resumed/metrics.jsonl"))]
  assert steps == [3, 6, 9, 12]
  # The saved checkpoint holds exactly the returned state.
  _, tree = ckpt_lib.load_state_tree(str(tmp_path / "resumed"))
  np.testing.assert_array_equal(tree["params"]["w"], resumed.params["w"])


def test_resume_drops_metrics_written_after_the_checkpoint(tmp_path):
  run(tmp_path, steps=8)
  # Pretend a crash after logging step 9..10 but before the next checkpoint.
  writer = metrics_lib.MetricWriter(str(tmp_path / "metrics.jsonl"))
  writer.write({"step": 9, "loss": 123.0})
  run(tmp_path)
  records = metrics_lib.read_metrics(str(tmp_path / "metrics.jsonl"))
  assert [r["step"] for r in records] == [3, 6, 8, 9, 12]
  assert all(r["loss"] != 123.0 for r in records)


def test_finished_run_is_not_retrained(tmp_path):
  _, a = run(tmp_path)
  trainer, b = run(tmp_path)
  assert trainer.traces[0] == 0  # nothing to do: no step was even traced
  assert_trees_equal(a, b)


def test_nan_guard_names_step_and_term_and_keeps_last_checkpoint(tmp_path):
  with pytest.raises(TrainingError, match=r"non-finite loss=nan at step 7.*step 4"):
    run(tmp_path, trainer=toy_trainer(SIZE, nan_at_step=7))
  # The checkpoint of step 4 is the last one; the NaN state was never saved.
  assert sorted(int(d) for d in os.listdir(tmp_path / "checkpoints")) == [4]
  _, tree = ckpt_lib.load_state_tree(str(tmp_path))
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(tree))
  # NaN on a checkpoint step itself: the checkpoint of that step is not written.
  with pytest.raises(TrainingError, match="at step 8"):
    run(tmp_path / "b", trainer=toy_trainer(SIZE, nan_at_step=8))
  assert sorted(int(d) for d in os.listdir(tmp_path / "b" / "checkpoints")) == [4]


def test_corrupt_checkpoint_is_reported_and_left_untouched(tmp_path):
  run(tmp_path, steps=8)
  latest = tmp_path / "checkpoints" / "8"
  truncated = []
  for dirpath, _, files in os.walk(latest):
    for name in files:
      path = os.path.join(dirpath, name)
      if os.path.getsize(path) > 8:
        with open(path, "r+b") as f:
          f.truncate(os.path.getsize(path) // 2)
        truncated.append(path)
  snapshot = {p: open(p, "rb").read() for p in truncated}
  with pytest.raises(CheckpointError, match=str(latest)):
    run(tmp_path)
  assert {p: open(p, "rb").read() for p in truncated} == snapshot
  assert sorted(int(d) for d in os.listdir(tmp_path / "checkpoints")) == [4, 8]


def test_checkpoint_of_another_model_is_refused(tmp_path):
  run(tmp_path, steps=4)
  # Same config (so the config check passes), but a state of other shapes.
  with pytest.raises(CheckpointError, match="checkpoints/4"):
    run(tmp_path, trainer=toy_trainer(SIZE, latent_dim=5))
  # A config with another architecture is refused before loading anything.
  c = tiny_config()
  c.model.latent_dim = 64
  with pytest.raises(ConfigError, match=r"model.latent_dim: 32 vs 64"):
    train_and_evaluate(c, str(tmp_path), trainer=toy_trainer(SIZE), dataset=DATA)
  # The workdir's config.json still describes the run that wrote the checkpoints.
  assert json.load(open(tmp_path / "config.json"))["model"]["latent_dim"] == 32


def test_holdout_split_is_fixed_and_disjoint():
  train, held = split_holdout(100, 16, seed=3)
  train2, held2 = split_holdout(100, 16, seed=3)
  np.testing.assert_array_equal(held, held2)
  assert len(held) == 16 and len(train) == 84
  assert not set(train) & set(held) and sorted(set(train) | set(held)) == list(range(100))


def test_data_smaller_than_batch_is_a_clear_error(tmp_path):
  from jaxlatent.errors import DataError  # pylint: disable=g-import-not-at-top
  with pytest.raises(DataError, match="batch_size=128"):
    run(tmp_path, batch_size=128)
