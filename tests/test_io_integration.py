"""DICOM in, TensorBoard out and the scrubbable report, end to end through the drivers."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from configs import dcgan_tiny  # noqa: E402  pylint: disable=g-import-not-at-top
from jaxlatent.training import complete_train_config  # noqa: E402
from jaxlatent.training import metrics as metrics_lib  # noqa: E402
from jaxlatent.training import tensorboard as tb  # noqa: E402
from jaxlatent.training.loop import train_and_evaluate  # noqa: E402
from jaxlatent.training.testing import toy_dataset, toy_trainer  # noqa: E402

SIZE = 16
DATA = toy_dataset(64, SIZE)


def _tiny_config(**overrides):
  c = complete_train_config(dcgan_tiny.get_config())
  c.image_size, c.batch_size, c.steps = SIZE, 8, 12
  c.log_every, c.ckpt_every, c.keep_checkpoints = 3, 4, 2
  c.sample_every, c.num_samples = 6, 4
  c.fid_every, c.fid_num_samples = 4, 16
  for k, v in overrides.items():
    c[k] = v
  return c


def _train(workdir, **overrides):
  train_and_evaluate(_tiny_config(**overrides), str(workdir), trainer=toy_trainer(SIZE),
                     dataset=DATA)


def _accumulator(logdir):
  ea = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
  acc = ea.EventAccumulator(str(logdir), size_guidance={ea.SCALARS: 0, ea.IMAGES: 0})
  acc.Reload()
  return acc


# ---------------------------------------------------------------------------
# TensorBoard from the training loop.


def test_tensorboard_scalars_images_and_fd_survive_a_resume(tmp_path):
  _train(tmp_path, steps=8)  # stops at the checkpoint of step 8
  # A crash after logging step 9 but before its checkpoint leaves an orphaned point.
  with tb.SummaryWriter(str(tmp_path), start_step=8) as w:
    w.scalars(9, {"loss": 123.0})
  _train(tmp_path)  # resumes from step 8 to 12

  records = metrics_lib.read_metrics(str(tmp_path / "metrics.jsonl"))
  assert [r["step"] for r in records] == [3, 4, 6, 8, 9, 12]
  acc = _accumulator(tmp_path)
  tags = acc.Tags()
  expected = {}  # tag -> {step: value}: every finite scalar of metrics.jsonl
  for r in records:
    for tag, value in tb.scalar_metrics(r).items():
      expected.setdefault(tag, {})[r["step"]] = value
  assert {"loss", "fd_random_features", "images_per_sec"} <= set(expected)
  assert set(expected) <= set(tags["scalars"])
  for tag, by_step in expected.items():
    events = acc.Scalars(tag)
    steps = [e.step for e in events]
    assert steps == sorted(by_step), (tag, steps)  # once per step, none rewound
    np.testing.assert_allclose([e.value for e in events], [by_step[s] for s in steps],
                               rtol=1e-6, err_msg=tag)
  # The FD curve at its own steps (every 4 and the last of each run).
  assert [e.step for e in acc.Scalars("fd_random_features")] == [4, 8, 12]
  # Sample grids at the sample steps of both runs, as decodable PNGs.
  assert "samples" in tags["images"]
  images = acc.Images("samples")
  assert [e.step for e in images] == [6, 8, 12]
  from PIL import Image  # pylint: disable=g-import-not-at-top
  import io  # pylint: disable=g-import-not-at-top
  png = Image.open(io.BytesIO(images[-1].encoded_image_string))
  assert png.size == (images[-1].width, images[-1].height) and png.width > SIZE


def test_finished_run_leaves_event_files_alone(tmp_path):
  _train(tmp_path, steps=4, fid_every=0, sample_every=0)
  files = tb.event_files(str(tmp_path))
  assert len(files) == 1
  before = open(files[0], "rb").read()
  _train(tmp_path, steps=4, fid_every=0, sample_every=0)  # nothing to do
  assert tb.event_files(str(tmp_path)) == files
  assert open(files[0], "rb").read() == before
