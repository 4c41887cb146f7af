"""The TensorBoard event writer, read back with tensorboard's own EventAccumulator."""

import io
import os
import time

import numpy as np
import pytest
from PIL import Image

from jaxlatent.training import tensorboard as tb


def _load(logdir, purge=True):
  """What TensorBoard shows for ``logdir`` (the test extra installs tensorboard).

  ``purge=False`` reads as a reader that ignores SessionLog.START would.
  """
  ea = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
  acc = ea.EventAccumulator(logdir, size_guidance={ea.SCALARS: 0, ea.IMAGES: 0},
                            purge_orphaned_data=purge)
  acc.Reload()
  return acc


def _steps(acc, tag):
  return [e.step for e in acc.Scalars(tag)]


def test_crc32c_known_vector_and_lanes_match_byte_loop():
  assert tb.crc32c(b"123456789") == 0xE3069283
  assert tb.crc32c(b"") == 0
  rng = np.random.default_rng(0)
  for n in (1, 4095, 4096, 4097, 10_007, 70_001):  # byte loop and lane path, odd tails
    data = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
    assert tb.crc32c(data) == tb._crc_bytes(0xFFFFFFFF, data) ^ 0xFFFFFFFF, n
  # The TFRecord mask: rotate right 15, add 0xA282EAD8 (mod 2^32).
  crc = 0xE3069283
  assert tb.masked_crc32c(b"123456789") == (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def test_scalars_steps_values_and_wall_times(tmp_path):
  t0 = time.time()
  with tb.SummaryWriter(str(tmp_path)) as w:
    for step in (1, 2, 5):
      w.scalars(step, {"g_loss": 0.25 * step, "lr": 2e-4})
  t1 = time.time()
  files = tb.event_files(str(tmp_path))
  assert len(files) == 1 and files[0] == w.path
  assert os.path.basename(w.path).startswith("events.out.tfevents.")
  assert w.path.endswith(".jaxlatent")
  acc = _load(str(tmp_path))
  assert sorted(acc.Tags()["scalars"]) == ["g_loss", "lr"]
  events = acc.Scalars("g_loss")
  assert [e.step for e in events] == [1, 2, 5]
  np.testing.assert_allclose([e.value for e in events], [0.25, 0.5, 1.25])
  np.testing.assert_allclose([e.value for e in acc.Scalars("lr")], 2e-4, rtol=1e-6)
  assert all(t0 - 1 <= e.wall_time <= t1 + 1 for e in events)
  assert [e.wall_time for e in events] == sorted(e.wall_time for e in events)


def test_images_decode_to_the_written_pixels(tmp_path):
  grey = np.linspace(0.0, 1.0, 6 * 10).reshape(6, 10)
  rgb = np.random.default_rng(1).integers(0, 256, (4, 3, 3), dtype=np.uint8)
  with tb.SummaryWriter(str(tmp_path)) as w:
    w.image(3, "samples", grey)
    w.image(4, "overlay", rgb)
  acc = _load(str(tmp_path))
  (g,) = acc.Images("samples")
  assert (g.step, g.height, g.width) == (3, 6, 10)
  shown = np.asarray(Image.open(io.BytesIO(g.encoded_image_string)))
  np.testing.assert_array_equal(shown, np.round(grey * 255).astype(np.uint8))
  (c,) = acc.Images("overlay")
  assert (c.step, c.height, c.width) == (4, 4, 3)
  np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(c.encoded_image_string))), rgb)
  with tb.SummaryWriter(str(tmp_path / "other")) as w, \
       pytest.raises(ValueError, match="image must be"):
    w.image(0, "bad", np.zeros((2, 2, 2)))


def _crashed_run(logdir):
  """Steps 1..57 (an image at 50), then the process dies mid-write at step 58."""
  w = tb.SummaryWriter(logdir)
  for step in range(1, 58):
    w.scalars(step, {"loss": 1000.0 + step})
    if step % 25 == 0:
      w.image(step, "samples", np.full((2, 2), 0.1))
  w.flush()
  with open(w.path, "ab") as f:  # a torn record: header of an event never finished
    f.write(tb.tfrecord(b"x" * 40)[:20])
  return w.path


def _resume(logdir, start, stop):
  w = tb.SummaryWriter(logdir, start_step=start)
  for step in range(start + 1, stop + 1):
    w.scalars(step, {"loss": float(step)})
    if step % 25 == 0:
      w.image(step, "samples", np.full((2, 2), 0.9))
  w.close()
  return w.path


def test_resume_after_crash_shows_each_step_once(tmp_path):
  logdir = str(tmp_path)
  old = _crashed_run(logdir)
  new = _resume(logdir, 50, 80)  # the checkpoint was at 50
  assert tb.event_files(logdir) == [old, new]  # loaded in this order
  for purge in (True, False):  # the rewrite alone already leaves one point per step
    acc = _load(logdir, purge)
    events = acc.Scalars("loss")
    assert [e.step for e in events] == list(range(1, 81))
    # Steps <= 50 from the first run, 51.. from the resumed one.
    np.testing.assert_allclose([e.value for e in events],
                               [1000.0 + s for s in range(1, 51)] + list(range(51, 81)))
    assert [e.step for e in acc.Images("samples")] == [25, 50, 75]
  assert not [f for f in os.listdir(logdir) if f.endswith(".tmp")]
  # The old file was rewritten whole: its torn tail is gone too.
  assert sum(len(r) + 16 for r in tb.read_tfrecords(old)) == os.path.getsize(old)
  # Resuming again from the same checkpoint replaces 51..80 once more.
  _resume(logdir, 50, 60)
  assert _steps(_load(logdir), "loss") == list(range(1, 61))


def test_running_tensorboard_drops_orphaned_points_on_resume(tmp_path):
  logdir = str(tmp_path)
  _crashed_run(logdir)
  live = _load(logdir)  # a TensorBoard that read the crashed run's 1..57
  assert _steps(live, "loss") == list(range(1, 58))
  _resume(logdir, 50, 70)
  live.Reload()  # the SessionLog.START at step 51 purges what it had read of 51..57
  assert _steps(live, "loss") == list(range(1, 71))
  assert [e.value for e in live.Scalars("loss")][50:57] == list(range(51, 58))


def test_fresh_start_in_old_workdir_and_file_order(tmp_path):
  logdir = str(tmp_path)
  paths = [_resume(logdir, 0, 5) for _ in range(3)]  # same second, same process
  assert tb.event_files(logdir) == paths and len(set(paths)) == 3
  assert _steps(_load(logdir), "loss") == [1, 2, 3, 4, 5]
  assert tb.drop_after(logdir, 3) == 2
  assert _steps(_load(logdir), "loss") == [1, 2, 3]


def test_non_chief_writes_nothing(tmp_path):
  logdir = tmp_path / "run"
  w = tb.SummaryWriter(str(logdir), is_chief=False, start_step=10)
  w.scalars(11, {"loss": 1.0})
  w.image(11, "samples", np.zeros((2, 2)))
  w.close()
  assert w.path is None and not logdir.exists()


def test_log_metrics_skips_what_is_not_a_finite_scalar(tmp_path):
  record = {"step": 7, "g_loss": np.float32(0.5), "d_loss": float("nan"), "fd": float("inf"),
            "images_per_sec": 812, "note": "x", "flag": True, "vec": np.ones(3),
            "elapsed": np.array(2.0)}
  with tb.SummaryWriter(str(tmp_path)) as w:
    written = tb.log_metrics_to_tensorboard(w, 7, record)
  assert written == {"g_loss": 0.5, "images_per_sec": 812.0, "elapsed": 2.0}
  acc = _load(str(tmp_path))
  assert sorted(acc.Tags()["scalars"]) == ["elapsed", "g_loss", "images_per_sec"]
  assert [(e.step, e.value) for e in acc.Scalars("images_per_sec")] == [(7, 812.0)]
