"""Slow references for ``jaxlatent.training.augment``, written from stylegan2-ada's AugmentPipe.

* matrices of each transform from given draws (NumPy, float64, one image at a time);
* the colour transform (NumPy);
* the integer transforms (x-flip, 90-degree rotation, integer translation with
  reflected borders) as exact array operations (NumPy);
* the official geometric resampling step by step in torch: margin from the
  transformed corners (max over the batch, capped at size - 1), reflect pad,
  upfirdn2d 2x upsample, ``affine_grid`` / ``grid_sample``, 2x downsample.
"""

from __future__ import annotations

import numpy as np

SYM6 = np.array([
    0.015404109327027373, 0.0034907120842174702, -0.11799011114819057, -0.048311742585633,
    0.4910559419267466, 0.787641141030194, 0.3379294217276218, -0.07263752278646252,
    -0.021060292512300564, 0.04472490177066578, 0.0017677118642428036, -0.007800708325034148,
])


def t2(tx, ty):
  return np.array([[1, 0, tx], [0, 1, ty], [0, 0, 1]], np.float64)


def s2(sx, sy):
  return np.array([[sx, 0, 0], [0, sy, 0], [0, 0, 1]], np.float64)


def r2(theta):
  return np.array([[np.cos(theta), -np.sin(theta), 0], [np.sin(theta), np.cos(theta), 0],
                   [0, 0, 1]], np.float64)


def geometric_matrix(d: dict, height: int, width: int) -> np.ndarray:
  """G_inv of one image: each transform's inverse, applied in the official order."""
  g = np.eye(3)
  g = g @ np.linalg.inv(s2(1 - 2 * d["xflip"], 1))
  g = g @ np.linalg.inv(r2(-np.pi / 2 * d["rotate90"]))
  g = g @ np.linalg.inv(t2(np.round(d["xint"][0] * width), np.round(d["xint"][1] * height)))
  g = g @ np.linalg.inv(s2(d["scale"], d["scale"]))
  g = g @ np.linalg.inv(r2(-d["rotate_pre"]))
  g = g @ np.linalg.inv(s2(d["aniso"], 1 / d["aniso"]))
  g = g @ np.linalg.inv(r2(-d["rotate_post"]))
  g = g @ np.linalg.inv(t2(d["xfrac"][0] * width, d["xfrac"][1] * height))
  return g


def color_matrix(d: dict, num_channels: int) -> np.ndarray:
  """C of one image: brightness, contrast, luma flip, then (RGB only) hue, saturation."""
  v = np.array([1, 1, 1, 0], np.float64) / np.sqrt(3)
  vv = np.outer(v, v)
  c = np.eye(4)
  b = d["brightness"]
  c = np.array([[1, 0, 0, b], [0, 1, 0, b], [0, 0, 1, b], [0, 0, 0, 1]]) @ c
  k = d["contrast"]
  c = np.diag([k, k, k, 1.0]) @ c
  c = (np.eye(4) - 2 * vv * d["lumaflip"]) @ c
  if num_channels == 3:
    # Rodrigues' rotation about the unit luma axis u: cos I + sin [u]x + (1 - cos) u u^T.
    u = v[:3]
    th = d["hue"]
    ux = np.array([[0, -u[2], u[1]], [u[2], 0, -u[0]], [-u[1], u[0], 0]])
    rot = np.eye(4)
    rot[:3, :3] = np.cos(th) * np.eye(3) + np.sin(th) * ux + (1 - np.cos(th)) * np.outer(u, u)
    c = rot @ c
    c = (vv + (np.eye(4) - vv) * d["saturation"]) @ c
  return c


def apply_color(image: np.ndarray, c: np.ndarray) -> np.ndarray:
  """One image [H, W, C]: RGB as an affine map per pixel; grey via the mean RGB row."""
  if image.shape[-1] == 3:
    out = np.empty_like(image, dtype=np.float64)
    for i in range(image.shape[0]):
      for j in range(image.shape[1]):
        out[i, j] = c[:3, :3] @ image[i, j] + c[:3, 3]
    return out
  gain = np.mean([c[r, :3].sum() for r in range(3)])
  offset = np.mean([c[r, 3] for r in range(3)])
  return image * gain + offset


def integer_transforms(image: np.ndarray, xflip: int, rot90: int, shift_x: int,
                       shift_y: int) -> np.ndarray:
  """Exact result of flip, quarter turns and an integer shift (reflected borders).

  G_inv = flip^-1 @ rot^-1 @ shift^-1 and out(q) = in(G_inv q): the input is
  flipped first, then rotated, then shifted.
  """
  x = np.asarray(image, np.float64)
  if xflip:
    x = x[:, ::-1]
  # One quarter turn: output (r, c) reads input (c, W-1-r), i.e. np.rot90 with k=1.
  x = np.rot90(x, k=rot90, axes=(0, 1))
  h, w = x.shape[:2]
  padded = np.pad(x, ((h, h), (w, w), (0, 0)), mode="reflect")
  return padded[h - shift_y:2 * h - shift_y, w - shift_x:2 * w - shift_x]


# ---------------------------------------------------------------------------
# The official geometric resampling in torch (NCHW).


def _upfirdn_1d(x, f, up, down, pad0, pad1, flip, gain, dim):
  import torch
  n = x.shape[dim]
  if up > 1:
    shape = list(x.shape)
    z = torch.zeros(shape[:dim] + [n, up] + shape[dim + 1:], dtype=x.dtype)
    z.select(dim + 1, 0).copy_(x)
    shape[dim] = n * up
    x = z.reshape(shape)
  pads = [0, 0] * x.ndim
  # torch.nn.functional.pad lists the last dimension first.
  k = (x.ndim - 1 - dim) * 2
  pads[k], pads[k + 1] = max(pad0, 0), max(pad1, 0)
  x = torch.nn.functional.pad(x, pads)
  x = x.narrow(dim, max(-pad0, 0), x.shape[dim] - max(-pad0, 0) - max(-pad1, 0))
  taps = torch.as_tensor(f * gain, dtype=x.dtype)
  if not flip:
    taps = taps.flip(0)
  m = x.shape[dim] - taps.numel() + 1
  y = sum(taps[i] * x.narrow(dim, i, m) for i in range(taps.numel()))
  return y.narrow(dim, 0, m)[(slice(None),) * dim + (slice(None, None, down),)]


def official_geometric(images: np.ndarray, g_inv: np.ndarray, full_pad: bool = False) -> np.ndarray:
  """The official execution of ``G_inv [B, 3, 3]`` on ``images [B, H, W, C]``.

  ``full_pad``: pad by the cap (size - 1) instead of the margin the corners need.
  """
  import torch
  x = torch.as_tensor(np.array(np.transpose(images, (0, 3, 1, 2))), dtype=torch.float64)
  g = torch.as_tensor(np.array(g_inv), dtype=torch.float64)
  b, ch, h, w = x.shape
  f = SYM6 / SYM6.sum()
  hz_pad = f.size // 4
  cx, cy = (w - 1) / 2, (h - 1) / 2
  cp = torch.tensor([[-cx, -cy, 1], [cx, -cy, 1], [cx, cy, 1], [-cx, cy, 1]], dtype=torch.float64)
  cp = g @ cp.t()  # [B, xyz, corner]
  margin = cp[:, :2, :].permute(1, 0, 2).flatten(1)  # [xy, B * corner]
  margin = torch.cat([-margin, margin]).max(dim=1).values  # [x0, y0, x1, y1]
  margin = margin + torch.tensor([hz_pad * 2 - cx, hz_pad * 2 - cy] * 2, dtype=torch.float64)
  margin = margin.clamp(min=0)
  margin = torch.minimum(margin, torch.tensor([w - 1, h - 1] * 2, dtype=torch.float64))
  if full_pad:
    margin = torch.tensor([w - 1, h - 1] * 2, dtype=torch.float64)
  mx0, my0, mx1, my1 = [int(v) for v in margin.ceil()]
  x = torch.nn.functional.pad(x, [mx0, mx1, my0, my1], mode="reflect")
  g = torch.as_tensor(t2((mx0 - mx1) / 2, (my0 - my1) / 2)) @ g
  # upsample2d(up=2): pad ((12 + 1) // 2, (12 - 2) // 2) = (6, 5), gain 2 per axis.
  x = _upfirdn_1d(x, f, 2, 1, 6, 5, False, 2.0, 3)
  x = _upfirdn_1d(x, f, 2, 1, 6, 5, False, 2.0, 2)
  g = torch.as_tensor(s2(2, 2)) @ g @ torch.as_tensor(s2(0.5, 0.5))
  g = torch.as_tensor(t2(-0.5, -0.5)) @ g @ torch.as_tensor(t2(0.5, 0.5))
  shape = [b, ch, (h + hz_pad * 2) * 2, (w + hz_pad * 2) * 2]
  g = (torch.as_tensor(s2(2 / x.shape[3], 2 / x.shape[2])) @ g
       @ torch.as_tensor(s2(shape[3] / 2, shape[2] / 2)))
  grid = torch.nn.functional.affine_grid(g[:, :2, :], shape, align_corners=False)
  x = torch.nn.functional.grid_sample(x, grid, mode="bilinear", padding_mode="zeros",
                                      align_corners=False)
  # downsample2d(down=2, padding=-6, flip_filter=True): net padding -1 each side.
  x = _upfirdn_1d(x, f, 1, 2, -1, -1, True, 1.0, 3)
  x = _upfirdn_1d(x, f, 1, 2, -1, -1, True, 1.0, 2)
  return np.transpose(x.numpy(), (0, 2, 3, 1))
