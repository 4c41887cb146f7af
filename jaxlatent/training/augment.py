"""Adaptive discriminator augmentation (ADA, Karras et al. 2020) as pure JAX.

Small medical cohorts make a GAN discriminator overfit; ADA augments every image
the discriminator sees (reals and fakes, in every loss phase) with a probability
``p`` that is tuned during training from how confidently D calls reals real.

Two parts:

* :func:`augment` ``(images [B, H, W, C], key, p, spec) -> images``: the
  stylegan2-ada ``AugmentPipe`` transforms listed in :class:`AugmentSpec`, drawn
  independently per image (``vmap``).  The geometric transforms are composed into
  an inverse 3x3 homogeneous matrix per image and applied in one resample (the
  pixel blitting part exactly, by indexing; see below); the colour transforms
  into one 4x4 matrix acting on the channel vector.  The
  function is differentiable w.r.t. the images, so the generator loss and R1 see
  D's gradient through it.
* :class:`AdaState` + :func:`ada_update`: the adaptive ``p``, kept in the train
  state (arrays only) so a resumed run continues with the same ``p``.

The resampler follows the official pipeline step by step: reflect pad, 2x upsample
with the ``sym6`` wavelet low-pass, bilinear sampling (``affine_grid`` /
``grid_sample`` with ``align_corners=False``, zeros outside), 2x downsample with
the same filter.  What differs from the official, and why:

* Padding: the official pads each batch by the margin its transforms need (the
  maximum over the batch, capped at ``size - 1``); here every image is padded by
  that cap, so shapes are static and an image's result does not depend on the
  rest of its batch.  Wherever the official margin covers the sampled footprint
  the two agree to float precision; they can differ only in the outermost pixels
  of a strongly zoomed-out image, where the official reads zeros beyond its
  smaller pad and this version reads the reflected image.
* Pixel blitting on square images (the usual case): x-flip, quarter turns and
  integer translation are done exactly by indexing, and only the general
  transforms go through the resampler.  The official resamples all of them
  together; because ``sym6`` is asymmetric, its flips and quarter turns are then
  not exact mirrors (identical on smooth images, off near the Nyquist frequency).
  The composed transform is the same; the area a shift uncovers and then a
  zoom-out reveals is the reflection of the shifted image rather than of the
  original.  Non-square images take the official single-resample path.

Hue and saturation act only on RGB images; on one channel brightness, contrast
and luma flip act on the value (as the official does).

In a StyleGAN2 step (as stylegan2-ada ``training/loss.py``), with
``spec = spec_from_config(config.augment)`` and ``p = state.ada.p``::

  d_aug = lambda x, k: D(augment(x, k, p, spec))   # every image D sees
  # G main: d_aug(fakes, k1).  D main: d_aug(fakes, k2), d_aug(reals, k3).
  # D reg: R1 = |grad_x d_aug(x, k4)|^2 at the un-augmented reals x.
  ada = ada_update(state.ada, real_logits_of_d_main, global_batch, target, interval, kimg)
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import struct
from ml_collections.config_dict import placeholder

from jaxlatent.errors import ConfigError

# sym6 wavelet low-pass (orthogonal): the official geometric resampling filter.
_SYM6 = np.array([
    0.015404109327027373, 0.0034907120842174702, -0.11799011114819057, -0.048311742585633,
    0.4910559419267466, 0.787641141030194, 0.3379294217276218, -0.07263752278646252,
    -0.021060292512300564, 0.04472490177066578, 0.0017677118642428036, -0.007800708325034148,
])
GEOM_FILTER = _SYM6 / _SYM6.sum()  # normalised to unit DC gain, as upfirdn2d.setup_filter
_HZ_PAD = GEOM_FILTER.size // 4  # output border (pixels) kept for the down-filter's support


@dataclasses.dataclass(frozen=True)
class AugmentSpec:
  """Which transforms run and how strongly (stylegan2-ada ``AugmentPipe`` arguments).

  A multiplier ``m`` makes its transform fire with probability ``m * p`` per image
  (0 = never).  Hashable, so it can be a static argument or a closure constant.
  """
  # Pixel blitting.
  xflip: float = 0.0  # x-flip.
  rotate90: float = 0.0  # rotation by a multiple of 90 degrees.
  xint: float = 0.0  # integer translation.
  xint_max: float = 0.125  # range of integer translation, relative to image size.
  # General geometric transforms.
  scale: float = 0.0  # isotropic scaling.
  rotate: float = 0.0  # arbitrary rotation (pre and post aniso; P(either) = rotate * p).
  aniso: float = 0.0  # anisotropic scaling.
  xfrac: float = 0.0  # fractional translation.
  scale_std: float = 0.2  # log2 std of isotropic scaling.
  rotate_max: float = 1.0  # range of arbitrary rotation, 1 = full circle.
  aniso_std: float = 0.2  # log2 std of anisotropic scaling.
  xfrac_std: float = 0.125  # std of fractional translation, relative to image size.
  # Colour transforms.
  brightness: float = 0.0  # additive brightness.
  contrast: float = 0.0  # multiplicative contrast.
  lumaflip: float = 0.0  # luma flip (on one channel: negation).
  hue: float = 0.0  # hue rotation (RGB only).
  saturation: float = 0.0  # saturation (RGB only).
  brightness_std: float = 0.2  # std of brightness.
  contrast_std: float = 0.5  # log2 std of contrast.
  hue_max: float = 1.0  # range of hue rotation, 1 = full circle.
  saturation_std: float = 1.0  # log2 std of saturation.

  def has_geometric(self) -> bool:
    return any(getattr(self, n) > 0 for n in _GEOM_MULTIPLIERS)

  def has_color(self, num_channels: int) -> bool:
    names = _COLOR_MULTIPLIERS if num_channels == 3 else _COLOR_MULTIPLIERS[:3]
    return any(getattr(self, n) > 0 for n in names)


_GEOM_MULTIPLIERS = ("xflip", "rotate90", "xint", "scale", "rotate", "aniso", "xfrac")
_COLOR_MULTIPLIERS = ("brightness", "contrast", "lumaflip", "hue", "saturation")

# Presets of the official train.py ``--augpipe`` (the ones without filtering,
# noise or cutout, which are not implemented).
PRESETS: dict[str, dict[str, float]] = {
    "blit": dict(xflip=1, rotate90=1, xint=1),
    "geom": dict(scale=1, rotate=1, aniso=1, xfrac=1),
    "color": dict(brightness=1, contrast=1, lumaflip=1, hue=1, saturation=1),
    "bg": dict(xflip=1, rotate90=1, xint=1, scale=1, rotate=1, aniso=1, xfrac=1),
    "bgc": dict(xflip=1, rotate90=1, xint=1, scale=1, rotate=1, aniso=1, xfrac=1,
                brightness=1, contrast=1, lumaflip=1, hue=1, saturation=1),
}

AUGMENT_MODES = ("off", "ada", "fixed")
_CONFIG_KEYS = ("mode", "spec", "p", "target", "interval", "kimg")


def default_augment_config() -> ml_collections.ConfigDict:
  """``config.augment``: the fields and their meaning.

    mode: 'off' (no augmentation) | 'ada' (p adapted from D's real logits) |
      'fixed' (p constant).
    spec: preset of transforms (``PRESETS``: 'blit', 'geom', 'color', 'bg', 'bgc').
    p: the initial p ('ada') or the constant p ('fixed').
    target: ADA target of E[sign(D(real))] (r_t).
    interval: steps between p adjustments.
    kimg: thousands of images for p to move by 1 (adjustment speed).
    <AugmentSpec field> (xflip, ..., saturation_std): None = the preset's value,
      a number overrides it.
  """
  c = ml_collections.ConfigDict()
  c.mode = "off"
  c.spec = "bgc"
  c.p = 0.0
  c.target = 0.6
  c.interval = 4
  c.kimg = 500.0
  for f in dataclasses.fields(AugmentSpec):
    c[f.name] = placeholder(float)
  return c


def _as_dict(cfg: Mapping[str, Any] | ml_collections.ConfigDict) -> dict[str, Any]:
  return cfg.to_dict() if isinstance(cfg, ml_collections.ConfigDict) else dict(cfg)


def spec_from_config(cfg: Mapping[str, Any] | ml_collections.ConfigDict) -> AugmentSpec:
  """The :class:`AugmentSpec` of ``config.augment``: the preset, then any overrides.

  Raises ConfigError naming ``augment.<key>`` for an unknown preset, an unknown
  key or a negative value.
  """
  d = _as_dict(cfg)
  name = d.get("spec")
  if name not in PRESETS:
    raise ConfigError(f"augment.spec: unknown preset {name!r} (one of {', '.join(PRESETS)})")
  fields = {f.name for f in dataclasses.fields(AugmentSpec)}
  values: dict[str, float] = {k: float(v) for k, v in PRESETS[name].items()}
  for k, v in d.items():
    if k in _CONFIG_KEYS:
      continue
    if k not in fields:
      raise ConfigError(
          f"augment.{k}: unknown field (AugmentSpec fields: {', '.join(sorted(fields))})")
    if v is None:
      continue
    if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or v < 0:
      raise ConfigError(f"augment.{k}: must be a finite number >= 0, got {v!r}")
    values[k] = float(v)
  return AugmentSpec(**values)


def check_augment_config(cfg: Mapping[str, Any] | ml_collections.ConfigDict) -> None:
  """Validates ``config.augment`` (mode, p, target, interval, kimg and the spec)."""
  d = _as_dict(cfg)
  if d.get("mode") not in AUGMENT_MODES:
    raise ConfigError(
        f"augment.mode: must be one of {', '.join(AUGMENT_MODES)}, got {d.get('mode')!r}")
  if not isinstance(d.get("p"), (int, float)) or not 0 <= d["p"]:
    raise ConfigError(f"augment.p: must be a number >= 0, got {d.get('p')!r}")
  if not isinstance(d.get("target"), (int, float)) or not 0 <= d["target"] <= 1:
    raise ConfigError(f"augment.target: must be in [0, 1], got {d.get('target')!r}")
  if not isinstance(d.get("interval"), int) or d["interval"] < 1:
    raise ConfigError(f"augment.interval: must be an integer >= 1, got {d.get('interval')!r}")
  if not isinstance(d.get("kimg"), (int, float)) or not d["kimg"] > 0:
    raise ConfigError(f"augment.kimg: must be a number > 0, got {d.get('kimg')!r}")
  spec_from_config(d)


# ---------------------------------------------------------------------------
# Random draws.


class AugmentDraws(struct.PyTreeNode):
  """One image's transform parameters, already gated by their probabilities.

  A transform that did not fire holds its identity value (0 for flips, rotations,
  translations and brightness; 1 for scales, contrast and saturation).
  """
  xflip: jax.Array  # 0 | 1
  rotate90: jax.Array  # 0..3, quarter turns
  xint: jax.Array  # [2] (tx, ty), relative to (W, H); rounded to pixels when applied
  scale: jax.Array  # isotropic scale s
  rotate_pre: jax.Array  # radians, before anisotropic scaling
  aniso: jax.Array  # anisotropic scale (s, 1/s)
  rotate_post: jax.Array  # radians, after anisotropic scaling
  xfrac: jax.Array  # [2] (tx, ty), relative to (W, H)
  brightness: jax.Array  # additive offset b
  contrast: jax.Array  # factor c
  lumaflip: jax.Array  # 0 | 1
  hue: jax.Array  # radians about the luma axis
  saturation: jax.Array  # factor s


def identity_draws() -> AugmentDraws:
  """Draws of an image that no transform touches."""
  z, o = jnp.zeros(()), jnp.ones(())
  return AugmentDraws(xflip=z, rotate90=z, xint=jnp.zeros(2), scale=o, rotate_pre=z, aniso=o,
                      rotate_post=z, xfrac=jnp.zeros(2), brightness=z, contrast=o, lumaflip=z,
                      hue=z, saturation=o)


def sample_draws(key: jax.Array, p: jax.Array | float, spec: AugmentSpec) -> AugmentDraws:
  """Draws one image's transforms: each fires with probability ``multiplier * p``.

  Every transform has its own sub-key, so enabling one does not change another's draws.
  """
  k = dict(zip(("xflip", "rotate90", "xint", "scale", "rotate_pre", "aniso", "rotate_post",
                "xfrac", "brightness", "contrast", "lumaflip", "hue", "saturation"),
               jax.random.split(key, 13)))
  p = jnp.asarray(p, jnp.float32)

  def gated(name, prob, value, identity):
    kv, kg = jax.random.split(k[name])
    return jnp.where(jax.random.uniform(kg) < prob, value(kv), identity)

  unif = jax.random.uniform
  normal = jax.random.normal
  # P(pre OR post rotation) = rotate * p.
  p_rot = 1.0 - jnp.sqrt(jnp.clip(1.0 - spec.rotate * p, 0.0, 1.0))
  return AugmentDraws(
      xflip=gated("xflip", spec.xflip * p, lambda kv: jnp.floor(unif(kv) * 2), 0.0),
      rotate90=gated("rotate90", spec.rotate90 * p, lambda kv: jnp.floor(unif(kv) * 4), 0.0),
      xint=gated("xint", spec.xint * p,
                 lambda kv: (unif(kv, (2,)) * 2 - 1) * spec.xint_max, jnp.zeros(2)),
      scale=gated("scale", spec.scale * p, lambda kv: jnp.exp2(normal(kv) * spec.scale_std), 1.0),
      rotate_pre=gated("rotate_pre", p_rot,
                       lambda kv: (unif(kv) * 2 - 1) * np.pi * spec.rotate_max, 0.0),
      aniso=gated("aniso", spec.aniso * p, lambda kv: jnp.exp2(normal(kv) * spec.aniso_std), 1.0),
      rotate_post=gated("rotate_post", p_rot,
                        lambda kv: (unif(kv) * 2 - 1) * np.pi * spec.rotate_max, 0.0),
      xfrac=gated("xfrac", spec.xfrac * p, lambda kv: normal(kv, (2,)) * spec.xfrac_std,
                  jnp.zeros(2)),
      brightness=gated("brightness", spec.brightness * p,
                       lambda kv: normal(kv) * spec.brightness_std, 0.0),
      contrast=gated("contrast", spec.contrast * p,
                     lambda kv: jnp.exp2(normal(kv) * spec.contrast_std), 1.0),
      lumaflip=gated("lumaflip", spec.lumaflip * p, lambda kv: jnp.floor(unif(kv) * 2), 0.0),
      hue=gated("hue", spec.hue * p, lambda kv: (unif(kv) * 2 - 1) * np.pi * spec.hue_max, 0.0),
      saturation=gated("saturation", spec.saturation * p,
                       lambda kv: jnp.exp2(normal(kv) * spec.saturation_std), 1.0),
  )


# ---------------------------------------------------------------------------
# Matrices.


def _mat(rows) -> jax.Array:
  return jnp.stack([jnp.stack([jnp.asarray(v, jnp.float32) for v in r]) for r in rows])


def _translate2d(tx, ty):
  return _mat([[1, 0, tx], [0, 1, ty], [0, 0, 1]])


def _scale2d(sx, sy):
  return _mat([[sx, 0, 0], [0, sy, 0], [0, 0, 1]])


def _rotate2d(theta):
  c, s = jnp.cos(theta), jnp.sin(theta)
  return _mat([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def blit_matrix(d: AugmentDraws, height: int, width: int) -> jax.Array:
  """The x-flip, quarter-turn and integer-translation part of ``G_inv`` ``[3, 3]``."""
  g = _scale2d(1.0 / (1 - 2 * d.xflip), 1.0)
  g = g @ _rotate2d(np.pi / 2 * d.rotate90)
  return g @ _translate2d(-jnp.round(d.xint[0] * width), -jnp.round(d.xint[1] * height))


def general_matrix(d: AugmentDraws, height: int, width: int) -> jax.Array:
  """The scaling, rotation, anisotropy and fractional-translation part of ``G_inv``."""
  g = _scale2d(1.0 / d.scale, 1.0 / d.scale)
  g = g @ _rotate2d(d.rotate_pre)
  g = g @ _scale2d(1.0 / d.aniso, d.aniso)
  g = g @ _rotate2d(d.rotate_post)
  return g @ _translate2d(-d.xfrac[0] * width, -d.xfrac[1] * height)


def geometric_matrix(d: AugmentDraws, height: int, width: int) -> jax.Array:
  """``G_inv [3, 3]``: maps an output pixel (centred coordinates) to its input pixel."""
  return blit_matrix(d, height, width) @ general_matrix(d, height, width)


_LUMA = np.array([1.0, 1.0, 1.0, 0.0]) / np.sqrt(3.0)


def color_matrix(d: AugmentDraws, num_channels: int) -> jax.Array:
  """``C [4, 4]``: maps a homogeneous RGB colour (r, g, b, 1) to the augmented one.

  Hue and saturation are left out unless ``num_channels == 3``.
  """
  v = jnp.asarray(_LUMA, jnp.float32)
  vv = jnp.outer(v, v)
  eye = jnp.eye(4)
  c = eye
  c = _mat([[1, 0, 0, d.brightness], [0, 1, 0, d.brightness], [0, 0, 1, d.brightness],
            [0, 0, 0, 1]]) @ c
  c = jnp.diag(jnp.stack([d.contrast, d.contrast, d.contrast, jnp.ones(())])) @ c
  c = (eye - 2 * vv * d.lumaflip) @ c  # Householder reflection of the luma axis
  if num_channels == 3:
    s, co = jnp.sin(d.hue), jnp.cos(d.hue)
    cc = 1 - co
    vx, vy, vz = v[0], v[1], v[2]
    rot = _mat([[vx * vx * cc + co, vx * vy * cc - vz * s, vx * vz * cc + vy * s, 0],
                [vy * vx * cc + vz * s, vy * vy * cc + co, vy * vz * cc - vx * s, 0],
                [vz * vx * cc - vy * s, vz * vy * cc + vx * s, vz * vz * cc + co, 0],
                [0, 0, 0, 1]])
    c = rot @ c
    c = (vv + (eye - vv) * d.saturation) @ c
  return c


# ---------------------------------------------------------------------------
# Applying the matrices to one image [H, W, C].


def _fir(x: jax.Array, taps: np.ndarray, axis: int, up: int = 1, down: int = 1,
         pad: tuple[int, int] = (0, 0)) -> jax.Array:
  """upfirdn along ``axis`` (0 or 1) of ``[H, W, C]``.

  Zero-stuff by ``up``, pad, correlate with ``taps``, keep every ``down``-th sample.

  Zero-stuffing puts ``up - 1`` zeros after each sample (so the trailing zeros
  count as padding), as upfirdn2d does.
  """
  ch = x.shape[-1]
  k = np.asarray(taps, np.float32).reshape((-1, 1) if axis == 0 else (1, -1))
  kernel = jnp.asarray(np.tile(k[:, :, None, None], (1, 1, 1, ch)))  # HWIO, depthwise
  pads = [(0, 0), (0, 0)]
  pads[axis] = (pad[0], pad[1] + up - 1)
  dil = [1, 1]
  dil[axis] = up
  strides = [1, 1]
  strides[axis] = down
  y = jax.lax.conv_general_dilated(
      x[None], kernel, window_strides=strides, padding=pads, lhs_dilation=dil,
      dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=ch,
      precision=jax.lax.Precision.HIGHEST)
  return y[0]


def _upsample2x(x: jax.Array, axis: int) -> jax.Array:
  """upfirdn2d.upsample2d along one axis: zero insertion, pad (6, 5), filter, gain 2."""
  f = GEOM_FILTER.size
  # True convolution = correlation with the reversed filter.
  return _fir(x, GEOM_FILTER[::-1] * 2.0, axis, up=2, pad=((f + 1) // 2, (f - 2) // 2))


def _downsample2x(x: jax.Array, axis: int) -> jax.Array:
  """upfirdn2d.downsample2d(padding=-2*_HZ_PAD, flip_filter=True) along one axis."""
  x = jax.lax.slice_in_dim(x, 1, x.shape[axis] - 1, axis=axis)  # net padding -1 each side
  return _fir(x, GEOM_FILTER, axis, down=2)


def _bilinear(img: jax.Array, xs: jax.Array, ys: jax.Array) -> jax.Array:
  """grid_sample(bilinear, zeros outside) at pixel coordinates (pixel centres at integers)."""
  h, w, ch = img.shape
  x0, y0 = jnp.floor(xs), jnp.floor(ys)
  wx, wy = xs - x0, ys - y0
  flat = img.reshape(h * w, ch)
  out = 0.0
  for dy, fy in ((0, 1 - wy), (1, wy)):
    for dx, fx in ((0, 1 - wx), (1, wx)):
      xi, yi = (x0 + dx).astype(jnp.int32), (y0 + dy).astype(jnp.int32)
      ok = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
      v = jnp.take(flat, jnp.clip(yi, 0, h - 1) * w + jnp.clip(xi, 0, w - 1), axis=0)
      out = out + v * (fx * fy * ok)[..., None]
  return out


def apply_geometric(image: jax.Array, g_inv: jax.Array) -> jax.Array:
  """Resamples one image ``[H, W, C]`` through ``G_inv`` (the official's filters)."""
  h, w, _ = image.shape
  py, px = h - 1, w - 1  # the official's cap on its margin; reflection needs pad < size
  x = jnp.pad(image, ((py, py), (px, px), (0, 0)), mode="reflect")
  x = _upsample2x(_upsample2x(x, 1), 0)  # [2(3H-2), 2(3W-2), C]
  hu, wu = x.shape[0], x.shape[1]
  ho, wo = 2 * (h + 2 * _HZ_PAD), 2 * (w + 2 * _HZ_PAD)
  # G_inv in the upsampled grid (pixel pitch 1/2, half-pixel phase of the filter).
  g = (_translate2d(-0.5, -0.5) @ _scale2d(2.0, 2.0) @ g_inv @ _scale2d(0.5, 0.5)
       @ _translate2d(0.5, 0.5))
  yc, xc = jnp.meshgrid(jnp.arange(ho) + 0.5 - ho / 2, jnp.arange(wo) + 0.5 - wo / 2,
                        indexing="ij")
  xs = g[0, 0] * xc + g[0, 1] * yc + g[0, 2] + wu / 2 - 0.5
  ys = g[1, 0] * xc + g[1, 1] * yc + g[1, 2] + hu / 2 - 0.5
  x = _bilinear(x, xs, ys)  # [Ho, Wo, C]
  return _downsample2x(_downsample2x(x, 1), 0)  # [H, W, C]


def apply_color(image: jax.Array, c: jax.Array) -> jax.Array:
  """Applies ``C [4, 4]`` to one image ``[H, W, C]`` with 1 or 3 channels."""
  ch = image.shape[-1]
  if ch == 3:
    return image @ c[:3, :3].T + c[:3, 3]
  # One channel: the official's grey-level reduction of C (mean over the RGB rows).
  rows = jnp.mean(c[:3, :], axis=0)
  return image * jnp.sum(rows[:3]) + rows[3]


def apply_blit(image: jax.Array, d: AugmentDraws) -> jax.Array:
  """Exact x-flip, quarter turns and integer shift of a square image ``[S, S, C]``.

  Equals resampling through :func:`blit_matrix`, pixel for pixel: the flip first,
  then the rotation, then the shift, whose uncovered border is the reflected image.
  """
  h, w, _ = image.shape
  x = jnp.where(d.xflip > 0, image[:, ::-1], image)
  x = jax.lax.switch(d.rotate90.astype(jnp.int32) % 4,
                     [lambda a, k=k: jnp.rot90(a, k, axes=(0, 1)) for k in range(4)], x)
  tx = jnp.round(d.xint[0] * w).astype(jnp.int32)
  ty = jnp.round(d.xint[1] * h).astype(jnp.int32)
  x = jnp.pad(x, ((h - 1, h - 1), (w - 1, w - 1), (0, 0)), mode="reflect")
  start_y = jnp.clip(h - 1 - ty, 0, 2 * h - 2)
  start_x = jnp.clip(w - 1 - tx, 0, 2 * w - 2)
  return jax.lax.dynamic_slice(x, (start_y, start_x, 0), image.shape)


def apply_draws(image: jax.Array, d: AugmentDraws, spec: AugmentSpec) -> jax.Array:
  """Augments one image ``[H, W, C]`` with given draws (geometric, then colour).

  On square images the pixel blitting (flip, quarter turns, integer shift) is done
  exactly by indexing and only the general transforms are resampled; the official
  resamples both together, and since its ``sym6`` filter is asymmetric its flips and
  quarter turns also low-pass and alias the image slightly.  Non-square images take
  the official path (one resample through the whole ``G_inv``).
  """
  h, w, ch = image.shape
  if ch not in (1, 3):
    raise ConfigError(f"augment: images must have 1 or 3 channels, got {ch}")
  general = any(getattr(spec, n) > 0 for n in ("scale", "rotate", "aniso", "xfrac"))
  blit = any(getattr(spec, n) > 0 for n in ("xflip", "rotate90", "xint"))
  if h == w:
    if blit:
      image = apply_blit(image, d)
    if general:
      image = apply_geometric(image, general_matrix(d, h, w))
  elif blit or general:
    image = apply_geometric(image, geometric_matrix(d, h, w))
  if spec.has_color(ch):
    image = apply_color(image, color_matrix(d, ch))
  return image


def augment(images: jax.Array, key: jax.Array, p: jax.Array | float,
            spec: AugmentSpec) -> jax.Array:
  """Augments a batch ``[B, H, W, C]`` (C = 1 or 3) with probability strength ``p``.

  Image ``i`` is augmented with ``sample_draws(jax.random.split(key, B)[i], p, spec)``
  (``vmap`` over images).  ``p == 0`` returns
  ``images`` unchanged (a Python 0 skips all work; a traced 0 takes a ``lax.cond``
  branch that does nothing).  Differentiable w.r.t. ``images``.
  """
  if images.ndim != 4:
    raise ConfigError(f"augment: images must be [B, H, W, C], got shape {images.shape}")
  if not (spec.has_geometric() or spec.has_color(images.shape[-1])):
    return images
  if isinstance(p, (int, float)) and p == 0:
    return images
  keys = jax.random.split(key, images.shape[0])
  dtype = images.dtype

  def run(x):
    one = lambda img, k: apply_draws(img.astype(jnp.float32), sample_draws(k, p, spec), spec)
    return jax.vmap(one)(x, keys).astype(dtype)

  return jax.lax.cond(jnp.asarray(p) > 0, run, lambda x: x, images)


# ---------------------------------------------------------------------------
# Adaptive p.


class AdaState(struct.PyTreeNode):
  """The adaptive augmentation probability and the sign statistics since its last update.

  Arrays only, so it lives in the train state and is saved and restored with it.
  """
  p: jax.Array  # float32 scalar, >= 0
  sign_sum: jax.Array  # float32, sum of sign(D(real)) since the last adjustment
  count: jax.Array  # float32, number of logits summed into sign_sum
  steps: jax.Array  # int32, ada_update calls since the last adjustment


def ada_init(p: float = 0.0) -> AdaState:
  """A fresh :class:`AdaState` starting at ``p`` (``config.augment.p``)."""
  return AdaState(p=jnp.asarray(p, jnp.float32), sign_sum=jnp.zeros((), jnp.float32),
                  count=jnp.zeros((), jnp.float32), steps=jnp.zeros((), jnp.int32))


def ada_update(state: AdaState, d_real_logits: jax.Array, batch_size: int,
               target: float = 0.6, interval: int = 4, kimg: float = 500.0) -> AdaState:
  """Accumulates ``sign(D(real))``; every ``interval`` calls moves ``p`` (stylegan2-ada).

  ``p += sign(mean sign - target) * batch_size * interval / (kimg * 1000)``, then
  ``p = max(p, 0)``: p rises while D is too sure of the reals (overfitting) and
  falls otherwise.  ``batch_size`` is the global batch of one step; call once per
  D main step with that step's real logits (all devices' logits, any shape).
  """
  sign_sum = state.sign_sum + jnp.sum(jnp.sign(d_real_logits.astype(jnp.float32)))
  count = state.count + d_real_logits.size
  steps = state.steps + 1
  due = steps >= interval
  mean = sign_sum / jnp.maximum(count, 1.0)
  adjust = jnp.sign(mean - target) * (batch_size * interval) / (kimg * 1000.0)
  p = jnp.where(due, jnp.maximum(state.p + adjust, 0.0), state.p)
  return AdaState(p=p.astype(jnp.float32),
                  sign_sum=jnp.where(due, 0.0, sign_sum).astype(jnp.float32),
                  count=jnp.where(due, 0.0, count).astype(jnp.float32),
                  steps=jnp.where(due, 0, steps).astype(jnp.int32))
