"""The StyleGAN2-ADA networks exactly as NVlabs' ``training/networks.py`` computes them.

Our own Flax code after the behaviour of NVlabs stylegan2-ada-pytorch, written so that
the weights of a network trained with that code (its ``state_dict()``) give the same
images and logits here. Module, argument and variable names mirror the reference:

  * ``FullyConnectedLayer`` / ``Conv2dLayer``: equalized learning rate (weights stored
    N(0, 1) / lr_multiplier, scaled by ``lr_multiplier / sqrt(fan_in)`` at run time);
  * ``MappingNetwork``: z (and an embedded label c) normalised by the 2nd moment,
    ``num_layers`` FC layers, broadcast to ``num_ws``, truncation towards ``w_avg``;
  * ``SynthesisLayer``: modulated + demodulated conv (up-sampling by a transposed conv
    and the [1, 3, 3, 1] FIR filter), per-pixel noise, bias, lrelu, ``conv_clamp``;
  * ``SynthesisBlock``: 'orig' | 'skip' | 'resnet'; ``ToRGBLayer`` outputs are summed
    with the FIR-up-sampled image of the previous block ('skip');
  * ``Discriminator``: ``DiscriminatorBlock``s ('resnet' by default),
    ``MinibatchStdLayer`` and ``DiscriminatorEpilogue`` (projection for labels).

Variables: 'params' (trainable) and 'buffers' (not trained): ``w_avg`` (updated only
when ``update_w_avg=True`` and 'buffers' is mutable), ``noise_const`` (one fixed
N(0, 1) image per noise input, for ``noise_mode='const'``) and ``resample_filter``
(the FIR filter, as the reference stores it). Random noise takes the 'noise' rng.

Layout: images are ``[N, H, W, C]`` (the reference: ``[N, C, H, W]``); conv weights
``[kh, kw, in, out]`` (reference ``[out, in, kh, kw]``), FC weights ``[in, out]``
(reference ``[out, in]``), ``const`` ``[H, W, C]`` (reference ``[C, H, W]``). The
discriminator's ``b4.fc`` reads its input flattened in the reference's (C, H, W)
order, so its weight is the reference's transposed. :func:`generator_variables_from_state_dict`
does these transposes. Images are float32 in [-1, 1] scale; there is no output tanh.

Precision: ``dtype`` is the compute type of the convolutions (e.g. ``'bfloat16'`` on
accelerators); mapping, styles, demodulation, the image sum and the discriminator
epilogue stay float32, as in the reference's mixed precision. The reference's
``num_fp16_res`` (float16 for the highest resolutions) is not used: float32 by default
matches it called with ``force_fp32=True``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping, Sequence

from flax import traverse_util
from flax.core import unfreeze
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxlatent.errors import CheckpointError, ConfigError
from jaxlatent.generator import Generator as GeneratorFn, LatentSpec
from jaxlatent.ops import upfirdn2d as fir

NOISE_MODES = ("random", "const", "none")
ARCHITECTURES = ("orig", "skip", "resnet")
DEFAULT_FILTER = (1, 3, 3, 1)


def normalize_2nd_moment(x: jax.Array, axis: int = -1, eps: float = 1e-8) -> jax.Array:
  """``x / sqrt(mean(x^2) + eps)`` over ``axis``."""
  return x * jax.lax.rsqrt(jnp.mean(jnp.square(x), axis=axis, keepdims=True) + eps)


def modulated_conv2d(x: jax.Array, weight: jax.Array, styles: jax.Array,
                     noise: jax.Array | None = None, up: int = 1, down: int = 1,
                     padding: int = 0, resample_filter: Any = None, demodulate: bool = True,
                     flip_weight: bool = True, fused_modconv: bool = False) -> jax.Array:
  """Convolution with per-sample weights ``weight * styles`` (StyleGAN2's modulation).

  Args:
    x: ``[N, H, W, I]``.
    weight: ``[kh, kw, I, O]``.
    styles: ``[N, I]`` per-sample input-channel scales.
    noise: added to the output (after demodulation); broadcastable to it, or None.
    up, down, padding, resample_filter, flip_weight: as in ``fir.conv2d_resample``.
    demodulate: scale each output channel of each sample's weights to unit norm.
    fused_modconv: True builds the ``[N, kh, kw, I, O]`` weights and runs one grouped
      conv; False (default) scales the input by the styles, runs the shared conv and
      scales the output by the demodulation coefficients: the same function, and on
      XLA one batched conv instead of N small ones.

  Returns:
    ``[N, H', W', O]`` in ``x.dtype``.
  """
  n, _, _, in_ch = x.shape
  kh, kw, _, out_ch = weight.shape
  styles = styles.astype(jnp.float32)
  weight = weight.astype(jnp.float32)
  dcoefs = None
  if demodulate:  # rsqrt(sum_{kh, kw, I} (weight * styles)^2), without the [N, ...] weights
    sq = jnp.sum(jnp.square(weight), axis=(0, 1))  # [I, O]
    dcoefs = jax.lax.rsqrt(jnp.dot(jnp.square(styles), sq, precision="highest") + 1e-8)  # [N, O]
  conv = dict(f=resample_filter, up=up, down=down, padding=padding, flip_weight=flip_weight)
  if not fused_modconv:
    x = x * styles.astype(x.dtype)[:, None, None, :]
    x = fir.conv2d_resample(x, weight.astype(x.dtype), **conv)  # [N, H', W', O]
    if demodulate:
      x = x * dcoefs.astype(x.dtype)[:, None, None, :]
  else:
    w = weight[None] * styles[:, None, None, :, None]  # [N, kh, kw, I, O]
    if demodulate:
      w = w * dcoefs[:, None, None, None, :]
    w = w.transpose(1, 2, 3, 0, 4).reshape(kh, kw, in_ch, n * out_ch)  # group = sample
    h, wd = x.shape[1], x.shape[2]
    xg = x.transpose(1, 2, 0, 3).reshape(1, h, wd, n * in_ch)  # [1, H, W, N*I]
    y = fir.conv2d_resample(xg, w.astype(x.dtype), groups=n, **conv)  # [1, H', W', N*O]
    x = y.reshape(y.shape[1], y.shape[2], n, out_ch).transpose(2, 0, 1, 3)
  if noise is not None:
    x = x + noise.astype(x.dtype)
  return x


def _filter_buffer(module: nn.Module, taps: Sequence[float]) -> jax.Array:
  """The module's 'buffers'/'resample_filter' (the reference keeps it in its state)."""
  return module.variable("buffers", "resample_filter",
                         lambda: jnp.asarray(fir.setup_filter(list(taps)))).value


# ----------------------------------------------------------------------------- layers


class FullyConnectedLayer(nn.Module):
  """``act(x @ (weight * lr_multiplier / sqrt(in)) + bias * lr_multiplier)``, float32."""

  out_features: int
  bias: bool = True  # False: no bias
  activation: str = "linear"  # a key of ops.upfirdn2d.ACTIVATIONS
  lr_multiplier: float = 1.0  # learning-rate multiplier (0.01 in the mapping network)
  bias_init: float = 0.0  # initial bias (1 for style affines: styles start at 1)

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    in_features = x.shape[-1]
    weight = self.param("weight", lambda k, s: jax.random.normal(k, s) / self.lr_multiplier,
                        (in_features, self.out_features))
    x = x.astype(jnp.float32) @ (weight * (self.lr_multiplier / math.sqrt(in_features)))
    b = None
    if self.bias:
      b = self.param("bias", nn.initializers.constant(self.bias_init), (self.out_features,))
      b = b * self.lr_multiplier
    return fir.bias_act(x, b, act=self.activation)


class Conv2dLayer(nn.Module):
  """Equalized-lr conv with optional FIR up / down-sampling, bias, activation, clamp."""

  out_channels: int
  kernel_size: int
  bias: bool = True  # False: no bias
  activation: str = "linear"
  up: int = 1  # integer up-sampling factor
  down: int = 1  # integer down-sampling factor
  resample_filter: Sequence[float] = DEFAULT_FILTER  # low-pass filter for resampling
  conv_clamp: float | None = None  # clamp the output to +-conv_clamp; None = no clamp
  dtype: Any = "float32"  # compute dtype

  @nn.compact
  def __call__(self, x: jax.Array, gain: float = 1.0) -> jax.Array:
    k, in_ch = self.kernel_size, x.shape[-1]
    f = _filter_buffer(self, self.resample_filter)
    weight = self.param("weight", nn.initializers.normal(1.0), (k, k, in_ch, self.out_channels))
    b = self.param("bias", nn.initializers.zeros, (self.out_channels,)) if self.bias else None
    dt = jnp.dtype(self.dtype)
    w = (weight * (1.0 / math.sqrt(in_ch * k * k))).astype(dt)
    x = fir.conv2d_resample(x.astype(dt), w, f, up=self.up, down=self.down, padding=k // 2,
                            flip_weight=self.up == 1)
    clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
    return fir.bias_act(x, b, act=self.activation,
                        gain=fir.activation_gain(self.activation) * gain, clamp=clamp)


class MappingNetwork(nn.Module):
  """z ``[N, z_dim]`` (and c ``[N, c_dim]``) -> ws ``[N, num_ws, w_dim]`` (or ``[N, w_dim]``)."""

  z_dim: int  # input latent (Z) size; 0 = no latent
  c_dim: int  # label (C) size; 0 = no label
  w_dim: int  # intermediate latent (W) size
  num_ws: int | None  # number of ws to output; None = do not broadcast
  num_layers: int = 8  # mapping layers
  embed_features: int | None = None  # label embedding size; None = w_dim
  layer_features: int | None = None  # hidden layer size; None = w_dim
  activation: str = "lrelu"
  lr_multiplier: float = 0.01  # learning-rate multiplier of the mapping layers
  w_avg_beta: float | None = 0.995  # decay of the tracked mean w; None = not tracked

  @nn.compact
  def __call__(self, z: jax.Array | None, c: jax.Array | None = None,
               truncation_psi: Any = 1.0, truncation_cutoff: int | None = None,
               update_w_avg: bool = False) -> jax.Array:
    embed_features = self.w_dim if self.embed_features is None else self.embed_features
    if self.c_dim == 0:
      embed_features = 0
    layer_features = self.w_dim if self.layer_features is None else self.layer_features
    features = ([self.z_dim + embed_features] + [layer_features] * (self.num_layers - 1)
                + [self.w_dim])
    x = None
    if self.z_dim > 0:
      x = normalize_2nd_moment(z.astype(jnp.float32))
    if self.c_dim > 0:
      y = normalize_2nd_moment(FullyConnectedLayer(embed_features, name="embed")(c))
      x = y if x is None else jnp.concatenate([x, y], axis=1)
    for idx in range(self.num_layers):
      x = FullyConnectedLayer(features[idx + 1], activation=self.activation,
                              lr_multiplier=self.lr_multiplier, name=f"fc{idx}")(x)
    w_avg = None
    if self.num_ws is not None and self.w_avg_beta is not None:
      w_avg = self.variable("buffers", "w_avg", jnp.zeros, (self.w_dim,), jnp.float32)
      if update_w_avg and not self.is_initializing():
        mean = jnp.mean(jax.lax.stop_gradient(x), axis=0)
        w_avg.value = mean + self.w_avg_beta * (w_avg.value - mean)  # lerp(mean, w_avg, beta)
    if self.num_ws is not None:
      x = jnp.broadcast_to(x[:, None, :], (x.shape[0], self.num_ws, self.w_dim))  # [N, ws, w]
    if isinstance(truncation_psi, (int, float)) and truncation_psi == 1:
      return x
    if w_avg is None:
      raise ValueError("truncation needs w_avg: num_ws and w_avg_beta must not be None")
    return truncate(x, w_avg.value, truncation_psi, truncation_cutoff)


def truncate(ws: jax.Array, w_avg: jax.Array, psi: Any, cutoff: int | None = None) -> jax.Array:
  """Truncation trick: ``w_avg + psi (ws - w_avg)``, on ws ``[:, :cutoff]`` (all if None)."""
  t = w_avg + psi * (ws - w_avg)
  if cutoff is None or ws.ndim == 2:
    return t
  return ws.at[:, :cutoff].set(t[:, :cutoff])


class SynthesisLayer(nn.Module):
  """Modulated conv (optionally up-sampling x2), noise, bias, activation, clamp."""

  out_channels: int
  resolution: int  # output resolution of this layer
  kernel_size: int = 3
  up: int = 1  # integer up-sampling factor
  use_noise: bool = True  # add per-pixel noise
  activation: str = "lrelu"
  resample_filter: Sequence[float] = DEFAULT_FILTER
  conv_clamp: float | None = None  # clamp the output to +-conv_clamp; None = no clamp
  fused_modconv: bool = False  # see modulated_conv2d: same function either way
  dtype: Any = "float32"

  @nn.compact
  def __call__(self, x: jax.Array, w: jax.Array, noise_mode: str = "random",
               gain: float = 1.0, noise_input: jax.Array | None = None) -> jax.Array:
    # noise_input: an explicit [N | 1, R, R, 1] image replacing the mode's noise (the
    # projector optimises these in place of the stored const noise).
    if noise_mode not in NOISE_MODES:
      raise ValueError(f"noise_mode={noise_mode!r}: expected one of {NOISE_MODES}")
    in_ch, r = x.shape[-1], self.resolution
    if x.shape[1:3] != (r // self.up, r // self.up):
      raise ValueError(f"input of shape {x.shape}: expected [N, {r // self.up}, {r // self.up}, C]")
    f = _filter_buffer(self, self.resample_filter)
    styles = FullyConnectedLayer(in_ch, bias_init=1.0, name="affine")(w)  # [N, I]
    k = self.kernel_size
    weight = self.param("weight", nn.initializers.normal(1.0), (k, k, in_ch, self.out_channels))
    noise = None
    if self.use_noise:
      noise_const = self.variable("buffers", "noise_const",
                                  lambda: jax.random.normal(self.make_rng("params"), (r, r)))
      noise_strength = self.param("noise_strength", nn.initializers.zeros, ())
      if noise_input is not None:
        noise = noise_input * noise_strength
      elif noise_mode == "random":
        noise = jax.random.normal(self.make_rng("noise"), (x.shape[0], r, r, 1)) * noise_strength
      elif noise_mode == "const":
        noise = noise_const.value[None, :, :, None] * noise_strength  # [1, R, R, 1]
    bias = self.param("bias", nn.initializers.zeros, (self.out_channels,))
    x = modulated_conv2d(x.astype(jnp.dtype(self.dtype)), weight, styles, noise=noise,
                         up=self.up, padding=k // 2, resample_filter=f,
                         flip_weight=self.up == 1, fused_modconv=self.fused_modconv)
    clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
    return fir.bias_act(x, bias, act=self.activation,
                        gain=fir.activation_gain(self.activation) * gain, clamp=clamp)


class ToRGBLayer(nn.Module):
  """Modulated (not demodulated) conv to image channels, bias, clamp."""

  out_channels: int  # image channels
  kernel_size: int = 1
  conv_clamp: float | None = None
  fused_modconv: bool = False
  dtype: Any = "float32"

  @nn.compact
  def __call__(self, x: jax.Array, w: jax.Array) -> jax.Array:
    in_ch, k = x.shape[-1], self.kernel_size
    styles = FullyConnectedLayer(in_ch, bias_init=1.0, name="affine")(w)
    styles = styles * (1.0 / math.sqrt(in_ch * k * k))  # the conv's equalized-lr gain
    weight = self.param("weight", nn.initializers.normal(1.0), (k, k, in_ch, self.out_channels))
    bias = self.param("bias", nn.initializers.zeros, (self.out_channels,))
    x = modulated_conv2d(x.astype(jnp.dtype(self.dtype)), weight, styles,
                         demodulate=False, fused_modconv=self.fused_modconv)
    return fir.bias_act(x, bias, clamp=self.conv_clamp)


class SynthesisBlock(nn.Module):
  """One resolution: [const | conv0 (up x2)], conv1, [torgb]; returns ``(x, img)``."""

  in_channels: int  # 0 = first block (starts from the learned constant)
  out_channels: int
  resolution: int
  img_channels: int
  is_last: bool
  architecture: str = "skip"  # 'orig' | 'skip' | 'resnet'
  resample_filter: Sequence[float] = DEFAULT_FILTER
  conv_clamp: float | None = None
  kernel_size: int = 3
  use_noise: bool = True
  activation: str = "lrelu"
  fused_modconv: bool = False
  dtype: Any = "float32"

  @property
  def num_conv(self) -> int:
    return 1 if self.in_channels == 0 else 2

  @property
  def num_torgb(self) -> int:
    return 1 if self.is_last or self.architecture == "skip" else 0

  @nn.compact
  def __call__(self, x: jax.Array | None, img: jax.Array | None, ws: jax.Array,
               noise_mode: str = "random", noise_buffers: Mapping[str, jax.Array] | None = None
               ) -> tuple[jax.Array, jax.Array | None]:
    # ws: [N, num_conv + num_torgb, w_dim]; the torgb's w is the next block's conv0 w.
    if self.architecture not in ARCHITECTURES:
      raise ValueError(f"architecture={self.architecture!r}: expected one of {ARCHITECTURES}")
    dt = jnp.dtype(self.dtype)
    f = _filter_buffer(self, self.resample_filter)
    # Only the resampling layers get the block's filter; the others keep the default
    # (unused, but part of the reference's state).
    layer = dict(resolution=self.resolution, kernel_size=self.kernel_size,
                 use_noise=self.use_noise, activation=self.activation,
                 conv_clamp=self.conv_clamp, fused_modconv=self.fused_modconv, dtype=self.dtype)
    r, c = self.resolution, self.out_channels
    nb = dict(noise_buffers or {})
    noise = lambda conv: nb.get(f"b{r}.{conv}")
    wi = 0
    if self.in_channels == 0:
      const = self.param("const", nn.initializers.normal(1.0), (r, r, c))
      x = jnp.broadcast_to(const.astype(dt)[None], (ws.shape[0], r, r, c))
      x = SynthesisLayer(c, name="conv1", **layer)(x, ws[:, 0], noise_mode,
                                                   noise_input=noise("conv1"))
      wi = 1
    else:
      x = x.astype(dt)
      y = None
      if self.architecture == "resnet":
        y = Conv2dLayer(c, kernel_size=1, bias=False, up=2, resample_filter=self.resample_filter,
                        dtype=self.dtype, name="skip")(x, gain=math.sqrt(0.5))
      x = SynthesisLayer(c, up=2, resample_filter=self.resample_filter, name="conv0", **layer)(
          x, ws[:, 0], noise_mode, noise_input=noise("conv0"))  # [N, R, R, C]
      x = SynthesisLayer(c, name="conv1", **layer)(
          x, ws[:, 1], noise_mode, gain=math.sqrt(0.5) if y is not None else 1.0,
          noise_input=noise("conv1"))
      if y is not None:
        x = y + x
      wi = 2
    if img is not None:
      img = fir.upsample2d(img, f)  # [N, R, R, img_channels]
    if self.num_torgb:
      y = ToRGBLayer(self.img_channels, conv_clamp=self.conv_clamp,
                     fused_modconv=self.fused_modconv, dtype=self.dtype,
                     name="torgb")(x, ws[:, wi]).astype(jnp.float32)
      img = y if img is None else img + y
    return x, img


def block_resolutions(img_resolution: int) -> list[int]:
  """4, 8, ..., img_resolution (a power of two >= 4)."""
  if img_resolution < 4 or img_resolution & (img_resolution - 1):
    raise ValueError(f"img_resolution={img_resolution}: must be a power of two >= 4")
  return [2**i for i in range(2, int(math.log2(img_resolution)) + 1)]


def channels_dict(resolutions: Sequence[int], channel_base: int, channel_max: int
                  ) -> dict[int, int]:
  """Channels at each resolution: ``min(channel_base // res, channel_max)``."""
  return {res: min(channel_base // res, channel_max) for res in resolutions}


def synthesis_num_ws(img_resolution: int) -> int:
  """ws the synthesis network takes: one per conv plus the last torgb (2 log2 R - 2).

  The reference counts ``num_conv`` of every block plus ``num_torgb`` of the last one;
  each block's torgb shares its w with the next block's first conv.
  """
  return sum(1 if res == 4 else 2 for res in block_resolutions(img_resolution)) + 1


class SynthesisNetwork(nn.Module):
  """ws ``[N, num_ws, w_dim]`` -> images ``[N, R, R, img_channels]`` float32."""

  w_dim: int
  img_resolution: int
  img_channels: int
  channel_base: int = 32768  # channels at resolution r: min(channel_base // r, channel_max)
  channel_max: int = 512
  architecture: str = "skip"
  resample_filter: Sequence[float] = DEFAULT_FILTER
  conv_clamp: float | None = None
  kernel_size: int = 3
  use_noise: bool = True
  activation: str = "lrelu"
  fused_modconv: bool = False
  dtype: Any = "float32"

  @property
  def num_ws(self) -> int:
    return synthesis_num_ws(self.img_resolution)

  @nn.compact
  def __call__(self, ws: jax.Array, noise_mode: str = "random",
               noise_buffers: Mapping[str, jax.Array] | None = None) -> jax.Array:
    if ws.shape[1:] != (self.num_ws, self.w_dim):
      raise ValueError(f"ws of shape {ws.shape}: expected [N, {self.num_ws}, {self.w_dim}]")
    ws = ws.astype(jnp.float32)
    res_list = block_resolutions(self.img_resolution)
    ch = channels_dict(res_list, self.channel_base, self.channel_max)
    x = img = None
    w_idx = 0
    for res in res_list:
      block = SynthesisBlock(
          in_channels=ch[res // 2] if res > 4 else 0, out_channels=ch[res], resolution=res,
          img_channels=self.img_channels, is_last=res == self.img_resolution,
          architecture=self.architecture, resample_filter=self.resample_filter,
          conv_clamp=self.conv_clamp, kernel_size=self.kernel_size, use_noise=self.use_noise,
          activation=self.activation, fused_modconv=self.fused_modconv, dtype=self.dtype,
          name=f"b{res}")
      n = block.num_conv + block.num_torgb
      x, img = block(x, img, ws[:, w_idx:w_idx + n], noise_mode, noise_buffers)
      w_idx += block.num_conv
    return img


class Generator(nn.Module):
  """z ``[N, z_dim]`` (and c ``[N, c_dim]``) -> images ``[N, R, R, img_channels]``.

  The reference's ``mapping_kwargs`` are the ``mapping_*`` fields and ``w_avg_beta``;
  its ``synthesis_kwargs`` the synthesis fields (:func:`generator_config_from_kwargs`
  translates). ``num_ws`` and the w+ layout are the reference's.
  """

  z_dim: int = 512
  c_dim: int = 0
  w_dim: int = 512
  img_resolution: int = 256
  img_channels: int = 1
  # mapping network
  mapping_num_layers: int = 8
  mapping_embed_features: int | None = None  # None = w_dim
  mapping_layer_features: int | None = None  # None = w_dim
  mapping_activation: str = "lrelu"
  mapping_lr_multiplier: float = 0.01
  w_avg_beta: float | None = 0.995  # None = w_avg not tracked (no truncation)
  # synthesis network
  channel_base: int = 32768
  channel_max: int = 512
  architecture: str = "skip"  # 'orig' | 'skip' | 'resnet'
  resample_filter: Sequence[float] = DEFAULT_FILTER
  conv_clamp: float | None = None  # the reference trains with 256; None = no clamping
  kernel_size: int = 3
  use_noise: bool = True
  activation: str = "lrelu"
  fused_modconv: bool = False  # same function either way; False is faster on XLA
  dtype: Any = "float32"  # conv compute dtype ('bfloat16' on accelerators)

  @property
  def num_ws(self) -> int:
    return synthesis_num_ws(self.img_resolution)

  def setup(self):
    self.synthesis = SynthesisNetwork(
        w_dim=self.w_dim, img_resolution=self.img_resolution, img_channels=self.img_channels,
        channel_base=self.channel_base, channel_max=self.channel_max,
        architecture=self.architecture, resample_filter=tuple(self.resample_filter),
        conv_clamp=self.conv_clamp, kernel_size=self.kernel_size, use_noise=self.use_noise,
        activation=self.activation, fused_modconv=self.fused_modconv, dtype=self.dtype)
    self.mapping = MappingNetwork(
        z_dim=self.z_dim, c_dim=self.c_dim, w_dim=self.w_dim, num_ws=self.num_ws,
        num_layers=self.mapping_num_layers, embed_features=self.mapping_embed_features,
        layer_features=self.mapping_layer_features, activation=self.mapping_activation,
        lr_multiplier=self.mapping_lr_multiplier, w_avg_beta=self.w_avg_beta)

  def map(self, z: jax.Array, c: jax.Array | None = None, truncation_psi: Any = 1.0,
          truncation_cutoff: int | None = None, update_w_avg: bool = False) -> jax.Array:
    """z -> ws ``[N, num_ws, w_dim]``."""
    return self.mapping(z, c, truncation_psi, truncation_cutoff, update_w_avg)

  def synthesize(self, ws: jax.Array, noise_mode: str = "random",
                 noise_buffers: Mapping[str, jax.Array] | None = None) -> jax.Array:
    """ws ``[N, num_ws, w_dim]`` -> images ``[N, R, R, img_channels]``.

    ``noise_buffers``: optional ``'b{res}.conv{0,1}' -> [N | 1, res, res, 1]`` explicit
    noise images overriding ``noise_mode`` for those layers.
    """
    return self.synthesis(ws, noise_mode, noise_buffers)

  def __call__(self, z: jax.Array, c: jax.Array | None = None, truncation_psi: Any = 1.0,
               truncation_cutoff: int | None = None, noise_mode: str = "random",
               update_w_avg: bool = False) -> jax.Array:
    ws = self.mapping(z, c, truncation_psi, truncation_cutoff, update_w_avg)
    return self.synthesis(ws, noise_mode)


# ----------------------------------------------------------------------------- discriminator


class DiscriminatorBlock(nn.Module):
  """[fromrgb], conv0, conv1 (down x2) [+ resnet skip]; returns ``(x, img)``."""

  in_channels: int  # 0 = first block (reads the image)
  tmp_channels: int
  out_channels: int
  resolution: int
  img_channels: int
  architecture: str = "resnet"  # 'orig' | 'skip' | 'resnet'
  activation: str = "lrelu"
  resample_filter: Sequence[float] = DEFAULT_FILTER
  conv_clamp: float | None = None
  dtype: Any = "float32"

  @nn.compact
  def __call__(self, x: jax.Array | None, img: jax.Array | None
               ) -> tuple[jax.Array, jax.Array | None]:
    if self.architecture not in ARCHITECTURES:
      raise ValueError(f"architecture={self.architecture!r}: expected one of {ARCHITECTURES}")
    f = _filter_buffer(self, self.resample_filter)
    # As in SynthesisBlock, only conv1 and skip get the block's filter.
    conv = dict(activation=self.activation, conv_clamp=self.conv_clamp, dtype=self.dtype)
    if self.in_channels == 0 or self.architecture == "skip":
      y = Conv2dLayer(self.tmp_channels, kernel_size=1, name="fromrgb", **conv)(img)
      x = y if x is None else x + y
      img = fir.downsample2d(img, f) if self.architecture == "skip" else None
    if self.architecture == "resnet":
      y = Conv2dLayer(self.out_channels, kernel_size=1, bias=False, down=2,
                      resample_filter=self.resample_filter, dtype=self.dtype,
                      name="skip")(x, gain=math.sqrt(0.5))
      x = Conv2dLayer(self.tmp_channels, kernel_size=3, name="conv0", **conv)(x)
      x = Conv2dLayer(self.out_channels, kernel_size=3, down=2,
                      resample_filter=self.resample_filter, name="conv1", **conv)(
          x, gain=math.sqrt(0.5))
      x = y + x
    else:
      x = Conv2dLayer(self.tmp_channels, kernel_size=3, name="conv0", **conv)(x)
      x = Conv2dLayer(self.out_channels, kernel_size=3, down=2,
                      resample_filter=self.resample_filter, name="conv1", **conv)(x)
    return x, img


class MinibatchStdLayer(nn.Module):
  """Appends the std over groups of ``group_size`` samples as ``num_channels`` channels.

  Sample ``i`` belongs to group ``i % (N / G)``, as in the reference; N must be a
  multiple of ``G = min(group_size, N)``.
  """

  group_size: int | None = 4  # None = the whole batch
  num_channels: int = 1

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    n, h, w, c = x.shape
    g = n if self.group_size is None else min(self.group_size, n)
    if n % g:
      raise ValueError(f"batch of {n}: must be a multiple of the minibatch-std group size {g}")
    nf = self.num_channels
    y = x.astype(jnp.float32).reshape(g, n // g, h, w, nf, c // nf)  # [G, n, H, W, F, c]
    y = y - jnp.mean(y, axis=0)
    y = jnp.sqrt(jnp.mean(jnp.square(y), axis=0) + 1e-8)  # [n, H, W, F, c]
    y = jnp.mean(y, axis=(1, 2, 4))  # [n, F]
    y = jnp.tile(y[:, None, None, :], (g, h, w, 1))  # [N, H, W, F]
    return jnp.concatenate([x, y.astype(x.dtype)], axis=-1)


class DiscriminatorEpilogue(nn.Module):
  """[fromrgb], minibatch std, conv, fc, out (and the label projection); float32."""

  in_channels: int
  cmap_dim: int  # mapped label size; 0 = unconditional
  resolution: int
  img_channels: int
  architecture: str = "resnet"
  mbstd_group_size: int | None = 4  # None = the whole batch
  mbstd_num_channels: int = 1  # 0 = no minibatch-std layer
  activation: str = "lrelu"
  conv_clamp: float | None = None

  @nn.compact
  def __call__(self, x: jax.Array, img: jax.Array | None, cmap: jax.Array | None = None
               ) -> jax.Array:
    x = x.astype(jnp.float32)
    if self.architecture == "skip":
      x = x + Conv2dLayer(self.in_channels, kernel_size=1, activation=self.activation,
                          name="fromrgb")(img.astype(jnp.float32))
    if self.mbstd_num_channels > 0:
      x = MinibatchStdLayer(self.mbstd_group_size, self.mbstd_num_channels, name="mbstd")(x)
    x = Conv2dLayer(self.in_channels, kernel_size=3, activation=self.activation,
                    conv_clamp=self.conv_clamp, name="conv")(x)
    # Flattened in (C, H, W) order so the fc weight is the reference's.
    x = x.transpose(0, 3, 1, 2).reshape(x.shape[0], -1)  # [N, C*H*W]
    x = FullyConnectedLayer(self.in_channels, activation=self.activation, name="fc")(x)
    x = FullyConnectedLayer(1 if self.cmap_dim == 0 else self.cmap_dim, name="out")(x)
    if self.cmap_dim > 0:
      x = jnp.sum(x * cmap, axis=1, keepdims=True) * (1.0 / math.sqrt(self.cmap_dim))
    return x  # [N, 1]


class Discriminator(nn.Module):
  """images ``[N, R, R, img_channels]`` (and c ``[N, c_dim]``) -> logits ``[N, 1]``."""

  c_dim: int = 0
  img_resolution: int = 256
  img_channels: int = 1
  architecture: str = "resnet"  # 'orig' | 'skip' | 'resnet'
  channel_base: int = 32768
  channel_max: int = 512
  conv_clamp: float | None = None
  cmap_dim: int | None = None  # mapped label size; None = channels at 4x4
  activation: str = "lrelu"
  resample_filter: Sequence[float] = DEFAULT_FILTER
  mbstd_group_size: int | None = 4
  mbstd_num_channels: int = 1
  # label mapping network (conditional only)
  mapping_num_layers: int = 8
  mapping_embed_features: int | None = None
  mapping_layer_features: int | None = None
  mapping_activation: str = "lrelu"
  mapping_lr_multiplier: float = 0.01
  dtype: Any = "float32"

  @nn.compact
  def __call__(self, img: jax.Array, c: jax.Array | None = None) -> jax.Array:
    r = self.img_resolution
    if img.shape[1:] != (r, r, self.img_channels):
      raise ValueError(f"images of shape {img.shape}: expected [N, {r}, {r}, {self.img_channels}]")
    res_list = block_resolutions(r)[::-1][:-1]  # R, R/2, ..., 8
    ch = channels_dict(res_list + [4], self.channel_base, self.channel_max)
    cmap_dim = ch[4] if self.cmap_dim is None else self.cmap_dim
    if self.c_dim == 0:
      cmap_dim = 0
    x = None
    for res in res_list:
      x, img = DiscriminatorBlock(
          in_channels=ch[res] if res < r else 0, tmp_channels=ch[res], out_channels=ch[res // 2],
          resolution=res, img_channels=self.img_channels, architecture=self.architecture,
          activation=self.activation, resample_filter=tuple(self.resample_filter),
          conv_clamp=self.conv_clamp, dtype=self.dtype, name=f"b{res}")(x, img)
    cmap = None
    if self.c_dim > 0:
      cmap = MappingNetwork(
          z_dim=0, c_dim=self.c_dim, w_dim=cmap_dim, num_ws=None, w_avg_beta=None,
          num_layers=self.mapping_num_layers, embed_features=self.mapping_embed_features,
          layer_features=self.mapping_layer_features, activation=self.mapping_activation,
          lr_multiplier=self.mapping_lr_multiplier, name="mapping")(None, c)
    return DiscriminatorEpilogue(
        ch[4], cmap_dim=cmap_dim, resolution=4, img_channels=self.img_channels,
        architecture=self.architecture, mbstd_group_size=self.mbstd_group_size,
        mbstd_num_channels=self.mbstd_num_channels, activation=self.activation,
        conv_clamp=self.conv_clamp, name="b4")(x, img, cmap)


# ----------------------------------------------------------------------------- configs


def _module_defaults(cls: type[nn.Module]) -> dict[str, Any]:
  return {f.name: f.default for f in dataclasses.fields(cls)
          if f.name not in ("parent", "name") and f.default is not dataclasses.MISSING}


def default_config() -> ml_collections.ConfigDict:
  """``config.model`` of the generator: the fields of :class:`Generator` and their defaults."""
  return ml_collections.ConfigDict(_module_defaults(Generator))


def default_discriminator_config() -> ml_collections.ConfigDict:
  """The fields of :class:`Discriminator` and their defaults."""
  return ml_collections.ConfigDict(_module_defaults(Discriminator))


# Reference kwarg -> our field, per kwargs dict. Kwargs that only steer float16 memory
# layout or training (num_fp16_res, fp16_channels_last, freeze_layers) do not change
# the function computed in float32 and are dropped.
_G_TOP = ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels")
_MAPPING = {"num_layers": "mapping_num_layers", "embed_features": "mapping_embed_features",
            "layer_features": "mapping_layer_features", "activation": "mapping_activation",
            "lr_multiplier": "mapping_lr_multiplier"}
_G_MAPPING = dict(_MAPPING, w_avg_beta="w_avg_beta")
_G_SYNTHESIS = {k: k for k in ("channel_base", "channel_max", "conv_clamp", "architecture",
                               "resample_filter", "kernel_size", "use_noise", "activation")}
_D_TOP = {k: k for k in ("c_dim", "img_resolution", "img_channels", "architecture",
                         "channel_base", "channel_max", "conv_clamp", "cmap_dim")}
_D_BLOCK = {"activation": "activation", "resample_filter": "resample_filter"}
_D_EPILOGUE = {"mbstd_group_size": "mbstd_group_size",
               "mbstd_num_channels": "mbstd_num_channels", "activation": "activation"}
_DROPPED = ("num_fp16_res", "fp16_channels_last", "freeze_layers")


def _plain(v: Any) -> Any:
  if isinstance(v, (list, tuple)):
    return tuple(_plain(e) for e in v)
  if isinstance(v, np.generic):
    return v.item()
  return v


def _translate(out: dict[str, Any], kwargs: Mapping[str, Any] | None, table: Mapping[str, str],
               where: str) -> None:
  for key, value in dict(kwargs or {}).items():
    if key in _DROPPED:
      continue
    if key not in table:
      raise CheckpointError(f"init_kwargs{where}[{key!r}]: not supported by this port "
                            f"(supported: {sorted(table)})")
    field, value = table[key], _plain(value)
    if field in out and out[field] != value:
      raise CheckpointError(f"init_kwargs{where}[{key!r}]={value!r}: differs from "
                            f"{field}={out[field]!r} set elsewhere; one value is supported")
    out[field] = value


def generator_config_from_kwargs(init_kwargs: Mapping[str, Any]) -> dict[str, Any]:
  """Our :class:`Generator` fields from the reference ``Generator.init_kwargs``.

  ``init_kwargs`` has z_dim, c_dim, w_dim, img_resolution, img_channels,
  mapping_kwargs and synthesis_kwargs (as stored in a ``network-snapshot.pkl``).
  Raises CheckpointError naming a missing or unsupported kwarg.
  """
  kw = dict(init_kwargs)
  out: dict[str, Any] = {}
  for key in _G_TOP:
    if key not in kw:
      raise CheckpointError(f"init_kwargs: {key!r} is missing")
    out[key] = _plain(kw.pop(key))
  _translate(out, kw.pop("mapping_kwargs", None), _G_MAPPING, "['mapping_kwargs']")
  _translate(out, kw.pop("synthesis_kwargs", None), _G_SYNTHESIS, "['synthesis_kwargs']")
  _translate(out, kw, {}, "")
  return out


def discriminator_config_from_kwargs(init_kwargs: Mapping[str, Any]) -> dict[str, Any]:
  """Our :class:`Discriminator` fields from the reference ``Discriminator.init_kwargs``."""
  kw = dict(init_kwargs)
  out: dict[str, Any] = {}
  for key in ("c_dim", "img_resolution", "img_channels"):
    if key not in kw:
      raise CheckpointError(f"init_kwargs: {key!r} is missing")
  _translate(out, {k: v for k, v in kw.items() if k in _D_TOP or k in _DROPPED}, _D_TOP, "")
  _translate(out, kw.get("block_kwargs"), _D_BLOCK, "['block_kwargs']")
  _translate(out, kw.get("mapping_kwargs"), _MAPPING, "['mapping_kwargs']")
  _translate(out, kw.get("epilogue_kwargs"), _D_EPILOGUE, "['epilogue_kwargs']")
  rest = {k: v for k, v in kw.items() if k not in _D_TOP and k not in _DROPPED and
          k not in ("block_kwargs", "mapping_kwargs", "epilogue_kwargs")}
  _translate(out, rest, {}, "")
  return out


# ----------------------------------------------------------------------------- state dicts


def _to_ours(leaf: str, a: np.ndarray) -> np.ndarray:
  """A reference tensor in our layout (see the module docstring)."""
  if leaf == "weight" and a.ndim == 2:
    return a.T  # [out, in] -> [in, out]
  if leaf == "weight" and a.ndim == 4:
    return a.transpose(2, 3, 1, 0)  # [O, I, kh, kw] -> [kh, kw, I, O]
  if leaf == "const" and a.ndim == 3:
    return a.transpose(1, 2, 0)  # [C, H, W] -> [H, W, C]
  return a


def _to_reference(leaf: str, a: np.ndarray) -> np.ndarray:
  if leaf == "weight" and a.ndim == 2:
    return a.T
  if leaf == "weight" and a.ndim == 4:
    return a.transpose(3, 2, 0, 1)
  if leaf == "const" and a.ndim == 3:
    return a.transpose(2, 0, 1)
  return a


def _reference_shape(leaf: str, shape: tuple[int, ...]) -> tuple[int, ...]:
  return _to_reference(leaf, np.empty(shape, np.uint8)).shape


def _variables_from_state_dict(state_dict: Mapping[str, Any], shapes: Any, what: str) -> dict:
  """Fills the variable tree ``shapes`` (from ``eval_shape``) from reference tensors."""
  flat = traverse_util.flatten_dict(unfreeze(shapes))
  out, missing = {}, []
  for key, sds in flat.items():
    name = ".".join(key[1:])  # the reference's state_dict key
    if name not in state_dict:
      missing.append(name)
      continue
    a = np.asarray(state_dict[name], dtype=np.float32)
    want = _reference_shape(key[-1], tuple(sds.shape))
    if a.shape != want:
      raise CheckpointError(f"{what} tensor {name!r}: shape {list(a.shape)} in the checkpoint, "
                            f"{list(want)} expected by the config")
    out[key] = jnp.asarray(_to_ours(key[-1], a))
  if missing:
    raise CheckpointError(f"{what}: {len(missing)} tensor(s) missing from the checkpoint: "
                          f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
  extra = sorted(set(state_dict) - {".".join(k[1:]) for k in flat})
  if extra:
    raise CheckpointError(f"{what}: {len(extra)} tensor(s) in the checkpoint not used by the "
                          f"config: {', '.join(extra[:5])}{' ...' if len(extra) > 5 else ''}")
  return traverse_util.unflatten_dict(out)


def generator_variable_shapes(config: Mapping[str, Any]) -> Any:
  """``jax.ShapeDtypeStruct`` tree of the variables of ``Generator(**config)``."""
  g = Generator(**config)
  z = jnp.zeros((1, g.z_dim))
  c = jnp.zeros((1, g.c_dim)) if g.c_dim else None
  key = jax.random.key(0)
  return jax.eval_shape(lambda: g.init({"params": key, "noise": key}, z, c, noise_mode="const"))


def discriminator_variable_shapes(config: Mapping[str, Any]) -> Any:
  """``jax.ShapeDtypeStruct`` tree of the variables of ``Discriminator(**config)``."""
  d = Discriminator(**config)
  img = jnp.zeros((1, d.img_resolution, d.img_resolution, d.img_channels))
  c = jnp.zeros((1, d.c_dim)) if d.c_dim else None
  return jax.eval_shape(lambda: d.init(jax.random.key(0), img, c))


def generator_variables_from_state_dict(state_dict: Mapping[str, Any],
                                        config: Mapping[str, Any]) -> dict:
  """Flax variables (``{'params', 'buffers'}``) of ``Generator(**config)`` from a reference
  ``G.state_dict()`` (name -> array). Raises CheckpointError on a missing or unused
  tensor or a shape that does not fit the config, naming it."""
  return _variables_from_state_dict(state_dict, generator_variable_shapes(config), "generator")


def discriminator_variables_from_state_dict(state_dict: Mapping[str, Any],
                                            config: Mapping[str, Any]) -> dict:
  """As :func:`generator_variables_from_state_dict`, for ``Discriminator(**config)``."""
  return _variables_from_state_dict(state_dict, discriminator_variable_shapes(config),
                                    "discriminator")


def state_dict_from_variables(variables: Mapping[str, Any]) -> dict[str, np.ndarray]:
  """The reference ``state_dict`` (name -> float32 array, reference layout) of our
  variables: the inverse of the ``*_variables_from_state_dict`` functions."""
  flat = traverse_util.flatten_dict(unfreeze(variables))
  return {".".join(k[1:]): _to_reference(k[-1], np.asarray(v, np.float32)) for k, v in flat.items()}


# ----------------------------------------------------------------------------- Generator contract


@dataclasses.dataclass(frozen=True)
class _ApplyZ:
  """Hashable ``(variables, z [N, z_dim]) -> images``."""

  module: Generator
  truncation_psi: float
  truncation_cutoff: int | None
  noise_mode: str

  def __call__(self, variables, z):
    return self.module.apply(variables, z, None, self.truncation_psi, self.truncation_cutoff,
                             self.noise_mode)


@dataclasses.dataclass(frozen=True)
class _ApplyW:
  """Hashable apply of w ``[N, w_dim]`` (every layer) or w+ ``[N, num_ws, w_dim]``."""

  module: Generator
  noise_mode: str
  broadcast: bool

  def __call__(self, variables, w):
    if self.broadcast:
      w = jnp.broadcast_to(w[:, None, :], (w.shape[0], self.module.num_ws, w.shape[-1]))
    return self.module.apply(variables, w, self.noise_mode, method=Generator.synthesize)


@dataclasses.dataclass(frozen=True)
class _SampleW:
  """Hashable ``(variables, key, n) -> w [n, w_dim]`` or w+ ``[n, num_ws, w_dim]``: mapped z."""

  module: Generator
  truncation_psi: float
  truncation_cutoff: int | None
  single: bool

  def __call__(self, variables, key, n):
    z = jax.random.normal(key, (n, self.module.z_dim), jnp.float32)
    ws = self.module.apply(variables, z, None, self.truncation_psi, self.truncation_cutoff,
                           method=Generator.map)
    return ws[:, 0] if self.single else ws


def make_generator(variables: Any, config: Mapping[str, Any], space: str = "z",
                   truncation_psi: float = 1.0, truncation_cutoff: int | None = None,
                   noise_mode: str = "const") -> GeneratorFn:
  """A :class:`jaxlatent.generator.Generator` of ``Generator(**config)`` in space
  'z' (apply maps z, with truncation), 'w' (one w for every layer) or 'w+'
  (``[N, num_ws, w_dim]``); for 'w' / 'w+' ``sample_fn`` maps random z (truncated).

  ``variables``: ``{'params', 'buffers'}`` (e.g. from
  :func:`generator_variables_from_state_dict` of the reference's ``G_ema``).
  ``noise_mode`` must be 'const' or 'none' so images are a pure function of latents.
  Unconditional networks only (c_dim = 0).
  """
  if noise_mode not in ("const", "none"):
    raise ConfigError(f"noise_mode={noise_mode!r}: a Generator needs 'const' or 'none'")
  g = Generator(**config)
  if g.c_dim:
    raise ConfigError(f"c_dim={g.c_dim}: conditional generators need a label per image; "
                      "only unconditional ones (c_dim=0) are supported")
  common = dict(params=variables, image_shape=(g.img_resolution, g.img_resolution,
                                               g.img_channels))
  if space == "z":
    return GeneratorFn(apply_fn=_ApplyZ(g, truncation_psi, truncation_cutoff, noise_mode),
                       latent_spec=LatentSpec((g.z_dim,), "z", "normal"),
                       name="stylegan2-ada-z", **common)
  if space not in ("w", "w+"):
    raise ConfigError(f"space={space!r}: expected 'z', 'w' or 'w+'")
  sample = _SampleW(g, truncation_psi, truncation_cutoff, space == "w")
  shape = (g.w_dim,) if space == "w" else (g.num_ws, g.w_dim)
  return GeneratorFn(apply_fn=_ApplyW(g, noise_mode, space == "w"), sample_fn=sample,
                     latent_spec=LatentSpec(shape, space, "none"),
                     name=f"stylegan2-ada-{space}", **common)
