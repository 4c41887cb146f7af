"""A PyTorch port of the stylegan2-ada-pytorch networks, for equivalence tests.

Written by us from reading NVlabs stylegan2-ada-pytorch ``training/networks.py`` and
``torch_utils/ops``: plain torch ops (the reference's slow paths, no custom CUDA),
float32 only (the reference with ``force_fp32=True``). Module attributes, parameters
and buffers carry the reference's names, so ``state_dict()`` has the keys and shapes
of an official ``G`` / ``D`` (e.g. ``mapping.fc0.weight``, ``synthesis.b4.const``,
``synthesis.b8.conv0.resample_filter``, ``b4.out.weight``). Layout NCHW.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

DEF_GAIN = {"linear": 1.0, "relu": math.sqrt(2), "lrelu": math.sqrt(2)}
DEF_ALPHA = {"linear": 0.0, "relu": 0.0, "lrelu": 0.2}


# ----------------------------------------------------------------------------- ops


def setup_filter(f, normalize=True):
  """``[taps]`` -> normalised ``[taps, taps]`` outer product (filters of < 8 taps)."""
  f = torch.as_tensor(f, dtype=torch.float32)
  if f.ndim == 1 and f.numel() < 8:
    f = torch.outer(f, f)
  if normalize:
    f = f / f.sum()
  return f


def _pad4(p):
  if isinstance(p, int):
    return [p, p, p, p]
  return [p[0], p[0], p[1], p[1]] if len(p) == 2 else list(p)


def upfirdn2d(x, f, up=1, down=1, padding=0, flip_filter=False, gain=1.0):
  """Zero-insert by ``up``, pad / crop (x0, x1, y0, y1), FIR filter, keep every ``down``."""
  if f is None:
    f = torch.ones([1, 1])
  n, c, h, w = x.shape
  px0, px1, py0, py1 = _pad4(padding)
  x = x.reshape(n, c, h, 1, w, 1)
  x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1]).reshape(n, c, h * up, w * up)
  x = F.pad(x, [max(px0, 0), max(px1, 0), max(py0, 0), max(py1, 0)])
  x = x[:, :, max(-py0, 0):x.shape[2] - max(-py1, 0), max(-px0, 0):x.shape[3] - max(-px1, 0)]
  f = f * (gain ** (f.ndim / 2))
  if not flip_filter:
    f = f.flip(list(range(f.ndim)))
  k = f[None, None].repeat([c, 1, 1, 1])
  x = F.conv2d(x, k, groups=c)
  return x[:, :, ::down, ::down]


def upsample2d(x, f, up=2):
  fw = f.shape[-1]
  p = [(fw + up - 1) // 2, (fw - up) // 2] * 2
  return upfirdn2d(x, f, up=up, padding=[p[0], p[1], p[0], p[1]], gain=up * up)


def downsample2d(x, f, down=2):
  fw = f.shape[-1]
  p0, p1 = (fw - down + 1) // 2, (fw - down) // 2
  return upfirdn2d(x, f, down=down, padding=[p0, p1, p0, p1])


def bias_act(x, b=None, act="linear", gain=None, clamp=None):
  if b is not None:
    x = x + b.reshape([1, -1] + [1] * (x.ndim - 2))
  if act == "lrelu":
    x = F.leaky_relu(x, DEF_ALPHA[act])
  elif act == "relu":
    x = F.relu(x)
  gain = DEF_GAIN[act] if gain is None else gain
  if gain != 1:
    x = x * gain
  if clamp is not None:
    x = x.clamp(-clamp, clamp)
  return x


def conv2d_resample(x, w, f=None, up=1, down=1, padding=0, groups=1, flip_weight=True):
  """Conv (``w [O, I/groups, kh, kw]``) with FIR up / down-sampling, the reference's paths."""
  out_ch, in_per_group, kh, kw = w.shape
  fw = 1 if f is None else f.shape[-1]
  fh = 1 if f is None else f.shape[0]
  px0, px1, py0, py1 = _pad4(padding)
  if up > 1:
    px0 += (fw + up - 1) // 2
    px1 += (fw - up) // 2
    py0 += (fh + up - 1) // 2
    py1 += (fh - up) // 2
  if down > 1:
    px0 += (fw - down + 1) // 2
    px1 += (fw - down) // 2
    py0 += (fh - down + 1) // 2
    py1 += (fh - down) // 2

  def conv(x, w, stride=1, pad=0, transpose=False, flip=True):
    if not flip:
      w = w.flip([2, 3])
    if transpose:
      return F.conv_transpose2d(x, w, stride=stride, padding=pad, groups=groups)
    return F.conv2d(x, w, stride=stride, padding=pad, groups=groups)

  if kw == 1 and kh == 1 and down > 1 and up == 1:
    x = upfirdn2d(x, f, down=down, padding=[px0, px1, py0, py1])
    return conv(x, w, flip=flip_weight)
  if kw == 1 and kh == 1 and up > 1 and down == 1:
    x = conv(x, w, flip=flip_weight)
    return upfirdn2d(x, f, up=up, padding=[px0, px1, py0, py1], gain=up ** 2)
  if down > 1 and up == 1:
    x = upfirdn2d(x, f, padding=[px0, px1, py0, py1])
    return conv(x, w, stride=down, flip=flip_weight)
  if up > 1:
    # conv_transpose2d wants [I, O/groups, kh, kw] per group.
    w = w.reshape(groups, out_ch // groups, in_per_group, kh, kw).transpose(1, 2)
    w = w.reshape(groups * in_per_group, out_ch // groups, kh, kw)
    px0 -= kw - 1
    px1 -= kw - up
    py0 -= kh - 1
    py1 -= kh - up
    pxt = max(min(-px0, -px1), 0)
    pyt = max(min(-py0, -py1), 0)
    x = conv(x, w, stride=up, pad=[pyt, pxt], transpose=True, flip=not flip_weight)
    x = upfirdn2d(x, f, padding=[px0 + pxt, px1 + pxt, py0 + pyt, py1 + pyt], gain=up ** 2)
    if down > 1:
      x = upfirdn2d(x, f, down=down)
    return x
  if px0 == px1 and py0 == py1 and px0 >= 0 and py0 >= 0:
    return conv(x, w, pad=[py0, px0], flip=flip_weight)
  x = upfirdn2d(x, None, padding=[px0, px1, py0, py1])
  return conv(x, w, flip=flip_weight)


def normalize_2nd_moment(x, dim=1, eps=1e-8):
  return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


def modulated_conv2d(x, weight, styles, noise=None, up=1, down=1, padding=0,
                     resample_filter=None, demodulate=True, flip_weight=True, fused_modconv=True):
  n = x.shape[0]
  out_ch, in_ch, kh, kw = weight.shape
  w = weight[None] * styles.reshape(n, 1, -1, 1, 1)  # [N, O, I, kh, kw]
  dcoefs = (w.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt() if demodulate else None  # [N, O]
  if not fused_modconv:
    x = x * styles.reshape(n, -1, 1, 1)
    x = conv2d_resample(x, weight, resample_filter, up, down, padding, flip_weight=flip_weight)
    if demodulate:
      x = x * dcoefs.reshape(n, -1, 1, 1)
    return x if noise is None else x + noise
  if demodulate:
    w = w * dcoefs.reshape(n, -1, 1, 1, 1)
  x = x.reshape(1, -1, *x.shape[2:])
  x = conv2d_resample(x, w.reshape(-1, in_ch, kh, kw), resample_filter, up, down, padding,
                      groups=n, flip_weight=flip_weight)
  x = x.reshape(n, -1, *x.shape[2:])
  return x if noise is None else x + noise


# ----------------------------------------------------------------------------- modules


class FullyConnectedLayer(torch.nn.Module):

  def __init__(self, in_features, out_features, bias=True, activation="linear",
               lr_multiplier=1.0, bias_init=0.0):
    super().__init__()
    self.activation = activation
    self.weight = torch.nn.Parameter(torch.randn([out_features, in_features]) / lr_multiplier)
    self.bias = torch.nn.Parameter(torch.full([out_features], float(bias_init))) if bias else None
    self.weight_gain = lr_multiplier / math.sqrt(in_features)
    self.bias_gain = lr_multiplier

  def forward(self, x):
    x = x @ (self.weight * self.weight_gain).t()
    b = None if self.bias is None else self.bias * self.bias_gain
    return bias_act(x, b, act=self.activation)


class Conv2dLayer(torch.nn.Module):

  def __init__(self, in_channels, out_channels, kernel_size, bias=True, activation="linear",
               up=1, down=1, resample_filter=(1, 3, 3, 1), conv_clamp=None):
    super().__init__()
    self.activation, self.up, self.down, self.conv_clamp = activation, up, down, conv_clamp
    self.register_buffer("resample_filter", setup_filter(resample_filter))
    self.padding = kernel_size // 2
    self.weight_gain = 1 / math.sqrt(in_channels * kernel_size ** 2)
    self.weight = torch.nn.Parameter(
        torch.randn([out_channels, in_channels, kernel_size, kernel_size]))
    self.bias = torch.nn.Parameter(torch.zeros([out_channels])) if bias else None

  def forward(self, x, gain=1.0):
    x = conv2d_resample(x, self.weight * self.weight_gain, self.resample_filter, self.up,
                        self.down, self.padding, flip_weight=self.up == 1)
    clamp = None if self.conv_clamp is None else self.conv_clamp * gain
    return bias_act(x, self.bias, self.activation, DEF_GAIN[self.activation] * gain, clamp)


class MappingNetwork(torch.nn.Module):

  def __init__(self, z_dim, c_dim, w_dim, num_ws, num_layers=8, embed_features=None,
               layer_features=None, activation="lrelu", lr_multiplier=0.01, w_avg_beta=0.995):
    super().__init__()
    self.z_dim, self.c_dim, self.w_dim, self.num_ws = z_dim, c_dim, w_dim, num_ws
    self.num_layers, self.w_avg_beta = num_layers, w_avg_beta
    embed_features = w_dim if embed_features is None else embed_features
    if c_dim == 0:
      embed_features = 0
    layer_features = w_dim if layer_features is None else layer_features
    feats = [z_dim + embed_features] + [layer_features] * (num_layers - 1) + [w_dim]
    if c_dim > 0:
      self.embed = FullyConnectedLayer(c_dim, embed_features)
    for i in range(num_layers):
      setattr(self, f"fc{i}", FullyConnectedLayer(feats[i], feats[i + 1], activation=activation,
                                                  lr_multiplier=lr_multiplier))
    if num_ws is not None and w_avg_beta is not None:
      self.register_buffer("w_avg", torch.zeros([w_dim]))

  def forward(self, z, c, truncation_psi=1, truncation_cutoff=None):
    x = None
    if self.z_dim > 0:
      x = normalize_2nd_moment(z)
    if self.c_dim > 0:
      y = normalize_2nd_moment(self.embed(c))
      x = y if x is None else torch.cat([x, y], dim=1)
    for i in range(self.num_layers):
      x = getattr(self, f"fc{i}")(x)
    if self.w_avg_beta is not None and self.training:
      self.w_avg.copy_(x.detach().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))
    if self.num_ws is not None:
      x = x.unsqueeze(1).repeat([1, self.num_ws, 1])
    if truncation_psi != 1:
      if self.num_ws is None or truncation_cutoff is None:
        x = self.w_avg.lerp(x, truncation_psi)
      else:
        x = x.clone()
        x[:, :truncation_cutoff] = self.w_avg.lerp(x[:, :truncation_cutoff], truncation_psi)
    return x


class SynthesisLayer(torch.nn.Module):

  def __init__(self, in_channels, out_channels, w_dim, resolution, kernel_size=3, up=1,
               use_noise=True, activation="lrelu", resample_filter=(1, 3, 3, 1), conv_clamp=None):
    super().__init__()
    self.resolution, self.up, self.use_noise = resolution, up, use_noise
    self.activation, self.conv_clamp = activation, conv_clamp
    self.register_buffer("resample_filter", setup_filter(resample_filter))
    self.padding = kernel_size // 2
    self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
    self.weight = torch.nn.Parameter(
        torch.randn([out_channels, in_channels, kernel_size, kernel_size]))
    if use_noise:
      self.register_buffer("noise_const", torch.randn([resolution, resolution]))
      self.noise_strength = torch.nn.Parameter(torch.zeros([]))
    self.bias = torch.nn.Parameter(torch.zeros([out_channels]))

  def forward(self, x, w, noise_mode="random", fused_modconv=True, gain=1.0):
    styles = self.affine(w)
    noise = None
    if self.use_noise and noise_mode == "random":
      noise = torch.randn([x.shape[0], 1, self.resolution, self.resolution]) * self.noise_strength
    if self.use_noise and noise_mode == "const":
      noise = self.noise_const * self.noise_strength
    x = modulated_conv2d(x, self.weight, styles, noise, up=self.up, padding=self.padding,
                         resample_filter=self.resample_filter, flip_weight=self.up == 1,
                         fused_modconv=fused_modconv)
    clamp = None if self.conv_clamp is None else self.conv_clamp * gain
    return bias_act(x, self.bias, self.activation, DEF_GAIN[self.activation] * gain, clamp)


class ToRGBLayer(torch.nn.Module):

  def __init__(self, in_channels, out_channels, w_dim, kernel_size=1, conv_clamp=None):
    super().__init__()
    self.conv_clamp = conv_clamp
    self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
    self.weight = torch.nn.Parameter(
        torch.randn([out_channels, in_channels, kernel_size, kernel_size]))
    self.bias = torch.nn.Parameter(torch.zeros([out_channels]))
    self.weight_gain = 1 / math.sqrt(in_channels * kernel_size ** 2)

  def forward(self, x, w, fused_modconv=True):
    styles = self.affine(w) * self.weight_gain
    x = modulated_conv2d(x, self.weight, styles, demodulate=False, fused_modconv=fused_modconv)
    return bias_act(x, self.bias, clamp=self.conv_clamp)


class SynthesisBlock(torch.nn.Module):

  def __init__(self, in_channels, out_channels, w_dim, resolution, img_channels, is_last,
               architecture="skip", resample_filter=(1, 3, 3, 1), conv_clamp=None, **layer_kwargs):
    super().__init__()
    self.in_channels, self.resolution, self.is_last = in_channels, resolution, is_last
    self.architecture = architecture
    self.register_buffer("resample_filter", setup_filter(resample_filter))
    self.num_conv = self.num_torgb = 0
    if in_channels == 0:
      self.const = torch.nn.Parameter(torch.randn([out_channels, resolution, resolution]))
    else:
      self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim, resolution, up=2,
                                  resample_filter=resample_filter, conv_clamp=conv_clamp,
                                  **layer_kwargs)
      self.num_conv += 1
    self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim, resolution,
                                conv_clamp=conv_clamp, **layer_kwargs)
    self.num_conv += 1
    if is_last or architecture == "skip":
      self.torgb = ToRGBLayer(out_channels, img_channels, w_dim, conv_clamp=conv_clamp)
      self.num_torgb += 1
    if in_channels != 0 and architecture == "resnet":
      self.skip = Conv2dLayer(in_channels, out_channels, kernel_size=1, bias=False, up=2,
                              resample_filter=resample_filter)

  def forward(self, x, img, ws, fused_modconv=None, **layer_kwargs):
    if fused_modconv is None:
      fused_modconv = not self.training
    w_iter = iter(ws.unbind(dim=1))
    if self.in_channels == 0:
      x = self.const.unsqueeze(0).repeat([ws.shape[0], 1, 1, 1])
      x = self.conv1(x, next(w_iter), fused_modconv=fused_modconv, **layer_kwargs)
    elif self.architecture == "resnet":
      y = self.skip(x, gain=math.sqrt(0.5))
      x = self.conv0(x, next(w_iter), fused_modconv=fused_modconv, **layer_kwargs)
      x = self.conv1(x, next(w_iter), fused_modconv=fused_modconv, gain=math.sqrt(0.5),
                     **layer_kwargs)
      x = y + x
    else:
      x = self.conv0(x, next(w_iter), fused_modconv=fused_modconv, **layer_kwargs)
      x = self.conv1(x, next(w_iter), fused_modconv=fused_modconv, **layer_kwargs)
    if img is not None:
      img = upsample2d(img, self.resample_filter)
    if self.is_last or self.architecture == "skip":
      y = self.torgb(x, next(w_iter), fused_modconv=fused_modconv)
      img = y if img is None else img + y
    return x, img


class SynthesisNetwork(torch.nn.Module):

  def __init__(self, w_dim, img_resolution, img_channels, channel_base=32768, channel_max=512,
               num_fp16_res=0, **block_kwargs):
    super().__init__()
    del num_fp16_res  # float32 throughout
    self.w_dim = w_dim
    log2 = int(np.log2(img_resolution))
    self.block_resolutions = [2 ** i for i in range(2, log2 + 1)]
    ch = {r: min(channel_base // r, channel_max) for r in self.block_resolutions}
    self.num_ws = 0
    for res in self.block_resolutions:
      is_last = res == img_resolution
      block = SynthesisBlock(ch[res // 2] if res > 4 else 0, ch[res], w_dim, res, img_channels,
                             is_last, **block_kwargs)
      self.num_ws += block.num_conv + (block.num_torgb if is_last else 0)
      setattr(self, f"b{res}", block)

  def forward(self, ws, **block_kwargs):
    x = img = None
    w_idx = 0
    for res in self.block_resolutions:
      block = getattr(self, f"b{res}")
      cur = ws.narrow(1, w_idx, block.num_conv + block.num_torgb)
      w_idx += block.num_conv
      x, img = block(x, img, cur, **block_kwargs)
    return img


class Generator(torch.nn.Module):

  def __init__(self, z_dim, c_dim, w_dim, img_resolution, img_channels, mapping_kwargs={},
               synthesis_kwargs={}):
    super().__init__()
    self.z_dim, self.c_dim, self.w_dim = z_dim, c_dim, w_dim
    self.synthesis = SynthesisNetwork(w_dim, img_resolution, img_channels, **synthesis_kwargs)
    self.num_ws = self.synthesis.num_ws
    self.mapping = MappingNetwork(z_dim, c_dim, w_dim, self.num_ws, **mapping_kwargs)

  def forward(self, z, c, truncation_psi=1, truncation_cutoff=None, **synthesis_kwargs):
    ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)
    return self.synthesis(ws, **synthesis_kwargs)


class DiscriminatorBlock(torch.nn.Module):

  def __init__(self, in_channels, tmp_channels, out_channels, resolution, img_channels,
               architecture="resnet", activation="lrelu", resample_filter=(1, 3, 3, 1),
               conv_clamp=None):
    super().__init__()
    self.in_channels, self.architecture = in_channels, architecture
    self.register_buffer("resample_filter", setup_filter(resample_filter))
    if in_channels == 0 or architecture == "skip":
      self.fromrgb = Conv2dLayer(img_channels, tmp_channels, 1, activation=activation,
                                 conv_clamp=conv_clamp)
    self.conv0 = Conv2dLayer(tmp_channels, tmp_channels, 3, activation=activation,
                             conv_clamp=conv_clamp)
    self.conv1 = Conv2dLayer(tmp_channels, out_channels, 3, activation=activation, down=2,
                             resample_filter=resample_filter, conv_clamp=conv_clamp)
    if architecture == "resnet":
      self.skip = Conv2dLayer(tmp_channels, out_channels, 1, bias=False, down=2,
                              resample_filter=resample_filter)

  def forward(self, x, img):
    if self.in_channels == 0 or self.architecture == "skip":
      y = self.fromrgb(img)
      x = y if x is None else x + y
      img = downsample2d(img, self.resample_filter) if self.architecture == "skip" else None
    if self.architecture == "resnet":
      y = self.skip(x, gain=math.sqrt(0.5))
      x = self.conv0(x)
      x = self.conv1(x, gain=math.sqrt(0.5))
      x = y + x
    else:
      x = self.conv1(self.conv0(x))
    return x, img


class MinibatchStdLayer(torch.nn.Module):

  def __init__(self, group_size, num_channels=1):
    super().__init__()
    self.group_size, self.num_channels = group_size, num_channels

  def forward(self, x):
    n, c, h, w = x.shape
    g = min(self.group_size, n) if self.group_size is not None else n
    nf = self.num_channels
    y = x.reshape(g, -1, nf, c // nf, h, w)
    y = y - y.mean(dim=0)
    y = (y.square().mean(dim=0) + 1e-8).sqrt()
    y = y.mean(dim=[2, 3, 4]).reshape(-1, nf, 1, 1).repeat(g, 1, h, w)
    return torch.cat([x, y], dim=1)


class DiscriminatorEpilogue(torch.nn.Module):

  def __init__(self, in_channels, cmap_dim, resolution, img_channels, architecture="resnet",
               mbstd_group_size=4, mbstd_num_channels=1, activation="lrelu", conv_clamp=None):
    super().__init__()
    self.cmap_dim, self.architecture = cmap_dim, architecture
    if architecture == "skip":
      self.fromrgb = Conv2dLayer(img_channels, in_channels, 1, activation=activation)
    self.mbstd = (MinibatchStdLayer(mbstd_group_size, mbstd_num_channels)
                  if mbstd_num_channels > 0 else None)
    self.conv = Conv2dLayer(in_channels + mbstd_num_channels, in_channels, 3,
                            activation=activation, conv_clamp=conv_clamp)
    self.fc = FullyConnectedLayer(in_channels * resolution ** 2, in_channels, activation=activation)
    self.out = FullyConnectedLayer(in_channels, 1 if cmap_dim == 0 else cmap_dim)

  def forward(self, x, img, cmap):
    if self.architecture == "skip":
      x = x + self.fromrgb(img)
    if self.mbstd is not None:
      x = self.mbstd(x)
    x = self.out(self.fc(self.conv(x).flatten(1)))
    if self.cmap_dim > 0:
      x = (x * cmap).sum(dim=1, keepdim=True) * (1 / math.sqrt(self.cmap_dim))
    return x


class Discriminator(torch.nn.Module):

  def __init__(self, c_dim, img_resolution, img_channels, architecture="resnet",
               channel_base=32768, channel_max=512, num_fp16_res=0, conv_clamp=None,
               cmap_dim=None, block_kwargs={}, mapping_kwargs={}, epilogue_kwargs={}):
    super().__init__()
    del num_fp16_res
    self.c_dim = c_dim
    log2 = int(np.log2(img_resolution))
    self.block_resolutions = [2 ** i for i in range(log2, 2, -1)]
    ch = {r: min(channel_base // r, channel_max) for r in self.block_resolutions + [4]}
    if cmap_dim is None:
      cmap_dim = ch[4]
    if c_dim == 0:
      cmap_dim = 0
    common = dict(img_channels=img_channels, architecture=architecture, conv_clamp=conv_clamp)
    for res in self.block_resolutions:
      setattr(self, f"b{res}", DiscriminatorBlock(
          ch[res] if res < img_resolution else 0, ch[res], ch[res // 2], res,
          **block_kwargs, **common))
    if c_dim > 0:
      self.mapping = MappingNetwork(0, c_dim, cmap_dim, None, w_avg_beta=None, **mapping_kwargs)
    self.b4 = DiscriminatorEpilogue(ch[4], cmap_dim, 4, **epilogue_kwargs, **common)

  def forward(self, img, c):
    x = None
    for res in self.block_resolutions:
      x, img = getattr(self, f"b{res}")(x, img)
    cmap = self.mapping(None, c) if self.c_dim > 0 else None
    return self.b4(x, img, cmap)
