"""Run outputs: PNG grids (checked with an independent decoder), metrics.jsonl, loss plot."""

from __future__ import annotations

import json

import matplotlib
import numpy as np

from jaxlatent.training import metrics as metrics_lib
from jaxlatent.viz import grids

matplotlib.use("Agg")
import matplotlib.image  # noqa: E402  pylint: disable=g-import-not-at-top


def test_image_grid_layout_and_png_roundtrip(tmp_path):
  rng = np.random.default_rng(0)
  images = rng.uniform(-1, 1, (5, 6, 4, 1)).astype(np.float32)  # 5 images 6x4
  path = tmp_path / "sub" / "grid.png"
  grid = grids.save_image_grid(images, path, nrow=3, padding=2)
  assert grid.shape == (2 * (6 + 2) + 2, 3 * (4 + 2) + 2, 1)
  expected = np.round((images + 1) * 127.5).astype(np.uint8)
  for i in range(5):
    r, c = divmod(i, 3)
    y, x = 2 + r * 8, 2 + c * 6
    np.testing.assert_array_equal(grid[y:y + 6, x:x + 4], expected[i])
  assert grid[:2].max() == 0 and grid[8:10].max() == 0  # black padding
  assert grid[10:, 14:].max() == 0  # the empty 6th tile
  # Our reader and Pillow (through matplotlib) read back the same pixels.
  np.testing.assert_array_equal(grids.read_png(path), grid[..., 0])
  np.testing.assert_array_equal(np.round(matplotlib.image.imread(path) * 255), grid[..., 0])


def test_rgb_png_and_clipping(tmp_path):
  pixels = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3) * 10
  grids.write_png(pixels, tmp_path / "rgb.png")
  np.testing.assert_array_equal(grids.read_png(tmp_path / "rgb.png"), pixels)
  np.testing.assert_array_equal(grids.to_uint8(np.array([-3.0, -1.0, 0.0, 1.0, 7.0, np.nan])),
                                [0, 0, 128, 255, 255, 0])


def test_metric_writer_json_lines_and_plot(tmp_path):
  path = str(tmp_path / "metrics.jsonl")
  writer = metrics_lib.MetricWriter(path)
  for step in range(1, 6):
    writer.write({"step": step, "loss": np.float32(1.0 / step), "images_per_sec": 10.0})
  writer.write({"step": 6, "loss": float("nan"), "fd_random_features": 3.5})
  records = [json.loads(line) for line in open(path)]  # strict JSON per line
  assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 6]
  assert records[1]["loss"] == 0.5 and records[-1]["loss"] == "nan"
  with open(path, "a") as f:
    f.write('{"step": 7, "lo')  # a torn line from a crash
  assert len(metrics_lib.read_metrics(path)) == 6
  writer.drop_after(3)
  assert [r["step"] for r in metrics_lib.read_metrics(path)] == [1, 2, 3]
  metrics_lib.plot_losses(records, ("loss",), str(tmp_path / "losses.png"))
  image = matplotlib.image.imread(tmp_path / "losses.png")
  assert image.shape[0] > 100 and image.std() > 0
  silent = metrics_lib.MetricWriter(str(tmp_path / "other.jsonl"), enabled=False)
  silent.write({"step": 1})
  assert not (tmp_path / "other.jsonl").exists()
  line = metrics_lib.format_record({"step": 3, "loss": 0.25, "images_per_sec": 12.0}, 10,
                                   ("loss",))
  assert line == "step 3/10 | loss 0.2500 | 12.0 img/s"
