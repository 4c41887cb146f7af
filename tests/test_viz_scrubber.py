"""The scrubbable traversal page: its input checks, and its sliders in a real headless browser.

The browser test drives Debian's chromium over the DevTools protocol on a pipe
(``--remote-debugging-pipe``: NUL-terminated JSON on file descriptors 3 and 4), so
it needs no Python package beyond the standard library.  It moves the sliders,
then reads back the pixels the browser decoded for each panel.
"""

import fcntl
import json
import os
import re
import select
import shutil
import subprocess
import time

import numpy as np
import pytest

from jaxlatent.errors import DataError
from jaxlatent.viz.scrubber import bwr, traversal_panels, write_scrubber

N_ALPHA, N_SLICES, SIZE = 5, 2, 8
ALPHAS = [0.0, 2.5, 5.0, 7.5, 10.0]
SUBJECTS = ("sub-01", "sub-02")


def _grey(s, k, a):
  """The generated frame's value: a distinct grey level per (subject, slice, alpha)."""
  return -1.0 + 2.0 * (a + N_ALPHA * k + N_ALPHA * N_SLICES * s) / (N_ALPHA * N_SLICES * 2 - 1)


def _frames():
  """Constant frames whose colours identify (subject, slice, alpha) and the panel."""
  frames = {}
  ramp = np.linspace(-1.0, 1.0, N_ALPHA)  # -vmax .. +vmax: blue, light blue, white, ...
  for s, name in enumerate(SUBJECTS):
    panels = {p: np.zeros((N_SLICES, N_ALPHA, SIZE, SIZE)) for p in
              ("generated", "subtraction", "component2")}
    for k in range(N_SLICES):
      scale = 3.0 * (s + 1) * (k + 1)
      for a in range(N_ALPHA):
        panels["generated"][k, a] = _grey(s, k, a)
        panels["subtraction"][k, a] = scale * ramp[a]
        panels["component2"][k, a] = -0.5 * scale * ramp[a]  # the other way round
    frames[name] = panels
  return frames


def _expected(s, k, a):
  """Pixel RGB of each panel at (subject, slice, alpha), computed independently."""
  g = int(np.round((_grey(s, k, a) + 1.0) * 127.5))
  t = a / (N_ALPHA - 1)  # where ramp[a] sits between -vmax (0) and +vmax (1)

  def colour(t):  # blue (0) -> white (0.5) -> red (1), linear
    return (min(2 * t, 1.0) * 255, min(2 * t, 2 - 2 * t, 1.0) * 255, min(2 - 2 * t, 1.0) * 255)

  return {"generated": (g, g, g), "subtraction": colour(t), "component2": colour(1 - t)}


def test_bwr_matches_the_linear_blue_white_red_map():
  np.testing.assert_array_equal(bwr(np.array([0.0, 0.25, 0.5, 0.75, 1.0])),
                                [[0, 0, 255], [128, 128, 255], [255, 255, 255],
                                 [255, 128, 128], [255, 0, 0]])


def test_page_is_self_contained(tmp_path):
  path = write_scrubber(tmp_path / "d" / "scrub.html", _frames(), ALPHAS,
                        slice_labels=["z=10", "z=12"], title="direction 3 <test>")
  page = open(path, encoding="utf-8").read()
  assert "http://" not in page and "https://" not in page and "//cdn" not in page
  # Every src in the markup is embedded; the panels' srcs are set by the inline script.
  assert all(v.startswith("data:image/png;base64,")
             for v in re.findall(r'src="([^"]*)"', page))
  assert not re.search(r"<script[^>]*\ssrc=", page)
  assert 'id="alpha"' in page and 'id="slice"' in page and 'id="subject"' in page
  assert page.count("data:image/png;base64,") == 2 * N_SLICES * N_ALPHA * 3 + 1 + 2
  assert "direction 3 &lt;test&gt;" in page and "z=12" in page
  assert os.listdir(tmp_path / "d") == ["scrub.html"]


def test_traversal_panels_from_a_real_eigen_analysis(tmp_path):
  from jaxlatent.analysis.eigen import eigen_analysis_batched  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  alphas = np.linspace(0.0, 4.0, N_ALPHA)
  base = rng.normal(size=(N_SLICES, 1, SIZE, SIZE, 1)) * 0.1
  change = np.zeros((SIZE, SIZE, 1))
  change[2:5, 2:6] = 0.1  # a planted region that brightens linearly with alpha
  images = (base + alphas[:, None, None, None] * change).astype(np.float32)
  mask = np.ones((SIZE, SIZE), np.float32)
  res = eigen_analysis_batched(images, mask, alphas)
  panels = traversal_panels(images, res)
  assert {k: v.shape for k, v in panels.items()} == {
      k: (N_SLICES, N_ALPHA, SIZE, SIZE) for k in ("generated", "subtraction", "component2")}
  np.testing.assert_allclose(panels["generated"], images[..., 0])
  last = np.broadcast_to(4.0 * change[..., 0], (N_SLICES, SIZE, SIZE))
  np.testing.assert_allclose(panels["subtraction"][:, -1], last, atol=1e-5)
  maps, vecs = np.asarray(res.component_maps), np.asarray(res.eigenvectors)
  np.testing.assert_allclose(panels["component2"][1, 3], maps[1, 1, ..., 0] * vecs[1, 3, 1],
                             rtol=1e-5, atol=1e-7)
  # Component 2 of a linear change: the planted region moves from one sign to the other.
  inside = panels["component2"][:, :, 3, 3]
  assert np.all(inside[:, 0] < 0) and np.all(inside[:, -1] > 0)
  write_scrubber(tmp_path / "s.html", {"sub-01": panels}, alphas)
  with pytest.raises(DataError, match="component=9"):
    traversal_panels(images, res, component=9)


def test_one_subject_one_slice_has_no_selector_or_slice_slider(tmp_path):
  one = {k: v[0] for k, v in _frames()["sub-01"].items()}  # [n_alpha, H, W]
  page = open(write_scrubber(tmp_path / "s.html", {"sub-01": one}, ALPHAS),
              encoding="utf-8").read()
  assert 'id="alpha"' in page
  assert 'id="slice"' not in page and 'id="subject"' not in page


@pytest.mark.parametrize("change,match", [
    (lambda f, a, s: ({}, a, s), "frames is empty"),
    (lambda f, a, s: ({"x": {"generated": f["sub-01"]["generated"]}}, a, s),
     r"frames\['x'\] must have exactly the keys"),
    (lambda f, a, s: ({**f, "sub-02": {**f["sub-02"], "subtraction":
                                       f["sub-02"]["subtraction"][:, :, :4]}}, a, s),
     r"frames\['sub-02'\]\['subtraction'\] has shape \(2, 5, 4, 8\)"),
    (lambda f, a, s: ({"sub-01": {**f["sub-01"], "component2":
                                  np.where(np.arange(8) == 3, np.nan,
                                           f["sub-01"]["component2"])}}, a, s),
     r"frames\['sub-01'\]\['component2'\] has 80 non-finite"),
    (lambda f, a, s: (f, a[:4], s), "alphas has 4 values but the frames have 5"),
    (lambda f, a, s: (f, [0.0, 1.0, float("nan"), 2.0, 3.0], s), "alphas must be"),
    (lambda f, a, s: (f, a, ["only one"]), "slice_labels has 1 names but the frames have 2"),
    (lambda f, a, s: ({"sub-01": {**f["sub-01"], "generated": np.zeros((2, 0, 8, 8))}}, a, s),
     r"frames\['sub-01'\]\['generated'\] has shape \(2, 0, 8, 8\)"),
])
def test_bad_input_raises_data_error_and_leaves_the_old_page(tmp_path, change, match):
  path = tmp_path / "scrub.html"
  path.write_text("old page")
  frames, alphas, labels = change(_frames(), list(ALPHAS), ["a", "b"])
  with pytest.raises(DataError, match=match):
    write_scrubber(path, frames, alphas, slice_labels=labels)
  assert path.read_text() == "old page" and os.listdir(tmp_path) == ["scrub.html"]


# ---------------------------------------------------------------------------
# Headless browser.


def _browser():
  for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
    found = shutil.which(name)
    if found:
      return found
  pytest.skip("no chromium binary on PATH (CI installs Debian's chromium)")


def _above_4(fd):
  high = fcntl.fcntl(fd, fcntl.F_DUPFD, 10)
  os.close(fd)
  return high


class _DevTools:
  """A DevTools-protocol session with one page, over chromium's debugging pipe."""

  def __init__(self, binary, profile_dir, log_path):
    cmd_r, self._cmd_w = os.pipe()  # we write commands; chromium reads them on fd 3
    self._out_r, out_w = os.pipe()  # chromium writes replies and events on fd 4
    cmd_r, out_w = _above_4(cmd_r), _above_4(out_w)  # so moving them cannot clobber 3 or 4
    self._log = open(log_path, "wb")  # pylint: disable=consider-using-with
    args = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe",
            f"--user-data-dir={profile_dir}", "--no-first-run", "--no-default-browser-check",
            "--disable-extensions", "about:blank"]
    # bash moves the pipe ends onto the descriptor numbers chromium expects.
    self.proc = subprocess.Popen(  # pylint: disable=consider-using-with
        ["bash", "-c", f'exec "$@" 3<&{cmd_r} 4>&{out_w} {cmd_r}<&- {out_w}>&-', "bash", *args],
        pass_fds=(cmd_r, out_w), stdin=subprocess.DEVNULL, stdout=self._log,
        stderr=subprocess.STDOUT)
    os.close(cmd_r)
    os.close(out_w)
    self._buf, self._next_id, self.session = b"", 0, None

  def call(self, method, params=None, timeout=30.0):
    self._next_id += 1
    msg = {"id": self._next_id, "method": method, "params": params or {}}
    if self.session:
      msg["sessionId"] = self.session
    os.write(self._cmd_w, json.dumps(msg).encode() + b"\0")
    deadline = time.monotonic() + timeout
    while True:
      while b"\0" in self._buf:
        raw, self._buf = self._buf.split(b"\0", 1)
        reply = json.loads(raw)
        if reply.get("id") == self._next_id:
          if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
          return reply["result"]
      left = deadline - time.monotonic()
      if left <= 0 or not select.select([self._out_r], [], [], left)[0]:
        raise TimeoutError(f"no reply to {method} within {timeout} s")
      chunk = os.read(self._out_r, 1 << 20)
      if not chunk:
        raise RuntimeError(f"chromium exited (status {self.proc.poll()}) during {method}")
      self._buf += chunk

  def open_page(self, url):
    target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
    self.session = self.call("Target.attachToTarget",
                             {"targetId": target, "flatten": True})["sessionId"]
    self.call("Page.navigate", {"url": url})
    deadline = time.monotonic() + 30
    while not self.evaluate("location.protocol === 'file:' && document.readyState === 'complete'"):
      if time.monotonic() > deadline:
        raise TimeoutError(f"{url} did not finish loading")
      time.sleep(0.05)

  def evaluate(self, expression):
    result = self.call("Runtime.evaluate", {"expression": expression, "awaitPromise": True,
                                            "returnByValue": True})
    if "exceptionDetails" in result:
      raise RuntimeError(f"page script failed: {result['exceptionDetails']}")
    return result["result"].get("value")

  def close(self):
    try:
      self.session = None
      self.call("Browser.close", timeout=10)
    except (RuntimeError, TimeoutError, OSError):
      pass
    try:
      self.proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
      self.proc.kill()
      self.proc.wait()
    os.close(self._cmd_w)
    os.close(self._out_r)
    self._log.close()


# Sets the controls, fires the events a user's drag fires, then reads back, per panel,
# which frame is shown and the centre pixel of the image the browser decoded.
_MOVE = """(async () => {
  const set = (id, value, type) => {
    const e = document.getElementById(id);
    e.value = String(value);
    e.dispatchEvent(new Event(type, {bubbles: true}));
  };
  %s
  const out = {alpha: document.getElementById("alpha-value").textContent,
               slice: (document.getElementById("slice-value") || {}).textContent,
               max: document.getElementById("cbar-subtraction-max").textContent, panels: {}};
  for (const p of ["generated", "subtraction", "component2"]) {
    const img = document.getElementById("panel-" + p);
    await img.decode();
    const c = document.createElement("canvas");
    c.width = img.naturalWidth; c.height = img.naturalHeight;
    const ctx = c.getContext("2d");
    ctx.drawImage(img, 0, 0);
    const px = ctx.getImageData(c.width >> 1, c.height >> 1, 1, 1).data;
    out.panels[p] = {frame: img.dataset.frame, size: [img.naturalWidth, img.naturalHeight],
                     rgb: [px[0], px[1], px[2]]};
  }
  return out;
})()"""


def test_sliders_scrub_all_three_panels_in_step_in_chromium(tmp_path):
  binary = _browser()
  path = write_scrubber(tmp_path / "scrub.html", _frames(), ALPHAS,
                        slice_labels=["z=10", "z=12"], title="direction 3")
  browser = _DevTools(binary, tmp_path / "profile", tmp_path / "chromium.log")
  try:
    try:
      browser.open_page("file://" + os.path.abspath(path) + "#alpha=1")
    except (RuntimeError, TimeoutError) as e:
      log = (tmp_path / "chromium.log").read_text(errors="replace")[-2000:]
      raise AssertionError(f"chromium did not load the page: {e}\n{log}") from None
    states = [(0, 0, 1, "")]  # opened at #alpha=1
    states += [(0, 0, a, f'set("alpha", {a}, "input");') for a in (4, 0, 2)]
    states += [(0, 1, 3, 'set("alpha", 3, "input"); set("slice", 1, "input");')]
    states += [(1, 1, 3, 'set("subject", 1, "change");')]
    states += [(1, 0, 4, 'set("slice", 0, "input"); set("alpha", 4, "input");')]
    for s, k, a, script in states:
      shown = browser.evaluate(_MOVE % script)
      want = _expected(s, k, a)
      assert shown["alpha"] == f"{ALPHAS[a]:.4g}", (s, k, a, shown)
      assert shown["slice"] == ["z=10", "z=12"][k]
      assert shown["max"] == f"+{3.0 * (s + 1) * (k + 1):.4g}"
      for panel, got in shown["panels"].items():
        assert got["frame"] == f"{s},{k},{a}", (panel, s, k, a)  # the three move together
        assert got["size"] == [SIZE, SIZE]
        np.testing.assert_allclose(got["rgb"], want[panel], atol=1,
                                   err_msg=f"{panel} at subject {s}, slice {k}, alpha {a}")
  finally:
    browser.close()
