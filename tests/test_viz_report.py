"""Report figures and HTML: files are written, valid, and show what they claim."""

import os

import numpy as np
from PIL import Image

from jaxlatent.viz import plots, report


def test_plots_write_images(tmp_path):
  t = 15
  alphas = np.linspace(0, 50, t)
  frames = np.zeros((t, 16, 16, 1), np.float32) - 0.5
  frames[:, 4:8, 4:8, 0] += (alphas / 50.0)[:, None, None]  # brightening square
  paths = [
      plots.plot_eigenvectors(alphas, np.linalg.qr(np.random.randn(t, t))[0], tmp_path / "ev.png",
                              explained=np.full(t, 1 / t)),
      plots.plot_change_sequence(frames, alphas, tmp_path / "seq.png"),
      plots.plot_component_maps(frames[0], frames[[-1, 0], ..., 0], tmp_path / "maps.png",
                                titles=["a", "b"], mask=np.ones((16, 16), bool)),
  ]
  for p in paths:
    with Image.open(p) as im:
      assert im.format == "PNG" and im.size[0] > 50


def test_gif_frames_and_order(tmp_path):
  frames = np.linspace(-1, 1, 5)[:, None, None] * np.ones((5, 8, 8))
  path = plots.save_gif(frames, tmp_path / "t.gif", scale=1, bounce=True)
  with Image.open(path) as im:
    assert im.format == "GIF"
    n = im.n_frames
    im.seek(0)
    first = np.asarray(im.convert("L")).mean()
    im.seek(4)
    last = np.asarray(im.convert("L")).mean()
  assert n == 5 + 3  # forward then back without repeating the ends
  assert first < 5 and last > 250


def test_report_html_has_sections_tables_and_figures(tmp_path):
  img = tmp_path / "a.png"
  Image.fromarray(np.zeros((4, 4), np.uint8)).save(img)
  rows = [{"direction": 0, "factor": "rotation", "score": 0.91234}]
  sec = report.Section("Directions", ["p <b>"], [("summary", rows)],
                       [("a.png", "grid"), ("nope.png", "gone")])
  path = report.write_report(str(tmp_path), "T", [sec], meta={"model": "dcgan"})
  with open(path) as f:
    text = f.read()
  assert "<h2>Directions</h2>" in text and "p &lt;b&gt;" in text
  assert "<td>rotation</td>" in text and "0.9123" in text
  assert "src='a.png'" in text and "missing figure: nope.png" in text
  assert not os.path.exists(path + ".tmp")
  md = report.table_markdown(rows)
  assert md.splitlines()[0] == "| direction | factor | score |"
