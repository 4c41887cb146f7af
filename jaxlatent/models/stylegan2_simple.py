"""A simplified StyleGAN2 (``model.name='stylegan2_simple'``), single channel.

The default ``model.name='stylegan2'`` is the official architecture
(:mod:`jaxlatent.models.stylegan2`).  This variant trades exactness for speed on
CPU: resize up-sampling instead of the [1, 3, 3, 1] FIR, average-pool
down-sampling, no ``conv_clamp``, a ``tanh`` on the output.  Our own code after the
behaviour of NVlabs stylegan2-ada-pytorch ``training/networks.py``; module and
argument names mirror it:

  * equalized learning rate everywhere: weights are stored N(0, 1) (divided by the
    lr multiplier) and scaled by ``lr_multiplier / sqrt(fan_in)`` at run time;
  * ``MappingNetwork``: z normalised by its 2nd moment -> ``num_layers`` FC layers
    (lr multiplier 0.01, leaky ReLU with gain sqrt(2)) -> w, broadcast to ``num_ws``;
    tracks ``w_avg`` (collection 'stats') for truncation;
  * ``SynthesisNetwork``: learned 4x4 constant, per resolution a ``SynthesisBlock`` of
    modulated + demodulated 3x3 convs (``SynthesisLayer``) with per-pixel noise, and a
    ``ToRGB`` (modulated, not demodulated) whose outputs are up-sampled and summed
    ('skip' architecture); up-sampling is a resize followed by the conv;
  * ``Discriminator``: 'resnet' ``DiscriminatorBlock``s (skip 1x1 conv, down-sample),
    ``MinibatchStd`` and an FC epilogue.

Variables of the generator: 'params', 'stats' ({'w_avg'}) and 'noise_const' (one
fixed N(0, 1) image per noise input, used by ``noise_mode='const'``; a projector can
optimise these leaves of ``Generator.params`` directly).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from jaxlatent.errors import ConfigError
from jaxlatent.generator import Generator, LatentSpec
from jaxlatent.models import blocks, settings

SQRT2 = math.sqrt(2.0)
NOISE_MODES = ("random", "const", "none")
RESAMPLE = ("bilinear", "nearest")


# ----------------------------------------------------------------------------- primitives


def bias_act(x: jax.Array, b: jax.Array | None, activation: str = "linear",
             gain: float = 1.0) -> jax.Array:
  """x + b, then the activation with its default gain (lrelu: slope 0.2, gain sqrt(2))."""
  if b is not None:
    x = x + b
  if activation == "lrelu":
    x = nn.leaky_relu(x, 0.2) * SQRT2
  elif activation != "linear":
    raise ValueError(f"unknown activation {activation!r}")
  return x * gain if gain != 1.0 else x


def normalize_2nd_moment(x: jax.Array, eps: float = 1e-8) -> jax.Array:
  """x / sqrt(mean(x^2)) over the last axis."""
  return x * jax.lax.rsqrt(jnp.mean(jnp.square(x), axis=-1, keepdims=True) + eps)


def modulate_weight(weight: jax.Array, styles: jax.Array, demodulate: bool = True
                    ) -> jax.Array:
  """Per-sample modulated (and demodulated) conv weights.

  Args:
    weight: ``[kh, kw, I, O]``.
    styles: ``[B, I]`` per-sample input-channel scales.
    demodulate: scale each output channel to unit L2 norm over (kh, kw, I).

  Returns:
    ``[B, kh, kw, I, O]``.
  """
  w = weight[None] * styles[:, None, None, :, None]  # [B, kh, kw, I, O]
  if demodulate:
    w = w * demod_coefs(weight, styles)[:, None, None, None, :]
  return w


def demod_coefs(weight: jax.Array, styles: jax.Array) -> jax.Array:
  """``rsqrt(sum_{kh, kw, I} (weight * styles)^2 + 1e-8)``, ``[B, O]``, as the product
  ``styles^2 [B, I] @ sum_{kh, kw} weight^2 [I, O]``.

  The same values as summing :func:`modulate_weight`'s ``[B, kh, kw, I, O]`` weights
  without building them: on CPU that tensor and its gradient (a reduction over the
  batch) cost more than the conv of a small layer.
  """
  sq_weight = jnp.sum(jnp.square(weight), axis=(0, 1))  # [I, O]
  return jax.lax.rsqrt(jnp.dot(jnp.square(styles), sq_weight,
                               precision=jax.lax.Precision.HIGHEST) + 1e-8)


def _conv(x: jax.Array, w: jax.Array, feature_group_count: int = 1) -> jax.Array:
  return jax.lax.conv_general_dilated(
      x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"),
      feature_group_count=feature_group_count)


def modulated_conv2d(x: jax.Array, weight: jax.Array, styles: jax.Array,
                     demodulate: bool = True, fused_modconv: bool = False) -> jax.Array:
  """A stride-1 'SAME' conv of ``x [B, H, W, I]`` with per-sample modulated weights.

  ``fused_modconv=True`` builds the ``[B, kh, kw, I, O]`` weights and runs one grouped
  conv (``feature_group_count=B``); ``False`` (default, faster on CPU and friendlier
  to a batch sharded over devices) scales the input by the styles, runs the shared
  conv and scales the output by the demodulation coefficients: the same function.
  Returns ``[B, H, W, O]``.
  """
  b, h, w_, i = x.shape
  kh, kw, _, o = weight.shape
  if fused_modconv:
    wm = modulate_weight(weight, styles, demodulate)  # [B, kh, kw, I, O]
    wm = wm.transpose(1, 2, 3, 0, 4).reshape(kh, kw, i, b * o)  # [kh, kw, I, B*O]
    xg = x.transpose(1, 2, 0, 3).reshape(1, h, w_, b * i)  # [1, H, W, B*I]
    y = _conv(xg, wm, feature_group_count=b)  # [1, H, W, B*O]
    return y.reshape(h, w_, b, o).transpose(2, 0, 1, 3)  # [B, H, W, O]
  y = _conv(x * styles[:, None, None, :], weight)  # [B, H, W, O]
  if demodulate:
    y = y * demod_coefs(weight, styles)[:, None, None, :]
  return y


def upsample2d(x: jax.Array, method: str = "bilinear") -> jax.Array:
  """``[B, H, W, C] -> [B, 2H, 2W, C]`` by resizing (bilinear ~ the [1,3,3,1] FIR)."""
  b, h, w, c = x.shape
  return jax.image.resize(x, (b, 2 * h, 2 * w, c), method)


def downsample2d(x: jax.Array) -> jax.Array:
  """``[B, H, W, C] -> [B, H/2, W/2, C]`` by 2x2 averaging."""
  return nn.avg_pool(x, (2, 2), strides=(2, 2))


def num_ws_for(img_resolution: int) -> int:
  """Number of per-layer ws: one per conv plus the last ToRGB (2 log2(R) - 2)."""
  return 2 * int(round(math.log2(img_resolution))) - 2


def mix_styles(ws: jax.Array, ws2: jax.Array, key: jax.Array, prob: float) -> jax.Array:
  """Style mixing: with probability ``prob`` layers >= a random cutoff take ``ws2``.

  One cutoff ~ U{1, ..., num_ws - 1} per batch, as in stylegan2-ada's loss.
  ``ws, ws2: [B, num_ws, w_dim]``.
  """
  num_ws = ws.shape[1]
  k_cut, k_p = jax.random.split(key)
  cutoff = jax.random.randint(k_cut, (), 1, num_ws)
  cutoff = jnp.where(jax.random.uniform(k_p, ()) < prob, cutoff, num_ws)
  keep = (jnp.arange(num_ws) < cutoff)[None, :, None]
  return jnp.where(keep, ws, ws2)


# ----------------------------------------------------------------------------- layers


class FullyConnectedLayer(nn.Module):
  """Equalized-lr dense layer: y = act(x @ (w * lr_mul / sqrt(in)) + b * lr_mul)."""

  features: int
  bias: bool = True  # False: no bias
  activation: str = "linear"  # 'linear' | 'lrelu'
  lr_multiplier: float = 1.0  # learning-rate multiplier (0.01 in the mapping network)
  bias_init: float = 0.0  # initial bias (1 for style affines: styles start at 1)

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    fan_in = x.shape[-1]
    weight = self.param(
        "weight", lambda k, s: jax.random.normal(k, s) / self.lr_multiplier,
        (fan_in, self.features))
    x = x @ (weight * (self.lr_multiplier / math.sqrt(fan_in)))
    b = None
    if self.bias:
      b = self.param("bias", nn.initializers.constant(self.bias_init), (self.features,))
      b = b * self.lr_multiplier
    return bias_act(x, b, self.activation)


class Conv2dLayer(nn.Module):
  """Equalized-lr 'SAME' conv with optional 2x down-sampling (average pool first)."""

  features: int
  kernel_size: int = 3
  bias: bool = True
  activation: str = "linear"
  down: int = 1  # 2: average-pool 2x2 before the conv
  gain: float = 1.0  # extra gain after the activation

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    k, fan_in = self.kernel_size, x.shape[-1] * self.kernel_size**2
    weight = self.param("weight", nn.initializers.normal(1.0),
                        (k, k, x.shape[-1], self.features))
    if self.down == 2:
      x = downsample2d(x)
    x = _conv(x, weight * (1.0 / math.sqrt(fan_in)))
    b = self.param("bias", nn.initializers.zeros, (self.features,)) if self.bias else None
    return bias_act(x, b, self.activation, self.gain)


class MappingNetwork(nn.Module):
  """z ``[B, z_dim]`` -> ws ``[B, num_ws, w_dim]``; tracks ``w_avg`` in 'stats'."""

  z_dim: int
  w_dim: int
  num_ws: int
  num_layers: int = 8  # FC layers (2 for small data)
  lr_multiplier: float = 0.01  # learning-rate multiplier of the FC layers
  w_avg_beta: float = 0.995  # EMA decay of w_avg (None: not tracked)

  @nn.compact
  def __call__(self, z: jax.Array, truncation_psi: Any = 1.0, truncation_cutoff: int | None = None,
               update_emas: bool = False) -> jax.Array:
    x = normalize_2nd_moment(z)
    for idx in range(self.num_layers):
      x = FullyConnectedLayer(self.w_dim, activation="lrelu", lr_multiplier=self.lr_multiplier,
                              name=f"fc{idx}")(x)  # [B, w_dim]
    w_avg = self.variable("stats", "w_avg", jnp.zeros, (self.w_dim,), jnp.float32)
    if update_emas and not self.is_initializing():
      batch_mean = jnp.mean(jax.lax.stop_gradient(x), axis=0)
      w_avg.value = batch_mean + (w_avg.value - batch_mean) * self.w_avg_beta  # lerp
    x = jnp.broadcast_to(x[:, None, :], (x.shape[0], self.num_ws, self.w_dim))
    return truncate(x, w_avg.value, truncation_psi, truncation_cutoff)


def truncate(ws: jax.Array, w_avg: jax.Array, psi: Any = 1.0, cutoff: int | None = None
             ) -> jax.Array:
  """Truncation trick: ``w_avg + psi (ws - w_avg)`` on layers < cutoff (all if None)."""
  if isinstance(psi, (int, float)) and psi == 1:
    return ws
  t = w_avg + psi * (ws - w_avg)
  if cutoff is None:
    return t
  return ws.at[:, :cutoff].set(t[:, :cutoff])


class SynthesisLayer(nn.Module):
  """Modulated + demodulated conv, per-pixel noise, bias and leaky ReLU (gain sqrt 2)."""

  out_channels: int
  resolution: int  # output resolution
  kernel_size: int = 3
  up: int = 1  # 2: resize x 2 before the conv
  use_noise: bool = True
  activation: str = "lrelu"
  resample: str = "bilinear"
  fused_modconv: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, w: jax.Array, noise_mode: str = "random",
               noise: jax.Array | None = None) -> jax.Array:
    in_channels = x.shape[-1]
    styles = FullyConnectedLayer(in_channels, bias_init=1.0, name="affine")(w)  # [B, I]
    weight = self.param("weight", nn.initializers.normal(1.0),
                        (self.kernel_size, self.kernel_size, in_channels, self.out_channels))
    if self.up == 2:
      x = upsample2d(x, self.resample)  # [B, 2H, 2W, I]
    x = modulated_conv2d(x, weight, styles, True, self.fused_modconv)  # [B, R, R, O]
    if self.use_noise:
      r = self.resolution
      noise_const = self.variable(
          "noise_const", "noise_const", lambda: jax.random.normal(self.make_rng("params"), (r, r)))
      noise_strength = self.param("noise_strength", nn.initializers.zeros, ())
      if noise is not None:
        n = noise  # explicit [B | 1, R, R, 1]
      elif noise_mode == "random":
        n = jax.random.normal(self.make_rng("noise"), (x.shape[0], r, r, 1), x.dtype)
      elif noise_mode == "const":
        n = noise_const.value[None, :, :, None]
      elif noise_mode == "none":
        n = None
      else:
        raise ConfigError(f"noise_mode={noise_mode!r}: expected one of {NOISE_MODES}")
      if n is not None:
        x = x + n * noise_strength
    b = self.param("bias", nn.initializers.zeros, (self.out_channels,))
    return bias_act(x, b, self.activation)


class ToRGB(nn.Module):
  """Modulated (not demodulated) 1x1 conv to image channels, plus bias."""

  out_channels: int = 1
  fused_modconv: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, w: jax.Array) -> jax.Array:
    in_channels = x.shape[-1]
    styles = FullyConnectedLayer(in_channels, bias_init=1.0, name="affine")(w)
    styles = styles * (1.0 / math.sqrt(in_channels))  # weight gain of the 1x1 conv
    weight = self.param("weight", nn.initializers.normal(1.0),
                        (1, 1, in_channels, self.out_channels))
    x = modulated_conv2d(x, weight, styles, False, self.fused_modconv)
    b = self.param("bias", nn.initializers.zeros, (self.out_channels,))
    return x + b


class SynthesisBlock(nn.Module):
  """One resolution: [const | conv0 (up 2)], conv1, ToRGB; the image skip is summed."""

  out_channels: int
  resolution: int
  is_first: bool  # True: starts from the learned 4x4 constant
  img_channels: int = 1
  resample: str = "bilinear"
  fused_modconv: bool = False

  @property
  def num_conv(self) -> int:
    return 1 if self.is_first else 2

  @nn.compact
  def __call__(self, x, img, ws, noise_mode="random", noise_buffers=None):
    # ws: [B, num_conv + 1, w_dim] (the ToRGB's w is shared with the next block's conv0).
    noise_by_layer = noise_buffers or {}
    name = f"b{self.resolution}"
    kw = dict(resolution=self.resolution, resample=self.resample, fused_modconv=self.fused_modconv)
    if self.is_first:
      const = self.param("const", nn.initializers.normal(1.0), (4, 4, self.out_channels))
      x = jnp.broadcast_to(const[None], (ws.shape[0], 4, 4, self.out_channels))
      w_index = 0
    else:
      x = SynthesisLayer(self.out_channels, up=2, name="conv0", **kw)(
          x, ws[:, 0], noise_mode, noise_by_layer.get(f"{name}.conv0"))  # [B, R, R, C]
      w_index = 1
    x = SynthesisLayer(self.out_channels, name="conv1", **kw)(
        x, ws[:, w_index], noise_mode, noise_by_layer.get(f"{name}.conv1"))
    y = ToRGB(self.img_channels, self.fused_modconv, name="torgb")(x, ws[:, w_index + 1])
    img = y if img is None else upsample2d(img, self.resample) + y  # [B, R, R, 1]
    return x, img


def channels_dict(resolutions, channel_base: int, channel_max: int) -> dict[int, int]:
  """Channels per resolution: min(channel_base // res, channel_max) (at least 1)."""
  return {r: max(1, min(channel_base // r, channel_max)) for r in resolutions}


class SynthesisNetwork(nn.Module):
  """ws ``[B, num_ws, w_dim]`` -> images ``[B, R, R, img_channels]``."""

  img_resolution: int
  img_channels: int = 1
  channel_base: int = 32768  # channels at res r: min(channel_base // r, channel_max)
  channel_max: int = 512
  resample: str = "bilinear"
  fused_modconv: bool = False

  @property
  def block_resolutions(self) -> list[int]:
    return [2**i for i in range(2, int(round(math.log2(self.img_resolution))) + 1)]

  @property
  def num_ws(self) -> int:
    return num_ws_for(self.img_resolution)

  @nn.compact
  def __call__(self, ws, noise_mode="random", noise_buffers=None):
    if ws.ndim != 3 or ws.shape[1] != self.num_ws:
      raise ValueError(f"ws shape {ws.shape}: synthesis needs [B, num_ws={self.num_ws}, w_dim]")
    ch = channels_dict(self.block_resolutions, self.channel_base, self.channel_max)
    x = img = None
    w_idx = 0
    for res in self.block_resolutions:
      block = SynthesisBlock(ch[res], res, res == 4, self.img_channels, self.resample,
                             self.fused_modconv, name=f"b{res}")
      n = block.num_conv
      x, img = block(x, img, ws[:, w_idx:w_idx + n + 1], noise_mode, noise_buffers)
      w_idx += n
    return img


class StyleGAN2Generator(nn.Module):
  """Mapping + synthesis.

  Methods (use with ``apply(..., method=...)``):
    ``map(z, truncation_psi, truncation_cutoff, update_emas) -> ws [B, num_ws, w_dim]``;
    ``synthesize(ws, noise_mode, noise_buffers) -> images [B, R, R, 1]``;
    ``__call__(z, ...)``: both.
  ``noise_buffers``: optional dict ``'b{res}.conv{0,1}' -> [B | 1, res, res, 1]`` of
  explicit noise inputs, overriding ``noise_mode`` for those layers.
  """

  img_resolution: int
  z_dim: int = 512
  w_dim: int = 512
  img_channels: int = 1
  num_mapping_layers: int = 8
  mapping_lr_multiplier: float = 0.01
  w_avg_beta: float = 0.995
  channel_base: int = 32768
  channel_max: int = 512
  resample: str = "bilinear"
  fused_modconv: bool = False
  output_tanh: bool = True  # tanh on the summed ToRGB output: images in [-1, 1]

  @property
  def num_ws(self) -> int:
    return num_ws_for(self.img_resolution)

  def setup(self):
    self.synthesis = SynthesisNetwork(self.img_resolution, self.img_channels, self.channel_base,
                                      self.channel_max, self.resample, self.fused_modconv)
    self.mapping = MappingNetwork(self.z_dim, self.w_dim, self.num_ws, self.num_mapping_layers,
                                  self.mapping_lr_multiplier, self.w_avg_beta)

  def map(self, z, truncation_psi=1.0, truncation_cutoff=None, update_emas=False):
    return self.mapping(z, truncation_psi, truncation_cutoff, update_emas)

  def synthesize(self, ws, noise_mode="random", noise_buffers=None):
    img = self.synthesis(ws, noise_mode, noise_buffers)
    return jnp.tanh(img) if self.output_tanh else img

  def __call__(self, z, truncation_psi=1.0, truncation_cutoff=None, update_emas=False,
               noise_mode="random", noise_buffers=None):
    ws = self.map(z, truncation_psi, truncation_cutoff, update_emas)
    return self.synthesize(ws, noise_mode, noise_buffers)


# ----------------------------------------------------------------------------- discriminator


class MinibatchStd(nn.Module):
  """Appends the std of features over groups of samples (stylegan2 grouping).

  The group size is the largest divisor of the batch that is <= ``group_size``, so
  any batch (and any sharding of it) works.
  """

  group_size: int = 4
  num_channels: int = 1

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    n, h, w, c = x.shape
    g = max(d for d in range(1, min(self.group_size, n) + 1) if n % d == 0)
    f = self.num_channels
    y = x.reshape(g, n // g, h, w, f, c // f)  # sample index = gi * (n // g) + m
    y = y - jnp.mean(y, axis=0)
    y = jnp.sqrt(jnp.mean(jnp.square(y), axis=0) + 1e-8)  # [n/g, H, W, F, c/F]
    y = jnp.mean(y, axis=(1, 2, 4))  # [n/g, F]
    y = jnp.tile(y, (g, 1))[:, None, None, :]  # [n, 1, 1, F]
    y = jnp.broadcast_to(y, (n, h, w, f))
    return jnp.concatenate([x, y], axis=-1)  # [n, H, W, C + F]


class DiscriminatorBlock(nn.Module):
  """'resnet' block: (fromrgb), conv0, conv1 (down 2) + skip 1x1 (down 2), each * sqrt(.5)."""

  tmp_channels: int
  out_channels: int
  is_first: bool  # True: starts from the image through a 1x1 fromrgb

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    if self.is_first:
      x = Conv2dLayer(self.tmp_channels, 1, activation="lrelu", name="fromrgb")(x)
    y = Conv2dLayer(self.out_channels, 1, bias=False, down=2, gain=math.sqrt(0.5),
                    name="skip")(x)
    x = Conv2dLayer(self.tmp_channels, 3, activation="lrelu", name="conv0")(x)
    x = Conv2dLayer(self.out_channels, 3, activation="lrelu", down=2, gain=math.sqrt(0.5),
                    name="conv1")(x)
    return y + x  # [B, R/2, R/2, out]


class Discriminator(nn.Module):
  """images ``[B, R, R, 1]`` -> logits ``[B]``."""

  img_resolution: int
  channel_base: int = 32768
  channel_max: int = 512
  mbstd_group_size: int = 4  # samples per MinibatchStd group (clamped to the batch)
  mbstd_num_channels: int = 1  # 0: no MinibatchStd

  @nn.compact
  def __call__(self, img: jax.Array) -> jax.Array:
    k = int(round(math.log2(self.img_resolution)))
    block_res = [2**i for i in range(k, 2, -1)]
    ch = channels_dict(block_res + [4], self.channel_base, self.channel_max)
    x = img
    for res in block_res:
      x = DiscriminatorBlock(ch[res], ch[res // 2], res == self.img_resolution,
                             name=f"b{res}")(x)
    # Epilogue at 4x4.
    if self.mbstd_num_channels > 0:
      x = MinibatchStd(self.mbstd_group_size, self.mbstd_num_channels, name="mbstd")(x)
    x = Conv2dLayer(ch[4], 3, activation="lrelu", name="conv")(x)
    x = x.reshape(x.shape[0], -1)  # [B, 16 * C4]
    x = FullyConnectedLayer(ch[4], activation="lrelu", name="fc")(x)
    return FullyConnectedLayer(1, name="out")(x)[:, 0]  # [B]


# ----------------------------------------------------------------------------- config / API


@dataclasses.dataclass(frozen=True)
class StyleGAN2Loss:
  """Loss, regularisation and EMA settings (stylegan2-ada names; ``config.model`` keys).

  Attributes:
    r1_gamma: weight of the R1 penalty on real images.
    r1_interval: lazy R1 every N steps; 0: no R1.
    pl_weight: weight of the path-length penalty.
    pl_interval: lazy path-length regularisation every N steps; 0: none.
    pl_decay: decay of the running mean path length.
    pl_batch_shrink: the path-length batch is the batch divided by this.
    style_mixing_prob: probability of mixing two zs' styles in a batch.
    ema_half_life_images: half-life of the generator EMA in images (ema_kimg * 1000).
    ema_kimg: if set, overrides ``ema_half_life_images`` (thousands of images).
    ema_rampup: half-life <= rampup * images seen; None or 0: no ramp-up.
  """

  r1_gamma: float = 1.0
  r1_interval: int = 16
  pl_weight: float = 2.0
  pl_interval: int = 4
  pl_decay: float = 0.01
  pl_batch_shrink: int = 2
  style_mixing_prob: float = 0.9
  ema_half_life_images: int = 10000
  ema_kimg: float | None = None
  ema_rampup: float | None = 0.05

  @property
  def do_r1(self) -> bool:
    return self.r1_gamma > 0 and self.r1_interval > 0

  @property
  def do_pl(self) -> bool:
    return self.pl_weight > 0 and self.pl_interval > 0

  @property
  def ema_images(self) -> float:
    """The EMA half-life in images."""
    if self.ema_kimg is not None:
      return float(self.ema_kimg) * 1000
    return float(self.ema_half_life_images)


# The generator's image channels are fixed (single-channel slices), not a setting.
_FIXED_FIELDS = ("img_channels",)
# Config keys that name a module field differently (stylegan2-ada's z_dim).
_CONFIG_KEYS = {"z_dim": "latent_dim"}


def default_config() -> ml_collections.ConfigDict:
  """``config.model`` of the simplified StyleGAN2 (stylegan2-ada defaults, single channel)."""
  return settings.default_config("stylegan2_simple", StyleGAN2Generator, Discriminator,
                                 StyleGAN2Loss, renames=_CONFIG_KEYS, exclude=_FIXED_FIELDS)


def loss_settings(config: ml_collections.ConfigDict) -> StyleGAN2Loss:
  """The checked :class:`StyleGAN2Loss` of ``config.model`` (ConfigError names the key)."""
  m = config.model
  loss = StyleGAN2Loss(**settings.kwargs_for(StyleGAN2Loss, m))
  loss = dataclasses.replace(
      loss, r1_gamma=float(loss.r1_gamma), r1_interval=int(loss.r1_interval),
      pl_weight=float(loss.pl_weight), pl_interval=int(loss.pl_interval),
      pl_decay=float(loss.pl_decay), pl_batch_shrink=int(loss.pl_batch_shrink),
      style_mixing_prob=float(loss.style_mixing_prob))
  for key in ("r1_interval", "pl_interval"):
    if getattr(loss, key) < 0:
      raise ConfigError(f"model.{key}={getattr(loss, key)}: must be >= 0")
  if loss.pl_batch_shrink < 1:
    raise ConfigError(f"model.pl_batch_shrink={loss.pl_batch_shrink}: must be >= 1")
  if not 0.0 <= loss.style_mixing_prob <= 1.0:
    raise ConfigError(f"model.style_mixing_prob={loss.style_mixing_prob}: must be in [0, 1]")
  return loss


def _checked_image_size(config: ml_collections.ConfigDict) -> int:
  m = config.model
  size = blocks.check_image_size(config.image_size, 8)
  if "resample" in m and m.resample not in RESAMPLE:
    raise ConfigError(f"model.resample={m.resample!r}: expected one of {RESAMPLE}")
  for key in ("latent_dim", "w_dim", "num_mapping_layers", "channel_base", "channel_max"):
    if key in m and int(m[key]) < 1:
      raise ConfigError(f"model.{key}={m[key]}: must be >= 1")
  return size


def build_generator(config: ml_collections.ConfigDict) -> StyleGAN2Generator:
  """The generator module for ``config``."""
  size = _checked_image_size(config)
  return StyleGAN2Generator(img_resolution=size, **settings.kwargs_for(
      StyleGAN2Generator, config.model, _CONFIG_KEYS, _FIXED_FIELDS))


def build_discriminator(config: ml_collections.ConfigDict) -> Discriminator:
  """The discriminator module for ``config``."""
  size = _checked_image_size(config)
  return Discriminator(img_resolution=size,
                       **settings.kwargs_for(Discriminator, config.model))


def init_generator(config: ml_collections.ConfigDict, key: jax.Array) -> dict[str, Any]:
  """Generator variables ``{'params', 'stats', 'noise_const'}``."""
  g = build_generator(config)
  return dict(g.init(key, jnp.zeros((1, g.z_dim), jnp.float32), noise_mode="const"))


def noise_buffer_shapes(config: ml_collections.ConfigDict) -> dict[str, tuple[int, int, int, int]]:
  """Names and shapes ``[1, res, res, 1]`` of the explicit noise inputs."""
  size = blocks.check_image_size(config.image_size, 8)
  out = {}
  for res in [2**i for i in range(2, int(round(math.log2(size))) + 1)]:
    for conv in (("conv1",) if res == 4 else ("conv0", "conv1")):
      out[f"b{res}.{conv}"] = (1, res, res, 1)
  return out


def const_noise_buffers(params: Any) -> dict[str, jax.Array]:
  """The stored const noise as an explicit ``noise_buffers`` dict (``[1, R, R, 1]`` each)."""
  out = {}
  for block, convs in params["noise_const"]["synthesis"].items():
    for conv, v in convs.items():
      out[f"{block}.{conv}"] = v["noise_const"][None, :, :, None]
  return out


def _apply_z(g, psi, noise_mode):
  return blocks.ModuleApply(g, None, (("truncation_psi", psi), ("noise_mode", noise_mode)))


def make_generator(params: Any, config: ml_collections.ConfigDict, space: str = "z",
                   truncation_psi: float = 1.0, noise_mode: str = "const") -> Generator:
  """A :class:`Generator` in latent space 'z', 'w' or 'w+'.

  Args:
    params: generator variables ``{'params', 'stats', 'noise_const'}`` (for a trained
      model: ``trainer.generator(state).params``, i.e. the EMA weights).
    config: the run config.
    space: 'z' (apply maps z, with truncation), 'w' (apply takes ``w [B, w_dim]``,
      used for every layer) or 'w+' (``[B, num_ws, w_dim]``).  For 'w'/'w+' the
      ``sample_fn`` maps random z (with truncation); apply does not truncate.
    truncation_psi: lerp factor towards ``w_avg`` (1: none, 0: the mean image).
    noise_mode: 'const' (stored noise: deterministic) or 'none'.  'random' is not a
      pure function of the latents and is refused.
  """
  if noise_mode not in ("const", "none"):
    raise ConfigError(f"noise_mode={noise_mode!r}: a Generator needs 'const' or 'none'")
  g = build_generator(config)
  size = g.img_resolution
  common = dict(params=params, image_shape=(size, size, 1))
  if space == "z":
    return Generator(apply_fn=_apply_z(g, truncation_psi, noise_mode),
                     latent_spec=LatentSpec((g.z_dim,), "z", "normal"),
                     name="stylegan2-z", **common)
  sample = _SampleW(g, truncation_psi, space == "w")
  if space == "w":
    return Generator(apply_fn=_ApplyW(g, noise_mode, True), sample_fn=sample,
                     latent_spec=LatentSpec((g.w_dim,), "w", "none"),
                     name="stylegan2-w", **common)
  if space == "w+":
    return Generator(apply_fn=_ApplyW(g, noise_mode, False), sample_fn=sample,
                     latent_spec=LatentSpec((g.num_ws, g.w_dim), "w+", "none"),
                     name="stylegan2-w+", **common)
  raise ConfigError(f"space={space!r}: expected 'z', 'w' or 'w+'")


@dataclasses.dataclass(frozen=True)
class _ApplyW:
  """Hashable apply for w ``[B, w_dim]`` (broadcast) or w+ ``[B, num_ws, w_dim]``."""

  module: StyleGAN2Generator
  noise_mode: str
  broadcast: bool

  def __call__(self, variables, w):
    if self.broadcast:
      w = jnp.broadcast_to(w[:, None, :], (w.shape[0], self.module.num_ws, w.shape[-1]))
    return self.module.apply(variables, w, self.noise_mode, method="synthesize")


@dataclasses.dataclass(frozen=True)
class _SampleW:
  """Hashable ``(variables, key, n) -> w [n, w_dim]`` or ``w+ [n, num_ws, w_dim]``."""

  module: StyleGAN2Generator
  truncation_psi: float
  single: bool

  def __call__(self, variables, key, n):
    z = jax.random.normal(key, (n, self.module.z_dim), jnp.float32)
    ws = self.module.apply(variables, z, self.truncation_psi, method="map")
    return ws[:, 0] if self.single else ws
