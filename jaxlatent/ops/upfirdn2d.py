"""FIR resampling, resampling convolutions and fused bias + activation (NHWC).

Our own JAX code after the behaviour of NVlabs stylegan2-ada-pytorch
``torch_utils/ops/{upfirdn2d,conv2d_resample,bias_act}.py``, so that a network trained
with that code computes the same function here:

  * :func:`upfirdn2d`: zero-insertion upsampling, pad (negative = crop), FIR filter,
    keep every ``down``-th pixel; :func:`setup_filter` turns ``[1, 3, 3, 1]`` into the
    normalised 4x4 outer product used everywhere in StyleGAN2;
  * :func:`upsample2d` / :func:`downsample2d` / :func:`filter2d`: the same with the
    padding that keeps the shape a multiple / fraction of / equal to the input;
  * :func:`conv2d_resample`: a convolution with up-sampling (transposed conv, then the
    filter) or down-sampling (the filter, then a strided conv), with the reference's
    padding arithmetic, so the border pixels agree too;
  * :func:`bias_act`: bias, activation with its default gain (lrelu: slope 0.2, gain
    sqrt(2)), extra gain, then clamping to ``[-clamp, clamp]`` (``conv_clamp``).

Speed on XLA:CPU: the FIR filters run in polyphase form (strided slices times taps,
no inserted zeros; :func:`upfirdn2d_reference` is the definition by depthwise
convs), the transposed conv as one conv to the ``up**2`` output phases, the
resampling convs as patch GEMMs and the kernel gradients of the other convs as
GEMMs: the forms whose gradients (and second derivatives, for R1 and path-length
regularisation) XLA:CPU runs fast. Grouped convs (the fused modulated conv) keep
XLA's convolutions.

Layout: images are ``[N, H, W, C]`` (the reference uses ``[N, C, H, W]``); conv weights
are ``[kh, kw, in_channels // groups, out_channels]`` (the reference's
``[out, in, kh, kw]`` transposed by ``(2, 3, 1, 0)``); filters are ``[fh, fw]`` or
``[taps]`` (separable) as in the reference. Padding is ``int``, ``(x, y)`` or
``(x_before, x_after, y_before, y_after)``: x (width) first, as in the reference.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

Padding = int | Sequence[int]
Scaling = int | Sequence[int]

# name -> (function of (x, alpha), default alpha, default gain): the gains keep the
# signal's second moment near 1 through the layer (He et al.).
ACTIVATIONS: dict[str, tuple[Any, float, float]] = {
    "linear": (lambda x, a: x, 0.0, 1.0),
    "relu": (lambda x, a: jax.nn.relu(x), 0.0, math.sqrt(2.0)),
    "lrelu": (lambda x, a: jnp.where(x >= 0, x, x * a), 0.2, math.sqrt(2.0)),
    "tanh": (lambda x, a: jnp.tanh(x), 0.0, 1.0),
    "sigmoid": (lambda x, a: jax.nn.sigmoid(x), 0.0, 1.0),
    "elu": (lambda x, a: jax.nn.elu(x), 0.0, 1.0),
    "selu": (lambda x, a: jax.nn.selu(x), 0.0, 1.0),
    "softplus": (lambda x, a: jax.nn.softplus(x), 0.0, 1.0),
    "swish": (lambda x, a: jax.nn.sigmoid(x) * x, 0.0, math.sqrt(2.0)),
}


def activation_gain(act: str) -> float:
  """The default gain of activation ``act`` (sqrt(2) for relu / lrelu / swish, else 1)."""
  if act not in ACTIVATIONS:
    raise ValueError(f"activation={act!r}: expected one of {tuple(ACTIVATIONS)}")
  return ACTIVATIONS[act][2]


def bias_act(x: jax.Array, b: jax.Array | None = None, act: str = "linear",
             alpha: float | None = None, gain: float | None = None,
             clamp: float | None = None) -> jax.Array:
  """``clip(act(x + b) * gain, -clamp, clamp)`` with ``b`` on the last (channel) axis.

  Args:
    x: any shape, channels last.
    b: ``[C]`` bias or None.
    act: a key of :data:`ACTIVATIONS`.
    alpha: the activation's shape parameter (lrelu slope); None = its default (0.2).
    gain: output scale; None = the activation's default gain.
    clamp: clamp the result to ``[-clamp, clamp]``; None = no clamping.
  """
  if act not in ACTIVATIONS:
    raise ValueError(f"activation={act!r}: expected one of {tuple(ACTIVATIONS)}")
  fn, def_alpha, def_gain = ACTIVATIONS[act]
  alpha = def_alpha if alpha is None else float(alpha)
  gain = def_gain if gain is None else float(gain)
  if b is not None:
    x = x + b.astype(x.dtype)
  x = fn(x, alpha)
  if gain != 1:
    x = x * gain
  if clamp is not None:
    if clamp < 0:
      raise ValueError(f"clamp={clamp}: must be >= 0 or None")
    x = jnp.clip(x, -clamp, clamp)
  return x


def _parse_scaling(s: Scaling) -> tuple[int, int]:
  sx, sy = (s, s) if isinstance(s, int) else tuple(s)
  if sx < 1 or sy < 1:
    raise ValueError(f"scaling factor {s}: must be >= 1")
  return int(sx), int(sy)


def _parse_padding(p: Padding) -> tuple[int, int, int, int]:
  if isinstance(p, int):
    return p, p, p, p
  p = tuple(int(v) for v in p)
  if len(p) == 2:
    return p[0], p[0], p[1], p[1]
  if len(p) != 4:
    raise ValueError(f"padding {p}: expected an int, (x, y) or (x0, x1, y0, y1)")
  return p


def _filter_size(f) -> tuple[int, int]:
  """(fw, fh) of a ``[fh, fw]`` or separable ``[taps]`` filter; (1, 1) for None."""
  if f is None:
    return 1, 1
  return int(f.shape[-1]), int(f.shape[0])


def setup_filter(f: Any, normalize: bool = True, flip_filter: bool = False,
                 gain: float = 1.0, separable: bool | None = None) -> np.ndarray:
  """A float32 FIR filter for :func:`upfirdn2d` from a list / array (None = identity).

  A 1-D filter with fewer than 8 taps becomes its 2-D outer product (so ``[1, 3, 3, 1]``
  gives a ``[4, 4]`` filter), longer ones stay separable unless ``separable`` says
  otherwise. ``normalize`` scales it to unit DC gain; ``gain`` scales the 2-D response.
  """
  f = np.asarray(1.0 if f is None else f, dtype=np.float32)
  if f.ndim == 0:
    f = f[None]
  if f.ndim not in (1, 2) or f.size == 0:
    raise ValueError(f"filter of shape {f.shape}: expected [taps] or [fh, fw]")
  if separable is None:
    separable = f.ndim == 1 and f.size >= 8
  if f.ndim == 1 and not separable:
    f = np.outer(f, f)
  if normalize:
    f = f / f.sum()
  if flip_filter:
    f = f[::-1, ::-1] if f.ndim == 2 else f[::-1]
  f = f * np.float32(gain ** (f.ndim / 2))
  return np.ascontiguousarray(f, dtype=np.float32)


def _depthwise(x: jax.Array, k: jax.Array, strides: tuple[int, int]) -> jax.Array:
  """'VALID' correlation of every channel of ``x [N, H, W, C]`` with ``k [kh, kw]``."""
  c = x.shape[-1]
  kernel = jnp.broadcast_to(k[:, :, None, None], k.shape + (1, c)).astype(x.dtype)
  return jax.lax.conv_general_dilated(
      x, kernel, strides, "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"),
      feature_group_count=c)


def _resample_args(up: Scaling, down: Scaling, padding: Padding, f: Any):
  """Parsed ``(up_x, up_y), (down_x, down_y), (px0, px1, py0, py1)`` and the filter array."""
  fa = jnp.ones((1, 1), jnp.float32) if f is None else jnp.asarray(f, jnp.float32)
  if fa.ndim not in (1, 2):
    raise ValueError(f"filter of shape {fa.shape}: expected [taps] or [fh, fw]")
  return _parse_scaling(up), _parse_scaling(down), _parse_padding(padding), fa


def upfirdn2d_reference(x: jax.Array, f: Any = None, up: Scaling = 1, down: Scaling = 1,
              padding: Padding = 0, flip_filter: bool = False, gain: float = 1.0
              ) -> jax.Array:
  """:func:`upfirdn2d` by zero insertion and depthwise convolutions (the definition).

  Slower on XLA:CPU (depthwise convs and their gradients), kept as the reference the
  polyphase form is tested against and for the cases it does not cover.  Arguments
  and result as :func:`upfirdn2d`.
  """
  (upx, upy), (downx, downy), (px0, px1, py0, py1), f = _resample_args(up, down, padding, f)
  # Zero insertion (with the trailing up - 1 zeros of the reference) and the padding or
  # cropping are one lax.pad: interior padding inserts, negative edges crop.
  x = jax.lax.pad(x, jnp.zeros((), x.dtype),
                  [(0, 0, 0), (py0, py1 + upy - 1, upy - 1), (px0, px1 + upx - 1, upx - 1),
                   (0, 0, 0)])
  f = f * (gain ** (f.ndim / 2))
  if not flip_filter:  # a convolution is a correlation with the flipped filter
    f = jnp.flip(f)
  if f.ndim == 2:
    return _depthwise(x, f, (downy, downx))
  x = _depthwise(x, f[None, :], (1, downx))  # along the width, then the height
  return _depthwise(x, f[:, None], (downy, 1))


# A polyphase component summing more products than this per output pixel runs as
# depthwise convs (upfirdn2d_reference) instead: the sum of shifted slices grows with the
# filter size, the convolution does not.
POLYPHASE_MAX_TAPS = 64


def _axis_plan(size: int, up: int, down: int, p0: int, p1: int, taps: int
               ) -> tuple[int, int, int, list[list[tuple[int, int]]]]:
  """How one axis of :func:`upfirdn2d` reads its input, without the inserted zeros.

  Returns ``(n_out, m, stride, phases)``: output pixel ``m_i * up + r`` (``m_i < m``)
  of phase ``r`` is ``sum g[t] x[m_i * stride + d]`` over ``(t, d)`` in ``phases[r]``
  (``g`` the correlation filter, ``x`` zero outside ``[0, size)``); the last
  ``m * up - n_out`` pixels are cropped. Either ``up`` or ``down`` must be 1.
  """
  lo = size * up + p0 + p1 - taps + 1  # filtered length before decimation
  if lo < 1:
    raise ValueError(f"upfirdn2d: padding ({p0}, {p1}) leaves no output for size {size} "
                     f"(up {up}, filter taps {taps})")
  n_out = (lo - 1) // down + 1
  if up == 1:  # padded pixel q * down + t is input pixel q * down + t - p0
    return n_out, n_out, down, [[(t, t - p0) for t in range(taps)]]
  # Upsampled pixel k holds x[k / up] when up divides k, else an inserted zero.
  phases = [[(t, (r + t - p0) // up) for t in range(taps) if (r + t - p0) % up == 0]
            for r in range(up)]
  return n_out, -(-n_out // up), 1, phases


def _polyphase(x: jax.Array, g: jax.Array, plan_y, plan_x) -> jax.Array:
  """Sum of strided slices of ``x [N, H, W, C]`` times taps of ``g [fh, fw]`` per output
  phase (plans from :func:`_axis_plan`), the phases interleaved; float32 accumulation."""
  (ny, my, sy, phy), (nx, mx, sx, phx) = plan_y, plan_x
  ds_y = [d for ph in phy for _, d in ph] or [0]
  ds_x = [d for ph in phx for _, d in ph] or [0]
  # Zero borders for the reads outside the input; negative amounts crop.
  ly, lx = -min(ds_y), -min(ds_x)
  ry = (my - 1) * sy + max(ds_y) - (x.shape[1] - 1)
  rx = (mx - 1) * sx + max(ds_x) - (x.shape[2] - 1)
  acc_dt = jnp.promote_types(x.dtype, jnp.float32)
  xp = jax.lax.pad(x.astype(acc_dt), jnp.zeros((), acc_dt),
                   [(0, 0, 0), (ly, ry, 0), (lx, rx, 0), (0, 0, 0)])
  g = g.astype(acc_dt)
  n, c = x.shape[0], x.shape[3]

  def tap(dy, dx):
    return jax.lax.slice(xp, (0, ly + dy, lx + dx, 0),
                         (n, ly + dy + (my - 1) * sy + 1, lx + dx + (mx - 1) * sx + 1, c),
                         (1, sy, sx, 1))

  rows = []
  for ph_y in phy:
    cols = []
    for ph_x in phx:
      acc = None
      for ty, dy in ph_y:
        for tx, dx in ph_x:
          term = tap(dy, dx) * g[ty, tx]
          acc = term if acc is None else acc + term
      cols.append(jnp.zeros((n, my, mx, c), acc_dt) if acc is None else acc)
    rows.append(cols)
  uy, ux = len(phy), len(phx)
  if uy == 1 and ux == 1:
    y = rows[0][0]
  else:  # [N, my, uy, mx, ux, C]: output pixel (m_y * uy + r_y, m_x * ux + r_x)
    y = jnp.stack([jnp.stack(cols, axis=3) for cols in rows], axis=2)
    y = y.reshape(n, my * uy, mx * ux, c)
  return y[:, :ny, :nx].astype(x.dtype)


def upfirdn2d(x: jax.Array, f: Any = None, up: Scaling = 1, down: Scaling = 1,
              padding: Padding = 0, flip_filter: bool = False, gain: float = 1.0
              ) -> jax.Array:
  """Upsample (insert ``up - 1`` zeros after each pixel), pad, FIR filter, downsample.

  Computed in polyphase form: each output pixel sums only the filter taps that meet
  input pixels (no inserted zeros, no discarded outputs), as shifted, strided slices of
  the input times the taps, so the FIR resampling of StyleGAN2 and its gradient are
  cheap elementwise work on XLA:CPU. Factors with both ``up`` and ``down`` above 1 on
  one axis, and filters larger than ``POLYPHASE_MAX_TAPS`` products per pixel, run as
  :func:`upfirdn2d_reference`. ``f`` may be a traced array (a network's buffer).

  Args:
    x: ``[N, H, W, C]``.
    f: ``[fh, fw]`` or separable ``[taps]`` filter (e.g. from :func:`setup_filter`);
      None = identity.
    up, down: integer factors, or ``(x, y)``.
    padding: zeros added around the upsampled image (negative values crop).
    flip_filter: False = convolution with ``f``, True = correlation.
    gain: overall signal scale (``f`` is scaled by ``gain ** (f.ndim / 2)``).

  Returns:
    ``[N, (H * up_y + py0 + py1 - fh) // down_y + 1, ..., C]``.
  """
  (upx, upy), (downx, downy), pad, fa = _resample_args(up, down, padding, f)
  px0, px1, py0, py1 = pad
  fh, fw = (fa.shape[0],) * 2 if fa.ndim == 1 else fa.shape
  per_pixel = ((-(-fh // upy)) * (-(-fw // upx)) if fa.ndim == 2
               else max(-(-fh // upy), -(-fw // upx)))
  if (upx > 1 and downx > 1) or (upy > 1 and downy > 1) or per_pixel > POLYPHASE_MAX_TAPS:
    return upfirdn2d_reference(x, f, up=up, down=down, padding=padding,
                               flip_filter=flip_filter, gain=gain)
  g = fa * (gain ** (fa.ndim / 2))
  if not flip_filter:  # a convolution is a correlation with the flipped filter
    g = jnp.flip(g)
  h, w = x.shape[1], x.shape[2]
  plan_y = _axis_plan(h, upy, downy, py0, py1, fh)
  plan_x = _axis_plan(w, upx, downx, px0, px1, fw)
  if fa.ndim == 2:
    return _polyphase(x, g, plan_y, plan_x)
  # Separable: along the width, then the height.
  x = _polyphase(x, g[None, :], _axis_plan(h, 1, 1, 0, 0, 1), plan_x)
  return _polyphase(x, g[:, None], plan_y, _axis_plan(x.shape[2], 1, 1, 0, 0, 1))


def filter2d(x: jax.Array, f: Any, padding: Padding = 0, flip_filter: bool = False,
             gain: float = 1.0) -> jax.Array:
  """FIR filter ``x [N, H, W, C]`` keeping its shape (``padding`` is added on top)."""
  px0, px1, py0, py1 = _parse_padding(padding)
  fw, fh = _filter_size(f)
  p = (px0 + fw // 2, px1 + (fw - 1) // 2, py0 + fh // 2, py1 + (fh - 1) // 2)
  return upfirdn2d(x, f, padding=p, flip_filter=flip_filter, gain=gain)


def upsample2d(x: jax.Array, f: Any, up: Scaling = 2, padding: Padding = 0,
               flip_filter: bool = False, gain: float = 1.0) -> jax.Array:
  """``[N, H, W, C] -> [N, H * up, W * up, C]``: zero insertion + FIR interpolation."""
  upx, upy = _parse_scaling(up)
  px0, px1, py0, py1 = _parse_padding(padding)
  fw, fh = _filter_size(f)
  p = (px0 + (fw + upx - 1) // 2, px1 + (fw - upx) // 2,
       py0 + (fh + upy - 1) // 2, py1 + (fh - upy) // 2)
  return upfirdn2d(x, f, up=(upx, upy), padding=p, flip_filter=flip_filter,
                   gain=gain * upx * upy)


def downsample2d(x: jax.Array, f: Any, down: Scaling = 2, padding: Padding = 0,
                 flip_filter: bool = False, gain: float = 1.0) -> jax.Array:
  """``[N, H, W, C] -> [N, H / down, W / down, C]``: FIR low-pass, then decimation."""
  downx, downy = _parse_scaling(down)
  px0, px1, py0, py1 = _parse_padding(padding)
  fw, fh = _filter_size(f)
  p = (px0 + (fw - downx + 1) // 2, px1 + (fw - downx) // 2,
       py0 + (fh - downy + 1) // 2, py1 + (fh - downy) // 2)
  return upfirdn2d(x, f, down=(downx, downy), padding=p, flip_filter=flip_filter, gain=gain)


def _conv(x: jax.Array, w: jax.Array, stride: int = 1,
          padding: Sequence[tuple[int, int]] = ((0, 0), (0, 0)), lhs_dilation: int = 1,
          groups: int = 1) -> jax.Array:
  return jax.lax.conv_general_dilated(
      x, w.astype(x.dtype), (stride, stride), padding, lhs_dilation=(lhs_dilation,) * 2,
      dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=groups)


def _conv_taps(x: jax.Array, w: jax.Array, padding: Sequence[tuple[int, int]]) -> jax.Array:
  """Stride-1 conv (``padding`` >= 0) whose kernel gradient is one GEMM per tap.

  XLA:CPU computes the kernel gradient of a conv over a large batch as a slow
  convolution; per tap it is the GEMM ``x_shifted^T dy`` (``[C, N H W] @ [N H W, O]``).
  The input gradient is again a :func:`_conv_taps` (of ``dy`` with the flipped kernel),
  so second derivatives take the same forms.
  """
  return _conv_taps_vjp(x, w, tuple(tuple(int(v) for v in p) for p in padding))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _conv_taps_vjp(x, w, padding):
  return _conv(x, w, padding=padding)


def _conv_taps_fwd(x, w, padding):
  return _conv(x, w, padding=padding), (x, w)


def _conv_taps_bwd(padding, res, dy):
  x, w = res
  kh, kw, c, o = w.shape
  _, ho, wo, _ = dy.shape
  (py0, py1), (px0, px1) = padding
  # The input gradient: the correlation of dy, padded by k - 1 - p, with the flipped
  # kernel (in and out swapped), itself a _conv_taps so second derivatives (R1, path
  # length) stay on the fast forms.
  pads = ((kh - 1 - py0, kh - 1 - py1), (kw - 1 - px0, kw - 1 - px1))
  if min(min(p) for p in pads) < 0:
    dy_in = jax.lax.pad(dy, jnp.zeros((), dy.dtype),
                        [(0, 0, 0), pads[0] + (0,), pads[1] + (0,), (0, 0, 0)])
    pads = ((0, 0), (0, 0))
  else:
    dy_in = dy
  dx = _conv_taps(dy_in, jnp.flip(w, (0, 1)).swapaxes(2, 3), pads)
  xp = jnp.pad(x, ((0, 0), (py0, py1), (px0, px1), (0, 0)))
  dy2 = dy.reshape(-1, o)
  acc = jnp.promote_types(x.dtype, jnp.float32)
  dw = jnp.stack([
      jnp.matmul(xp[:, i:i + ho, j:j + wo].reshape(-1, c).T, dy2,
                 precision=jax.lax.Precision.HIGHEST, preferred_element_type=acc)
      for i in range(kh) for j in range(kw)]).reshape(kh, kw, c, o)
  return dx, dw.astype(w.dtype)


_conv_taps_vjp.defvjp(_conv_taps_fwd, _conv_taps_bwd)


def _conv_transpose(x: jax.Array, w: jax.Array, up: int, pad_y: int, pad_x: int) -> jax.Array:
  """The correlation of ``x`` dilated by ``up`` (``up - 1`` zeros between pixels) and
  padded by ``pad`` on both sides with ``w [kh, kw, I, O]``: a transposed conv.

  Computed as one conv of the undilated input to the ``up * up`` output phases
  (``[kh', kw', I, up * up * O]``, each phase's taps of ``w`` and zeros elsewhere), then
  the phases interleaved: no products with inserted zeros, and gradients without
  ``lhs_dilation`` convs (which XLA:CPU runs slowly).
  """
  n, h, wd, i_ch = x.shape
  kh, kw, _, o_ch = w.shape
  # The dilated input has no trailing zeros: as upfirdn2d's with the padding after
  # shortened by up - 1.
  ny, my, _, phy = _axis_plan(h, up, 1, pad_y, pad_y - (up - 1), kh)
  nx, mx, _, phx = _axis_plan(wd, up, 1, pad_x, pad_x - (up - 1), kw)
  ds_y = [d for ph in phy for _, d in ph]
  ds_x = [d for ph in phx for _, d in ph]
  d0y, d0x = min(ds_y), min(ds_x)
  ky, kx = max(ds_y) - d0y + 1, max(ds_x) - d0x + 1
  # Phase (ry, rx) applies tap (ty, tx) of w at kernel offset (dy - d0y, dx - d0x),
  # zeros elsewhere; built from slices and stacks (a gather's gradient is a slow scatter).
  zero = jnp.zeros((i_ch, o_ch), w.dtype)
  tap = {}
  for ry, ph_y in enumerate(phy):
    for rx, ph_x in enumerate(phx):
      for ty, dy in ph_y:
        for tx, dx in ph_x:
          tap[dy - d0y, dx - d0x, ry, rx] = w[ty, tx]
  k = jnp.stack([jnp.stack([jnp.concatenate([tap.get((a, b, ry, rx), zero)
                                             for ry in range(up) for rx in range(up)], axis=1)
                            for b in range(kx)]) for a in range(ky)])  # [ky, kx, I, (ry, rx, O)]
  pads = ((-d0y, (my - 1) + ky - 1 + d0y - (h - 1)), (-d0x, (mx - 1) + kx - 1 + d0x - (wd - 1)))
  x = jax.lax.pad(x, jnp.zeros((), x.dtype), [(0, 0, 0), pads[0] + (0,), pads[1] + (0,),
                                               (0, 0, 0)])  # negative amounts crop
  z = _conv_patches(x, k, 1)  # [N, my, mx, (ry, rx, O)]
  z = z.reshape(n, my, mx, up, up, o_ch).transpose(0, 1, 3, 2, 4, 5)
  return z.reshape(n, my * up, mx * up, o_ch)[:, :ny, :nx]


def _conv_patches(x: jax.Array, w: jax.Array, stride: int = 1) -> jax.Array:
  """'VALID' conv of ``x`` with ``w [kh, kw, I, O]`` at ``stride``, as one GEMM of the
  ``kh * kw`` strided patches of each output pixel with the kernel.

  XLA:CPU computes a strided conv's input gradient as a slow dilated conv and the kernel
  gradient of a conv with many output channels slowly; here every gradient is a GEMM
  or a sum of strided slices. Used for the strided convs and the phase conv of
  :func:`_conv_transpose` (measured faster there than XLA's conv on CPU).
  """
  n, h, wd, i_ch = x.shape
  kh, kw, _, o_ch = w.shape
  s = stride
  oy, ox = (h - kh) // s + 1, (wd - kw) // s + 1
  patches = jnp.stack([
      jax.lax.slice(x, (0, i, j, 0), (n, i + (oy - 1) * s + 1, j + (ox - 1) * s + 1, i_ch),
                    (1, s, s, 1)) for i in range(kh) for j in range(kw)], axis=3)
  y = jnp.matmul(patches.reshape(n * oy * ox, kh * kw * i_ch),
                 w.astype(x.dtype).reshape(kh * kw * i_ch, o_ch),
                 precision=jax.lax.Precision.HIGHEST,
                 preferred_element_type=jnp.promote_types(x.dtype, jnp.float32))
  return y.reshape(n, oy, ox, o_ch).astype(x.dtype)


def _conv_fast(x: jax.Array, w: jax.Array,
               padding: Sequence[tuple[int, int]] = ((0, 0), (0, 0)), groups: int = 1
               ) -> jax.Array:
  """Stride-1 conv: :func:`_conv_taps` (fast kernel gradient) unless grouped."""
  if groups == 1:
    return _conv_taps(x, w, padding)
  return _conv(x, w, padding=padding, groups=groups)


def conv2d_resample(x: jax.Array, w: jax.Array, f: Any = None, up: int = 1, down: int = 1,
                    padding: Padding = 0, groups: int = 1, flip_weight: bool = True,
                    flip_filter: bool = False) -> jax.Array:
  """2-D convolution with optional FIR up- or down-sampling, padded once up front.

  Args:
    x: ``[N, H, W, groups * I]``.
    w: ``[kh, kw, I, O]`` (O a multiple of ``groups``).
    f: the low-pass filter for resampling (from :func:`setup_filter`); None = identity.
    up, down: integer resampling factors.
    padding: padding with respect to the upsampled image, as in :func:`upfirdn2d`.
    groups: grouped convolution (the fused modulated conv uses one group per sample).
    flip_weight: True = correlation (as ``torch.nn.functional.conv2d``), False = true
      convolution. The reference's up-sampling layers use False: a trained network
      needs the same choice to compute the same function.
    flip_filter: as in :func:`upfirdn2d`.

  Returns:
    ``[N, H', W', O]``: ``H' = H * up / down`` for ``padding = kh // 2``.
  """
  if not (isinstance(up, int) and up >= 1 and isinstance(down, int) and down >= 1):
    raise ValueError(f"up={up}, down={down}: expected integers >= 1")
  kh, kw = int(w.shape[0]), int(w.shape[1])
  fw, fh = _filter_size(f)
  px0, px1, py0, py1 = _parse_padding(padding)
  if not flip_weight:  # below, every conv is a correlation
    w = jnp.flip(w, axis=(0, 1))
  if up > 1:
    px0, px1 = px0 + (fw + up - 1) // 2, px1 + (fw - up) // 2
    py0, py1 = py0 + (fh + up - 1) // 2, py1 + (fh - up) // 2
  if down > 1:
    px0, px1 = px0 + (fw - down + 1) // 2, px1 + (fw - down) // 2
    py0, py1 = py0 + (fh - down + 1) // 2, py1 + (fh - down) // 2
  pad = (px0, px1, py0, py1)

  if kw == 1 and kh == 1 and down > 1 and up == 1:  # 1x1: decimate first, then convolve
    return _conv_fast(upfirdn2d(x, f, down=down, padding=pad, flip_filter=flip_filter), w,
                      groups=groups)
  if kw == 1 and kh == 1 and up > 1 and down == 1:  # 1x1: convolve first, then upsample
    return upfirdn2d(_conv_fast(x, w, groups=groups), f, up=up, padding=pad, gain=up**2,
                     flip_filter=flip_filter)
  if down > 1 and up == 1:  # filter, then a strided conv
    x = upfirdn2d(x, f, padding=pad, flip_filter=flip_filter)
    if groups == 1:
      return _conv_patches(x, w, down)
    return _conv(x, w, stride=down, groups=groups)
  if up > 1:
    # Transposed strided conv, then the filter (with gain up^2: the zeros between
    # pixels take 1 - 1/up^2 of the energy). A transposed conv with padding p is the
    # correlation of the zero-inserted input padded by k - 1 - p.
    px0, px1, py0, py1 = px0 - (kw - 1), px1 - (kw - up), py0 - (kh - 1), py1 - (kh - up)
    pxt, pyt = max(min(-px0, -px1), 0), max(min(-py0, -py1), 0)
    if groups == 1:
      x = _conv_transpose(x, w, up, kh - 1 - pyt, kw - 1 - pxt)
    else:
      x = _conv(x, w, padding=((kh - 1 - pyt,) * 2, (kw - 1 - pxt,) * 2), lhs_dilation=up,
                groups=groups)
    x = upfirdn2d(x, f, padding=(px0 + pxt, px1 + pxt, py0 + pyt, py1 + pyt), gain=up**2,
                  flip_filter=flip_filter)
    if down > 1:
      x = upfirdn2d(x, f, down=down, flip_filter=flip_filter)
    return x
  if px0 == px1 and py0 == py1 and px0 >= 0 and py0 >= 0:  # plain conv
    return _conv_fast(x, w, padding=((py0, py0), (px0, px0)), groups=groups)
  return _conv_fast(upfirdn2d(x, None, padding=pad), w, groups=groups)  # uneven padding
