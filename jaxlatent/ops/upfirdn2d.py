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

Layout: images are ``[N, H, W, C]`` (the reference uses ``[N, C, H, W]``); conv weights
are ``[kh, kw, in_channels // groups, out_channels]`` (the reference's
``[out, in, kh, kw]`` transposed by ``(2, 3, 1, 0)``); filters are ``[fh, fw]`` or
``[taps]`` (separable) as in the reference. Padding is ``int``, ``(x, y)`` or
``(x_before, x_after, y_before, y_after)``: x (width) first, as in the reference.
"""

from __future__ import annotations

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


def upfirdn2d(x: jax.Array, f: Any = None, up: Scaling = 1, down: Scaling = 1,
              padding: Padding = 0, flip_filter: bool = False, gain: float = 1.0
              ) -> jax.Array:
  """Upsample (insert ``up - 1`` zeros after each pixel), pad, FIR filter, downsample.

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
  upx, upy = _parse_scaling(up)
  downx, downy = _parse_scaling(down)
  px0, px1, py0, py1 = _parse_padding(padding)
  f = jnp.ones((1, 1), jnp.float32) if f is None else jnp.asarray(f, jnp.float32)
  if f.ndim not in (1, 2):
    raise ValueError(f"filter of shape {f.shape}: expected [taps] or [fh, fw]")
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
    return _conv(upfirdn2d(x, f, down=down, padding=pad, flip_filter=flip_filter), w,
                 groups=groups)
  if kw == 1 and kh == 1 and up > 1 and down == 1:  # 1x1: convolve first, then upsample
    return upfirdn2d(_conv(x, w, groups=groups), f, up=up, padding=pad, gain=up**2,
                     flip_filter=flip_filter)
  if down > 1 and up == 1:  # filter, then a strided conv
    x = upfirdn2d(x, f, padding=pad, flip_filter=flip_filter)
    return _conv(x, w, stride=down, groups=groups)
  if up > 1:
    # Transposed strided conv, then the filter (with gain up^2: the zeros between
    # pixels take 1 - 1/up^2 of the energy). A transposed conv with padding p is the
    # correlation of the zero-inserted input padded by k - 1 - p.
    px0, px1, py0, py1 = px0 - (kw - 1), px1 - (kw - up), py0 - (kh - 1), py1 - (kh - up)
    pxt, pyt = max(min(-px0, -px1), 0), max(min(-py0, -py1), 0)
    x = _conv(x, w, padding=((kh - 1 - pyt,) * 2, (kw - 1 - pxt,) * 2), lhs_dilation=up,
              groups=groups)
    x = upfirdn2d(x, f, padding=(px0 + pxt, px1 + pxt, py0 + pyt, py1 + pyt), gain=up**2,
                  flip_filter=flip_filter)
    if down > 1:
      x = upfirdn2d(x, f, down=down, flip_filter=flip_filter)
    return x
  if px0 == px1 and py0 == py1 and px0 >= 0 and py0 >= 0:  # plain conv
    return _conv(x, w, padding=((py0, py0), (px0, px0)), groups=groups)
  return _conv(upfirdn2d(x, None, padding=pad), w, groups=groups)  # uneven padding
