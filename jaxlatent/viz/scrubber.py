"""A traversal you can scrub: one self-contained HTML page with an alpha slider.

For one analysed direction, :func:`write_scrubber` shows three panels side by side:
the generated slice, its subtraction map (the change from the first alpha) and the
component-2 map, and an alpha slider that moves all three in step.  A slice slider
appears when several slices were analysed and a subject selector when several
subjects were.  Every frame is embedded as a PNG data URI and the script is inline,
so the page works offline from the file system (no CDN, no server, no file beside
it).  The two maps are coloured blue-white-red on a scale symmetric about zero and
fixed across alpha (per subject and slice), so a growing change reads as a
deepening colour; a colour bar gives the scale.

The page can also be opened at a given state: ``scrub.html#alpha=3&slice=1&subject=0``
(indices, clamped to the valid range).
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
from typing import Any, Mapping, Sequence

import numpy as np

from jaxlatent import atomic_io
from jaxlatent.errors import DataError
from jaxlatent.viz.grids import to_uint8

PANELS = ("generated", "subtraction", "component2")
_CAPTIONS = {
    "generated": "generated slice",
    "subtraction": "subtraction map (change from the first alpha)",
    "component2": "component-2 map",
}
_MAPS = ("subtraction", "component2")
_DISPLAY_PX = 256  # small slices are enlarged (pixelated) to about this width


def bwr(t: np.ndarray) -> np.ndarray:
  """Blue-white-red colours (uint8 [..., 3]) of ``t`` in [0, 1] (0 blue, 0.5 white, 1 red)."""
  t = np.clip(np.asarray(t, np.float64), 0.0, 1.0)
  lo = np.minimum(2.0 * t, 1.0)  # rises on the blue half
  hi = np.minimum(2.0 - 2.0 * t, 1.0)  # falls on the red half
  rgb = np.stack([lo, np.minimum(lo, hi), hi], axis=-1)
  return np.round(rgb * 255.0).astype(np.uint8)


def _png_uri(pixels: np.ndarray) -> str:
  from PIL import Image  # pylint: disable=g-import-not-at-top
  buf = io.BytesIO()
  Image.fromarray(np.ascontiguousarray(pixels)).save(buf, format="PNG")
  return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _fmt(v: float) -> str:
  return f"{v:.4g}"


def _check_frames(frames: Any, alphas: np.ndarray) -> tuple[dict[str, dict[str, np.ndarray]],
                                                              tuple[int, ...]]:
  """Validated frames as {subject: {panel: float [n_slices, n_alpha, H, W]}} and that shape."""
  if not isinstance(frames, Mapping) or not frames:
    raise DataError("frames is empty: give {subject: {'generated', 'subtraction', "
                    "'component2': [n_alpha, H, W] or [n_slices, n_alpha, H, W]}}")
  out: dict[str, dict[str, np.ndarray]] = {}
  shape = None
  for subject, panels in frames.items():
    name = f"frames[{subject!r}]"
    if not isinstance(panels, Mapping) or set(panels) != set(PANELS):
      got = sorted(map(str, panels)) if isinstance(panels, Mapping) else type(panels).__name__
      raise DataError(f"{name} must have exactly the keys {list(PANELS)}, got {got}")
    out[str(subject)] = {}
    for panel in PANELS:
      try:
        arr = np.asarray(panels[panel], np.float64)
      except (TypeError, ValueError) as e:
        raise DataError(f"{name}[{panel!r}] is not a numeric array ({e})") from None
      if arr.ndim == 3:
        arr = arr[None]  # one slice
      if arr.ndim != 4 or 0 in arr.shape:
        raise DataError(f"{name}[{panel!r}] has shape {np.shape(panels[panel])}; expected a "
                        "non-empty [n_alpha, H, W] or [n_slices, n_alpha, H, W]")
      if shape is None:
        shape = arr.shape
      elif arr.shape != shape:
        raise DataError(f"{name}[{panel!r}] has shape {arr.shape} (as [n_slices, n_alpha, H, W])"
                        f" but the first panel has {shape}; all panels and subjects must agree")
      if not np.all(np.isfinite(arr)):
        raise DataError(f"{name}[{panel!r}] has {int(np.sum(~np.isfinite(arr)))} "
                        "non-finite (NaN/Inf) values")
      out[str(subject)][panel] = arr
  if len(out) != len(frames):
    raise DataError("frames has subjects whose names are equal as text; name them uniquely")
  if shape[1] != alphas.shape[0]:
    raise DataError(f"alphas has {alphas.shape[0]} values but the frames have "
                    f"{shape[1]} alpha steps")
  return out, shape


def _page(title: str, data: dict[str, Any], subjects: list[str], slice_labels: list[str],
          n_alpha: int, width: int, height: int) -> str:
  scale = max(1, _DISPLAY_PX // max(width, 1))
  w_px, h_px = width * scale, height * scale
  controls = []
  if len(subjects) > 1:
    options = "".join(f'<option value="{i}">{html.escape(s)}</option>'
                      for i, s in enumerate(subjects))
    controls.append(f'<label>subject <select id="subject">{options}</select></label>')
  if len(slice_labels) > 1:
    controls.append(f'<label>slice <input type="range" id="slice" min="0" '
                    f'max="{len(slice_labels) - 1}" step="1" value="0"> '
                    '<span id="slice-value"></span></label>')
  controls.append(f'<label>alpha <input type="range" id="alpha" min="0" max="{n_alpha - 1}" '
                  'step="1" value="0"> <span id="alpha-value"></span></label>')
  figures = []
  for panel in PANELS:
    bar = ""
    if panel in _MAPS:
      bar = (f'<div class="cbar"><span id="cbar-{panel}-min"></span>'
             f'<img alt="colour bar" src="{data["colourbar"]}">'
             f'<span id="cbar-{panel}-max"></span></div>')
    figures.append(f'<figure><img id="panel-{panel}" alt="{_CAPTIONS[panel]}" width="{w_px}" '
                   f'height="{h_px}"><figcaption>{html.escape(_CAPTIONS[panel])}</figcaption>'
                   f'{bar}</figure>')
  # "<" escaped so no string in the data can end the script element.
  payload = json.dumps(data).replace("<", "\\u003c")
  return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }}
.controls label {{ display: block; margin: 0.4em 0; }}
.controls input[type=range] {{ width: 320px; vertical-align: middle; }}
.panels {{ display: flex; flex-wrap: wrap; gap: 1.5em; }}
figure {{ margin: 0; }}
figure > img {{ image-rendering: pixelated; border: 1px solid #ccc; background: #000; }}
figcaption {{ font-size: 0.9em; max-width: {w_px}px; }}
.cbar {{ display: flex; align-items: center; gap: 0.4em; font-size: 0.85em; }}
.cbar img {{ width: {max(w_px - 80, 60)}px; height: 12px; }}
</style></head>
<body>
<h1>{html.escape(title)}</h1>
<div class="controls">{''.join(controls)}</div>
<div class="panels">{''.join(figures)}</div>
<script>
"use strict";
const DATA = {payload};
function el(id) {{ return document.getElementById(id); }}
function index(id) {{ const e = el(id); return e ? Number(e.value) : 0; }}
function show() {{
  const s = index("subject"), k = index("slice"), a = index("alpha");
  const view = DATA.frames[s][k];
  for (const p of DATA.panels) {{
    const img = el("panel-" + p);
    img.src = view[p][a];
    img.dataset.frame = s + "," + k + "," + a;
  }}
  el("alpha-value").textContent = DATA.alphas[a];
  if (el("slice-value")) el("slice-value").textContent = DATA.slices[k];
  for (const p of DATA.maps) {{
    el("cbar-" + p + "-min").textContent = "-" + view.scale[p];
    el("cbar-" + p + "-max").textContent = "+" + view.scale[p];
  }}
}}
function fromHash() {{
  const q = new URLSearchParams(location.hash.slice(1));
  for (const id of ["subject", "slice", "alpha"]) {{
    const e = el(id), v = Number(q.get(id));
    if (!e || !q.has(id) || !Number.isInteger(v)) continue;
    const hi = e.tagName === "SELECT" ? e.options.length - 1 : Number(e.max);
    e.value = String(Math.min(Math.max(v, 0), hi));
  }}
}}
for (const id of ["subject", "slice", "alpha"]) {{
  const e = el(id);
  if (e) {{ e.addEventListener("input", show); e.addEventListener("change", show); }}
}}
window.addEventListener("hashchange", () => {{ fromHash(); show(); }});
fromHash();
show();
</script>
</body></html>
"""


def traversal_panels(images: Any, result: Any, component: int = 2) -> dict[str, np.ndarray]:
  """The three panels of one subject's traversal, from its eigen-analysis.

  Args:
    images: ``[T, H, W, 1]`` or ``[n_slices, T, H, W, 1]``, the rendered traversal.
    result: the :class:`jaxlatent.analysis.eigen.EigenResult` of those traversals
      (the same leading dims).
    component: which component to scrub (1-based, as in the reports).

  Returns:
    ``{"generated", "subtraction", "component2"}`` arrays ``[..., T, H, W]``.  The
    component panel at step t is ``(M v_c) * v_c[t]``: the part of the traversal's
    change that component c explains at that step (its map scaled by the
    eigenvector's value there), so it grows with alpha as the change does.
  """
  images = np.asarray(images, np.float32)
  maps = np.asarray(result.component_maps, np.float32)  # [..., K, H, W, C]
  vecs = np.asarray(result.eigenvectors, np.float32)  # [..., T, T]
  if images.ndim not in (4, 5) or images.shape[-1] != 1:
    raise DataError(f"images has shape {images.shape}; expected [T, H, W, 1] or "
                    "[n_slices, T, H, W, 1]")
  if not 1 <= component <= maps.shape[-4]:
    raise DataError(f"component={component} is not among the {maps.shape[-4]} kept components")
  if maps.shape[:-4] != images.shape[:-4] or maps.shape[-3:] != images.shape[-3:]:
    raise DataError(f"result has component maps {maps.shape}, which do not match images "
                    f"{images.shape}")
  c = component - 1
  comp = vecs[..., :, c, None, None] * maps[..., c, None, :, :, 0]  # [..., T, H, W]
  return {"generated": images[..., 0],
          "subtraction": np.asarray(result.subtraction_maps, np.float32)[..., 0],
          "component2": comp}


def write_scrubber(path: str | os.PathLike, frames: Mapping[str, Mapping[str, Any]],
                   alphas: Sequence[float], slice_labels: Sequence[str] | None = None,
                   title: str = "Latent traversal") -> str:
  """Writes one self-contained HTML page that scrubs a traversal; returns its path.

  Args:
    path: the ``.html`` file to write (parent folders are created); written to a
      temporary name and renamed, so it is never half-written.
    frames: ``{subject: {"generated": g, "subtraction": d, "component2": c}}``, each
      array ``[n_alpha, H, W]`` (one slice) or ``[n_slices, n_alpha, H, W]``, the
      same shape everywhere.  ``g`` is in [-1, 1] (clipped); ``d`` and ``c`` are
      signed maps, coloured on a scale symmetric about 0 and fixed across alpha.
      Subjects keep the mapping's order in the selector.
    alphas: the ``n_alpha`` step sizes, shown as the slider's current value.
    slice_labels: ``n_slices`` names for the slice slider (default ``slice 0``...).
    title: the page's heading, e.g. which model and direction.

  Raises:
    DataError: naming the argument, when frames are empty, disagree in shape with
      each other, ``alphas`` or ``slice_labels``, or hold NaN/Inf.
  """
  try:
    alpha_arr = np.asarray(alphas, np.float64).reshape(-1)
  except (TypeError, ValueError) as e:
    raise DataError(f"alphas must be numbers ({e})") from None
  if alpha_arr.size == 0 or not np.all(np.isfinite(alpha_arr)):
    raise DataError(f"alphas must be a non-empty list of finite numbers, got {list(alphas)}")
  checked, (n_slices, n_alpha, height, width) = _check_frames(frames, alpha_arr)
  if slice_labels is None:
    labels = [f"slice {i}" for i in range(n_slices)]
  else:
    labels = [str(s) for s in slice_labels]
    if len(labels) != n_slices:
      raise DataError(f"slice_labels has {len(labels)} names but the frames have "
                      f"{n_slices} slices")

  views = []
  for panels in checked.values():
    per_slice = []
    for k in range(n_slices):
      view: dict[str, Any] = {"scale": {}}
      view["generated"] = [_png_uri(to_uint8(f)) for f in panels["generated"][k]]
      for panel in _MAPS:
        maps = panels[panel][k]
        vmax = float(np.max(np.abs(maps)))
        vmax = vmax if vmax > 0 else 1.0  # an all-zero map shows white
        view[panel] = [_png_uri(bwr(0.5 + 0.5 * m / vmax)) for m in maps]
        view["scale"][panel] = _fmt(vmax)
      per_slice.append(view)
    views.append(per_slice)
  data = {
      "panels": list(PANELS), "maps": list(_MAPS),
      "alphas": [_fmt(a) for a in alpha_arr], "slices": labels,
      "frames": views,
      "colourbar": _png_uri(np.repeat(bwr(np.linspace(0.0, 1.0, 256))[None], 8, axis=0)),
  }
  page = _page(str(title), data, list(checked), labels, n_alpha, width, height)

  path = os.fspath(path)
  if os.path.isdir(path):
    raise DataError(f"{path} is a folder; give the .html file to write")
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  atomic_io.atomic_write_text(path, page)
  return path


__all__ = ["PANELS", "bwr", "traversal_panels", "write_scrubber"]
