"""PyTorch reference of jaxlatent's StyleGAN2 network and train step (the benchmark baseline).

Written by us, after ``jaxlatent/models/stylegan2.py`` and ``_stylegan2_trainer`` in
``jaxlatent/training/trainers.py``, the way a PyTorch user writes them (NCHW, module
names of stylegan2-ada-pytorch), so that a step does the same work as the JAX one.

The same as the JAX side:
  * networks: equalized-lr FC / conv layers; mapping (2nd-moment norm, ``num_layers``
    FC with lr multiplier 0.01, leaky ReLU x sqrt 2, ``w_avg`` EMA); synthesis with a
    learned 4x4 constant, modulated + demodulated 3x3 convs (input scaled by the
    styles, shared conv, output scaled by the demodulation coefficients; a grouped
    conv with ``fused_modconv``), per-pixel noise, 'skip' ToRGB, up-sampling by a
    resize (``F.interpolate``, bilinear with half-pixel centres = ``jax.image.resize``,
    or nearest) before the conv, tanh output; 'resnet' discriminator with 2x2
    average-pool down-sampling, minibatch-std (same grouping) and an FC epilogue;
    widths ``min(channel_base // res, channel_max)``; no FIR filters, fp16 or clamping;
  * step: the four phases in the JAX order, G main (non-saturating loss, style mixing
    with a second mapping pass, ``w_avg`` update), G reg (path length every
    ``pl_interval`` steps on ``batch // pl_batch_shrink`` samples, decay ``pl_decay``,
    loss x ``pl_weight * pl_interval``), D main (logistic loss, fake batch rendered
    without grad), D reg (R1 every ``r1_interval`` steps, x ``r1_gamma / 2 *
    r1_interval``), then the G EMA (half-life in images, ramp-up); one Adam per
    network with lr and betas rescaled by c / (c + 1); the phase decision is the step
    counter, as ``state.step`` in JAX.  Only the network being updated needs
    parameter grads (``requires_grad_`` per phase, as stylegan2-ada does).

Different: random numbers (torch's generator, not jax.random), NCHW memory layout
(the discriminator's FC flattens (C, H, W); :func:`discriminator_from_jax` reorders
the weight), and the gradient-norm metrics the JAX step also returns are not computed
(a few reductions).  Only the benchmarks and their test import this module; torch is
an optional extra (``pip install -e .[bench]``).
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

SQRT2 = math.sqrt(2.0)


# ----------------------------------------------------------------------------- primitives


def bias_act(x: torch.Tensor, b: torch.Tensor | None, activation: str = "linear",
             gain: float = 1.0) -> torch.Tensor:
  """x + b (b broadcast on dim 1), then the activation with its gain (lrelu: x sqrt 2)."""
  if b is not None:
    x = x + (b.view(1, -1, 1, 1) if x.ndim == 4 else b)
  if activation == "lrelu":
    x = F.leaky_relu(x, 0.2) * SQRT2
  elif activation != "linear":
    raise ValueError(f"unknown activation {activation!r}")
  return x * gain if gain != 1.0 else x


def normalize_2nd_moment(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
  return x * (x.square().mean(dim=-1, keepdim=True) + eps).rsqrt()


def modulated_conv2d(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor,
                     demodulate: bool = True, fused_modconv: bool = False) -> torch.Tensor:
  """Stride-1 'same' conv of ``x [B, I, H, W]`` with weights ``[O, I, k, k]`` per-sample modulated."""
  b, i, h, w_ = x.shape
  o, _, kh, kw = weight.shape
  pad = kh // 2
  if fused_modconv:  # one grouped conv over the [B*O, I, k, k] per-sample weights
    w = weight[None] * styles[:, None, :, None, None]  # [B, O, I, k, k]
    if demodulate:
      w = w * (w.square().sum(dim=(2, 3, 4)) + 1e-8).rsqrt()[:, :, None, None, None]
    y = F.conv2d(x.reshape(1, b * i, h, w_), w.reshape(b * o, i, kh, kw), padding=pad,
                 groups=b)
    return y.reshape(b, o, h, w_)
  y = F.conv2d(x * styles[:, :, None, None], weight, padding=pad)  # [B, O, H, W]
  if demodulate:
    w = weight[None] * styles[:, None, :, None, None]
    y = y * (w.square().sum(dim=(2, 3, 4)) + 1e-8).rsqrt()[:, :, None, None]
  return y


def upsample2d(x: torch.Tensor, method: str = "bilinear") -> torch.Tensor:
  """[B, C, H, W] -> [B, C, 2H, 2W], as ``jax.image.resize`` (half-pixel centres)."""
  if method == "bilinear":
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
  return F.interpolate(x, scale_factor=2, mode="nearest")


def channels_dict(resolutions, channel_base: int, channel_max: int) -> dict[int, int]:
  return {r: max(1, min(channel_base // r, channel_max)) for r in resolutions}


def num_ws_for(img_resolution: int) -> int:
  return 2 * int(round(math.log2(img_resolution))) - 2


def mix_styles(ws: torch.Tensor, ws2: torch.Tensor, prob: float) -> torch.Tensor:
  """Layers >= a random cutoff (one per batch) take ``ws2``, with probability ``prob``."""
  num_ws = ws.shape[1]
  cutoff = int(torch.randint(1, num_ws, ()))
  if float(torch.rand(())) >= prob:
    cutoff = num_ws
  keep = (torch.arange(num_ws, device=ws.device) < cutoff)[None, :, None]
  return torch.where(keep, ws, ws2)


# ----------------------------------------------------------------------------- layers


class FullyConnectedLayer(nn.Module):
  """Equalized-lr linear layer; weight ``[out, in]`` stored N(0, 1) / lr_multiplier."""

  def __init__(self, in_features: int, out_features: int, bias: bool = True,
               activation: str = "linear", lr_multiplier: float = 1.0,
               bias_init: float = 0.0):
    super().__init__()
    self.activation, self.lr_multiplier = activation, lr_multiplier
    self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_multiplier)
    self.bias = nn.Parameter(torch.full((out_features,), float(bias_init))) if bias else None
    self.weight_gain = lr_multiplier / math.sqrt(in_features)

  def forward(self, x):
    b = self.bias * self.lr_multiplier if self.bias is not None else None
    x = F.linear(x, self.weight * self.weight_gain, b)
    return bias_act(x, None, self.activation)


class Conv2dLayer(nn.Module):
  """Equalized-lr 'same' conv; ``down=2`` average-pools 2x2 before the conv."""

  def __init__(self, in_channels: int, out_channels: int, kernel_size: int, bias: bool = True,
               activation: str = "linear", down: int = 1, gain: float = 1.0):
    super().__init__()
    self.activation, self.down, self.gain = activation, down, gain
    self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
    self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
    self.weight_gain = 1.0 / math.sqrt(in_channels * kernel_size**2)

  def forward(self, x):
    if self.down == 2:
      x = F.avg_pool2d(x, 2)
    x = F.conv2d(x, self.weight * self.weight_gain, padding=self.weight.shape[-1] // 2)
    return bias_act(x, self.bias, self.activation, self.gain)


class MappingNetwork(nn.Module):
  """z [B, z_dim] -> ws [B, num_ws, w_dim]; ``w_avg`` is a buffer (EMA of w)."""

  def __init__(self, z_dim: int, w_dim: int, num_ws: int, num_layers: int = 8,
               lr_multiplier: float = 0.01, w_avg_beta: float = 0.995):
    super().__init__()
    self.num_ws, self.w_avg_beta, self.num_layers = num_ws, w_avg_beta, num_layers
    for idx in range(num_layers):
      setattr(self, f"fc{idx}", FullyConnectedLayer(z_dim if idx == 0 else w_dim, w_dim,
                                                    activation="lrelu",
                                                    lr_multiplier=lr_multiplier))
    self.register_buffer("w_avg", torch.zeros(w_dim))

  def forward(self, z, update_emas: bool = False):
    x = normalize_2nd_moment(z)
    for idx in range(self.num_layers):
      x = getattr(self, f"fc{idx}")(x)
    if update_emas:
      with torch.no_grad():
        self.w_avg.copy_(x.detach().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))
    return x[:, None, :].expand(-1, self.num_ws, -1)


class SynthesisLayer(nn.Module):
  """Modulated + demodulated conv, per-pixel noise, bias, leaky ReLU."""

  def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int,
               kernel_size: int = 3, up: int = 1, resample: str = "bilinear",
               fused_modconv: bool = False):
    super().__init__()
    self.resolution, self.up, self.resample = resolution, up, resample
    self.fused_modconv = fused_modconv
    self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1.0)
    self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
    self.register_buffer("noise_const", torch.randn(resolution, resolution))
    self.noise_strength = nn.Parameter(torch.zeros(()))
    self.bias = nn.Parameter(torch.zeros(out_channels))

  def forward(self, x, w, noise_mode: str = "random"):
    styles = self.affine(w)
    if self.up == 2:
      x = upsample2d(x, self.resample)
    x = modulated_conv2d(x, self.weight, styles, True, self.fused_modconv)
    r = self.resolution
    if noise_mode == "random":
      x = x + torch.randn(x.shape[0], 1, r, r, dtype=x.dtype, device=x.device) * self.noise_strength
    elif noise_mode == "const":
      x = x + self.noise_const * self.noise_strength
    return bias_act(x, self.bias, "lrelu")


class ToRGB(nn.Module):
  """Modulated (not demodulated) 1x1 conv to image channels, plus bias."""

  def __init__(self, in_channels: int, out_channels: int, w_dim: int,
               fused_modconv: bool = False):
    super().__init__()
    self.fused_modconv = fused_modconv
    self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1.0)
    self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 1, 1))
    self.bias = nn.Parameter(torch.zeros(out_channels))
    self.weight_gain = 1.0 / math.sqrt(in_channels)

  def forward(self, x, w):
    styles = self.affine(w) * self.weight_gain
    x = modulated_conv2d(x, self.weight, styles, False, self.fused_modconv)
    return x + self.bias.view(1, -1, 1, 1)


class SynthesisBlock(nn.Module):
  """[const | conv0 (up 2)], conv1, ToRGB; the up-sampled image skip is summed."""

  def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int,
               img_channels: int = 1, resample: str = "bilinear", fused_modconv: bool = False):
    super().__init__()
    self.is_first, self.resample = in_channels == 0, resample
    self.num_conv = 1 if self.is_first else 2
    kw = dict(resample=resample, fused_modconv=fused_modconv)
    if self.is_first:
      self.const = nn.Parameter(torch.randn(out_channels, 4, 4))
    else:
      self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim, resolution, up=2, **kw)
    self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim, resolution, **kw)
    self.torgb = ToRGB(out_channels, img_channels, w_dim, fused_modconv)

  def forward(self, x, img, ws, noise_mode: str = "random"):
    if self.is_first:
      x = self.const[None].expand(ws.shape[0], -1, -1, -1)
      wi = 0
    else:
      x = self.conv0(x, ws[:, 0], noise_mode)
      wi = 1
    x = self.conv1(x, ws[:, wi], noise_mode)
    y = self.torgb(x, ws[:, wi + 1])
    img = y if img is None else upsample2d(img, self.resample) + y
    return x, img


class SynthesisNetwork(nn.Module):
  """ws [B, num_ws, w_dim] -> images [B, C, R, R] (before the tanh)."""

  def __init__(self, w_dim: int, img_resolution: int, img_channels: int = 1,
               channel_base: int = 32768, channel_max: int = 512, resample: str = "bilinear",
               fused_modconv: bool = False):
    super().__init__()
    self.block_resolutions = [2**i for i in range(2, int(round(math.log2(img_resolution))) + 1)]
    ch = channels_dict(self.block_resolutions, channel_base, channel_max)
    for res in self.block_resolutions:
      cin = 0 if res == 4 else ch[res // 2]
      setattr(self, f"b{res}", SynthesisBlock(cin, ch[res], w_dim, res, img_channels,
                                              resample, fused_modconv))

  def forward(self, ws, noise_mode: str = "random"):
    x = img = None
    w_idx = 0
    for res in self.block_resolutions:
      block = getattr(self, f"b{res}")
      x, img = block(x, img, ws[:, w_idx:w_idx + block.num_conv + 1], noise_mode)
      w_idx += block.num_conv
    return img


class Generator(nn.Module):
  """Mapping + synthesis: z [B, z_dim] -> images [B, C, R, R] in [-1, 1] (tanh)."""

  def __init__(self, img_resolution: int, z_dim: int = 512, w_dim: int = 512,
               img_channels: int = 1, num_mapping_layers: int = 8,
               mapping_lr_multiplier: float = 0.01, w_avg_beta: float = 0.995,
               channel_base: int = 32768, channel_max: int = 512, resample: str = "bilinear",
               fused_modconv: bool = False, output_tanh: bool = True):
    super().__init__()
    self.z_dim, self.num_ws, self.output_tanh = z_dim, num_ws_for(img_resolution), output_tanh
    self.synthesis = SynthesisNetwork(w_dim, img_resolution, img_channels, channel_base,
                                      channel_max, resample, fused_modconv)
    self.mapping = MappingNetwork(z_dim, w_dim, self.num_ws, num_mapping_layers,
                                  mapping_lr_multiplier, w_avg_beta)

  def synthesize(self, ws, noise_mode: str = "random"):
    img = self.synthesis(ws, noise_mode)
    return torch.tanh(img) if self.output_tanh else img

  def forward(self, z, update_emas: bool = False, noise_mode: str = "random"):
    return self.synthesize(self.mapping(z, update_emas), noise_mode)


class MinibatchStd(nn.Module):
  """Appends the std over groups of samples (largest divisor of B <= group_size)."""

  def __init__(self, group_size: int = 4, num_channels: int = 1):
    super().__init__()
    self.group_size, self.num_channels = group_size, num_channels

  def forward(self, x):
    n, c, h, w = x.shape
    g = max(d for d in range(1, min(self.group_size, n) + 1) if n % d == 0)
    f = self.num_channels
    y = x.reshape(g, n // g, f, c // f, h, w)
    y = y - y.mean(dim=0)
    y = (y.square().mean(dim=0) + 1e-8).sqrt()  # [n/g, F, c/F, H, W]
    y = y.mean(dim=(2, 3, 4))  # [n/g, F]
    y = y.reshape(-1, f, 1, 1).repeat(g, 1, h, w)  # [n, F, H, W]
    return torch.cat([x, y], dim=1)


class DiscriminatorBlock(nn.Module):
  """'resnet' block: (fromrgb), conv0, conv1 (down 2) + skip 1x1 (down 2), each x sqrt .5."""

  def __init__(self, tmp_channels: int, out_channels: int, img_channels: int, is_first: bool):
    super().__init__()
    self.is_first = is_first
    if is_first:
      self.fromrgb = Conv2dLayer(img_channels, tmp_channels, 1, activation="lrelu")
    self.skip = Conv2dLayer(tmp_channels, out_channels, 1, bias=False, down=2,
                            gain=math.sqrt(0.5))
    self.conv0 = Conv2dLayer(tmp_channels, tmp_channels, 3, activation="lrelu")
    self.conv1 = Conv2dLayer(tmp_channels, out_channels, 3, activation="lrelu", down=2,
                             gain=math.sqrt(0.5))

  def forward(self, x):
    if self.is_first:
      x = self.fromrgb(x)
    y = self.skip(x)
    return y + self.conv1(self.conv0(x))


class Discriminator(nn.Module):
  """images [B, C, R, R] -> logits [B]."""

  def __init__(self, img_resolution: int, img_channels: int = 1, channel_base: int = 32768,
               channel_max: int = 512, mbstd_group_size: int = 4, mbstd_num_channels: int = 1):
    super().__init__()
    k = int(round(math.log2(img_resolution)))
    self.block_resolutions = [2**i for i in range(k, 2, -1)]
    ch = channels_dict(self.block_resolutions + [4], channel_base, channel_max)
    for res in self.block_resolutions:
      setattr(self, f"b{res}", DiscriminatorBlock(ch[res], ch[res // 2], img_channels,
                                                  res == img_resolution))
    self.mbstd = MinibatchStd(mbstd_group_size, mbstd_num_channels) if mbstd_num_channels else None
    self.conv = Conv2dLayer(ch[4] + mbstd_num_channels, ch[4], 3, activation="lrelu")
    self.fc = FullyConnectedLayer(ch[4] * 16, ch[4], activation="lrelu")
    self.out = FullyConnectedLayer(ch[4], 1)

  def forward(self, img):
    x = img
    for res in self.block_resolutions:
      x = getattr(self, f"b{res}")(x)
    if self.mbstd is not None:
      x = self.mbstd(x)
    x = self.conv(x)
    return self.out(self.fc(x.flatten(1)))[:, 0]


# ----------------------------------------------------------------------------- regularisers


def r1_penalty(d: nn.Module, real: torch.Tensor) -> torch.Tensor:
  """|grad_x sum_b D(x)_b|^2 per sample, [B] (graph kept for the D update)."""
  real = real.detach().requires_grad_(True)
  (grads,) = torch.autograd.grad(d(real).sum(), real, create_graph=True)
  return grads.square().flatten(1).sum(dim=1)


def path_lengths(synthesize, ws: torch.Tensor, pl_noise: torch.Tensor) -> torch.Tensor:
  """|J_w^T y| per sample [B]: norm over w_dim, mean over the num_ws layers, sqrt."""
  (grads,) = torch.autograd.grad((synthesize(ws) * pl_noise).sum(), ws, create_graph=True)
  return grads.square().sum(dim=2).mean(dim=1).sqrt()


# ----------------------------------------------------------------------------- train step


def _lazy_ratio(interval: int, on: bool) -> float:
  return interval / (interval + 1.0) if on and interval > 0 else 1.0


def _adam(params, lr: float, b1: float, b2: float, eps: float, ratio: float):
  return torch.optim.Adam(params, lr * ratio, betas=(b1**ratio, b2**ratio), eps=eps)


class StyleGAN2Step:
  """One jaxlatent StyleGAN2 train step per call; ``self.step`` decides the reg phases.

  ``step % pl_interval == 0``: G reg (path length); ``step % r1_interval == 0``: D reg
  (R1), as ``state.step`` does in the JAX trainer.  ``self.last_phases`` names the
  phases the last call ran.  ``real``: a fixed batch, uniform in [-1, 1].  ``device``:
  where the networks, the batch and the noise live ('cpu' or 'cuda').
  """

  def __init__(self, image_size: int, batch: int, *, z_dim: int = 512, w_dim: int = 512,
               num_mapping_layers: int = 8, mapping_lr_multiplier: float = 0.01,
               w_avg_beta: float = 0.995, channel_base: int = 32768, channel_max: int = 512,
               resample: str = "bilinear", fused_modconv: bool = False,
               output_tanh: bool = True, mbstd_group_size: int = 4,
               mbstd_num_channels: int = 1, r1_gamma: float = 1.0, r1_interval: int = 16,
               pl_weight: float = 2.0, pl_interval: int = 4, pl_decay: float = 0.01,
               pl_batch_shrink: int = 2, style_mixing_prob: float = 0.9,
               ema_half_life_images: float = 10000.0, ema_rampup: float | None = 0.05,
               lr: float = 2.5e-3, b1: float = 0.0, b2: float = 0.99, eps: float = 1e-8,
               seed: int = 0, real: torch.Tensor | None = None, device: str = "cpu"):
    torch.manual_seed(seed)
    self.device = dev = torch.device(device)
    self.g = Generator(image_size, z_dim, w_dim, 1, num_mapping_layers, mapping_lr_multiplier,
                       w_avg_beta, channel_base, channel_max, resample, fused_modconv,
                       output_tanh).to(dev)
    self.d = Discriminator(image_size, 1, channel_base, channel_max, mbstd_group_size,
                           mbstd_num_channels).to(dev)
    self.g_ema = [p.detach().clone() for p in self.g.parameters()]
    self.size, self.batch, self.z_dim = image_size, batch, z_dim
    self.r1_gamma, self.r1_interval = r1_gamma, r1_interval
    self.pl_weight, self.pl_interval = pl_weight, pl_interval
    self.pl_decay, self.pl_batch_shrink = pl_decay, pl_batch_shrink
    self.mixing_prob = style_mixing_prob
    self.ema_images, self.ema_rampup = ema_half_life_images, ema_rampup
    self.do_r1 = r1_gamma > 0 and r1_interval > 0
    self.do_pl = pl_weight > 0 and pl_interval > 0
    self.opt_g = _adam(self.g.parameters(), lr, b1, b2, eps, _lazy_ratio(pl_interval, self.do_pl))
    self.opt_d = _adam(self.d.parameters(), lr, b1, b2, eps, _lazy_ratio(r1_interval, self.do_r1))
    self.real = (real.to(dev) if real is not None
                 else torch.rand(batch, 1, image_size, image_size, device=dev) * 2 - 1)
    self.step = 0
    self.pl_mean = torch.zeros((), device=dev)
    self.last_phases: tuple[str, ...] = ()

  @classmethod
  def from_config(cls, config: Any, batch: int, **kw) -> "StyleGAN2Step":
    """From a jaxlatent config (``image_size``, ``model``, ``optim``), with its defaults."""
    m, o = config.model, config.get("optim", None)
    o = {} if o is None else o
    args = {k: m[k] for k in (
        "num_mapping_layers", "mapping_lr_multiplier", "w_avg_beta", "channel_base",
        "channel_max", "resample", "fused_modconv", "output_tanh", "mbstd_group_size",
        "mbstd_num_channels", "r1_gamma", "r1_interval", "pl_weight", "pl_interval",
        "pl_decay", "pl_batch_shrink", "style_mixing_prob", "ema_rampup") if k in m}
    if "latent_dim" in m:
      args["z_dim"] = m.latent_dim
    if "w_dim" in m:
      args["w_dim"] = m.w_dim
    ema_kimg = m.get("ema_kimg", None)
    args["ema_half_life_images"] = (float(ema_kimg) * 1000 if ema_kimg is not None
                                    else float(m.get("ema_half_life_images", 10000)))
    for k in ("lr", "b1", "b2", "eps"):
      if k in o and o[k] is not None:
        args[k] = float(o[k])
    if float(o.get("grad_clip", 0.0) or 0.0) > 0:
      raise ValueError("optim.grad_clip > 0 is not mirrored by the PyTorch reference")
    args.update(kw)
    return cls(int(config.image_size), batch, **args)

  def _map(self, z: torch.Tensor, update_emas: bool) -> torch.Tensor:
    """z -> ws with style mixing (a second mapping pass), as the JAX ``run_mapping``."""
    ws = self.g.mapping(z, update_emas)
    if self.mixing_prob > 0:
      ws = mix_styles(ws, self.g.mapping(torch.randn_like(z)), self.mixing_prob)
    return ws

  def _ema_beta(self) -> float:
    h = self.ema_images
    if self.ema_rampup:
      h = min(h, self.step * self.batch * self.ema_rampup)
    return 0.5 ** (self.batch / max(h, 1e-8))

  def __call__(self) -> float:
    b, phases = self.batch, ["Gmain"]
    # G main: softplus(-D(G(z))); only G's parameters take grads.
    self.g.requires_grad_(True)
    self.d.requires_grad_(False)
    self.opt_g.zero_grad(set_to_none=True)
    dev = self.device
    ws = self._map(torch.randn(b, self.z_dim, device=dev), update_emas=True)
    g_loss = F.softplus(-self.d(self.g.synthesize(ws))).mean()
    g_loss.backward()
    self.opt_g.step()

    # G reg: path length every pl_interval steps on batch // pl_batch_shrink samples.
    if self.do_pl and self.step % self.pl_interval == 0:
      phases.append("Greg")
      self.opt_g.zero_grad(set_to_none=True)
      pl_b = max(b // self.pl_batch_shrink, 1)
      pl_noise = torch.randn(pl_b, 1, self.size, self.size, device=dev) / self.size
      ws = self._map(torch.randn(pl_b, self.z_dim, device=dev), update_emas=False)
      lengths = path_lengths(self.g.synthesize, ws, pl_noise)
      with torch.no_grad():
        self.pl_mean = self.pl_mean + self.pl_decay * (lengths.mean() - self.pl_mean)
      penalty = (lengths - self.pl_mean).square().mean()
      (penalty * self.pl_weight * self.pl_interval).backward()
      self.opt_g.step()

    # D main: softplus(D(G(z))) + softplus(-D(x)); the fake batch is rendered without grad.
    self.g.requires_grad_(False)
    self.d.requires_grad_(True)
    with torch.no_grad():
      fake = self.g.synthesize(self._map(torch.randn(b, self.z_dim, device=dev),
                                         update_emas=False))
    self.opt_d.zero_grad(set_to_none=True)
    d_loss = F.softplus(-self.d(self.real)).mean() + F.softplus(self.d(fake)).mean()
    d_loss.backward()
    self.opt_d.step()

    # D reg: R1 every r1_interval steps.
    if self.do_r1 and self.step % self.r1_interval == 0:
      phases.append("Dreg")
      self.opt_d.zero_grad(set_to_none=True)
      penalty = r1_penalty(self.d, self.real).mean()
      (penalty * (self.r1_gamma / 2) * self.r1_interval).backward()
      self.opt_d.step()

    # G EMA: ema <- p + beta (ema - p), half-life in images with ramp-up.
    beta = self._ema_beta()
    with torch.no_grad():
      for e, p in zip(self.g_ema, self.g.parameters()):
        e.lerp_(p, 1.0 - beta)
    self.step += 1
    self.last_phases = tuple(phases)
    return float(g_loss.detach()) + float(d_loss.detach())


# ----------------------------------------------------------------------------- JAX params


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, np.ndarray]:
  out = {}
  for k, v in tree.items():
    name = f"{prefix}.{k}" if prefix else str(k)
    if isinstance(v, Mapping):
      out.update(_flatten(v, name))
    else:
      out[name] = np.asarray(v)
  return out


def _to_torch_layout(name: str, a: np.ndarray, nhwc_flatten: dict[str, tuple[int, int]]
                     ) -> np.ndarray:
  """A JAX leaf in the torch layout: HWIO -> OIHW, [in, out] -> [out, in], HWC -> CHW."""
  leaf = name.rsplit(".", 1)[-1]
  if leaf == "weight" and a.ndim == 4:
    return a.transpose(3, 2, 0, 1)
  if leaf == "weight" and a.ndim == 2:
    module = name.rsplit(".", 1)[0]
    if module in nhwc_flatten:  # input flattened as (H, W, C) in JAX, (C, H, W) here
      h, w = nhwc_flatten[module]
      a = a.reshape(h, w, -1, a.shape[-1]).transpose(2, 0, 1, 3).reshape(a.shape)
    return a.T
  if leaf == "const":
    return a.transpose(2, 0, 1)
  return a


def _load(module: nn.Module, flat: dict[str, np.ndarray],
          nhwc_flatten: dict[str, tuple[int, int]] | None = None) -> None:
  """Copies ``flat`` (JAX names joined by '.') into ``module``; names and shapes must match."""
  targets = {**dict(module.named_parameters()), **dict(module.named_buffers())}
  missing, extra = sorted(set(targets) - set(flat)), sorted(set(flat) - set(targets))
  if missing or extra:
    raise ValueError(f"parameter names differ: only in torch {missing}, only in JAX {extra}")
  with torch.no_grad():
    for name, a in flat.items():
      a = _to_torch_layout(name, a, nhwc_flatten or {})
      t = targets[name]
      if tuple(a.shape) != tuple(t.shape):
        raise ValueError(f"{name}: JAX shape {a.shape} -> {tuple(t.shape)} in torch")
      t.copy_(torch.from_numpy(np.array(a, dtype=np.float32)).to(t.dtype))  # a copy, 0-d kept


def generator_from_jax(g: Generator, variables: Mapping[str, Any]) -> None:
  """Loads JAX generator variables ``{'params', 'stats', 'noise_const'}`` into ``g``."""
  flat = _flatten(variables["params"])
  for coll in ("stats", "noise_const"):  # buffers: 'mapping.w_avg', '<layer>.noise_const'
    flat.update(_flatten(variables.get(coll, {})))
  _load(g, flat)


def discriminator_from_jax(d: Discriminator, params: Mapping[str, Any]) -> None:
  """Loads JAX discriminator ``params`` into ``d`` (the FC after the 4x4 conv reordered)."""
  _load(d, _flatten(params), {"fc": (4, 4)})


def count_params(module: nn.Module) -> int:
  return sum(p.numel() for p in module.parameters())


__all__ = [
    "Generator", "Discriminator", "StyleGAN2Step", "r1_penalty", "path_lengths",
    "generator_from_jax", "discriminator_from_jax", "count_params", "upsample2d",
]
