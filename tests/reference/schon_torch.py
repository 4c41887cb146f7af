"""A PyTorch port of Schön et al.'s DCGAN and VAE (julschoen/Latent-Space-Exploration-CT).

Written from reading ``Models/DCGAN.py``, ``Models/VAE.py`` and ``Training/TrainGAN.py``:
the same module structure and state_dict names (``main.<i>`` Sequentials for the GAN;
``conv1`` ... ``conv7``, ``BN1``/``BN2`` for the VAE), generalised from their fixed
128x128 to any power-of-two size so the tests can use small networks.  At 128 px with
``ngf = ndf = 128`` and ``ch = 64`` it is the reference network.
"""

from __future__ import annotations

import math

import torch
from torch import nn
import torch.nn.functional as F


def dcgan_weights_init(m: nn.Module) -> None:
  """The reference's ``weights_init``."""
  name = m.__class__.__name__
  if name.find("Conv") != -1:
    nn.init.normal_(m.weight.data, 0.0, 0.02)
  elif name.find("BatchNorm") != -1:
    nn.init.normal_(m.weight.data, 1.0, 0.02)
    nn.init.constant_(m.bias.data, 0)


class Generator(nn.Module):
  """z ``[B, nz, 1, 1]`` -> ``[B, 1, S, S]``; ``c4`` channels at 4x4 (16 ngf), halving."""

  def __init__(self, image_size: int = 128, nz: int = 32, c4: int = 2048):
    super().__init__()
    layers = [nn.ConvTranspose2d(nz, c4, 4, 1, 0, bias=False), nn.BatchNorm2d(c4), nn.ReLU(True)]
    c, res = c4, 4
    while res < image_size // 2:
      res *= 2
      layers += [nn.ConvTranspose2d(c, c // 2, 4, 2, 1, bias=False), nn.BatchNorm2d(c // 2),
                 nn.ReLU(True)]
      c //= 2
    layers += [nn.ConvTranspose2d(c, 1, 4, 2, 1, bias=False), nn.Tanh()]
    self.main = nn.Sequential(*layers)

  def forward(self, z):
    return self.main(z)


class Discriminator(nn.Module):
  """``[B, 1, S, S]`` -> logits ``[B, 1, 1, 1]``; ``c4`` channels at 4x4 (16 ndf).

  ``noise``: the instance noise tensor (standard normal, the input's shape) that the
  reference draws with ``torch.randn`` inside ``forward``; given here so a test can
  hand both implementations the same draw.
  """

  def __init__(self, image_size: int = 128, c4: int = 2048):
    super().__init__()
    self.std_reduce = 10
    self.noise = True
    n = int(math.log2(image_size // 4))
    c = c4 // 2 ** (n - 1)
    layers = [nn.Conv2d(1, c, 4, stride=2, padding=1, bias=False), nn.LeakyReLU(0.2, inplace=True)]
    for _ in range(n - 1):
      layers += [nn.Conv2d(c, 2 * c, 4, stride=2, padding=1, bias=False), nn.BatchNorm2d(2 * c),
                 nn.LeakyReLU(0.2, inplace=True)]
      c *= 2
    layers += [nn.Conv2d(c, 1, 4, stride=1, padding=0, bias=False)]
    self.main = nn.Sequential(*layers)

  def forward(self, x, noise=None):
    if self.noise and noise is not None:
      x = torch.clamp(x + noise / self.std_reduce, -1, 1)
    return self.main(x)


def gan_train_step(net_g, net_d, opt_g, opt_d, real, z, labels, noises):
  """One iteration of ``Training/TrainGAN.py``'s loop (D on real, D on fake, D step, G
  step); ``noises``: the instance noise of D's three passes (or Nones)."""
  criterion = nn.BCEWithLogitsLoss()
  net_d.zero_grad()
  out = net_d(real, noises[0]).view(-1)
  err_d_real = criterion(out, labels)
  err_d_real.backward()
  fake = net_g(z)
  out = net_d(fake.detach(), noises[1]).view(-1)
  err_d_fake = criterion(out, torch.zeros_like(labels))
  err_d_fake.backward()
  opt_d.step()
  net_g.zero_grad()
  out = net_d(fake, noises[2]).view(-1)
  err_g = criterion(out, torch.ones_like(labels))
  err_g.backward()
  opt_g.step()
  return float((err_d_real + err_d_fake).detach()), float(err_g.detach())


class ResDown(nn.Module):
  """``Res_down``."""

  def __init__(self, channel_in, channel_out, scale=2):
    super().__init__()
    self.conv1 = nn.Conv2d(channel_in, channel_out // 2, 3, 1, 1)
    self.BN1 = nn.BatchNorm2d(channel_out // 2)
    self.conv2 = nn.Conv2d(channel_out // 2, channel_out, 3, 1, 1)
    self.BN2 = nn.BatchNorm2d(channel_out)
    self.conv3 = nn.Conv2d(channel_in, channel_out, 3, 1, 1)
    self.AvePool = nn.AvgPool2d(scale, scale)

  def forward(self, x):
    skip = self.conv3(self.AvePool(x))
    x = F.rrelu(self.BN1(self.conv1(x)), training=self.training)
    x = self.AvePool(x)
    x = self.BN2(self.conv2(x))
    return F.rrelu(x + skip, training=self.training)


class ResUp(nn.Module):
  """``Res_up``."""

  def __init__(self, channel_in, channel_out, scale=2):
    super().__init__()
    self.conv1 = nn.Conv2d(channel_in, channel_out // 2, 3, 1, 1)
    self.BN1 = nn.BatchNorm2d(channel_out // 2)
    self.conv2 = nn.Conv2d(channel_out // 2, channel_out, 3, 1, 1)
    self.BN2 = nn.BatchNorm2d(channel_out)
    self.conv3 = nn.Conv2d(channel_in, channel_out, 3, 1, 1)
    self.UpNN = nn.Upsample(scale_factor=scale, mode="nearest")

  def forward(self, x):
    skip = self.conv3(self.UpNN(x))
    x = F.rrelu(self.BN1(self.conv1(x)), training=self.training)
    x = self.UpNN(x)
    x = self.BN2(self.conv2(x))
    return F.rrelu(x + skip, training=self.training)


class Encoder(nn.Module):
  """``Encoder``: forward(x) -> (mu, logvar), each ``[B, z, 1, 1]`` (the reference
  returns (kl, z); the test compares the posterior itself)."""

  def __init__(self, image_size=128, channels=1, ch=64, z=32):
    super().__init__()
    n = int(math.log2(image_size // 4))
    chans = [min(ch * 2 ** k, 8 * ch) for k in range(n - 1)] + [8 * ch]
    c_in = channels
    for i, c in enumerate(chans):
      setattr(self, f"conv{i + 1}", ResDown(c_in, c))
      c_in = c
    self.n = n
    self.conv_mu = nn.Conv2d(8 * ch, z, 4, 4)
    self.conv_logvar = nn.Conv2d(8 * ch, z, 4, 4)

  def forward(self, x):
    for i in range(self.n):
      x = getattr(self, f"conv{i + 1}")(x)
    return self.conv_mu(x), self.conv_logvar(x)


class Decoder(nn.Module):
  """``Decoder``: z ``[B, z, 1, 1]`` -> ``[B, 1, S, S]``."""

  NAMES = ("conv1", "conv12", "conv2", "conv3", "conv4", "conv5", "conv6")

  def __init__(self, image_size=128, channels=1, ch=64, z=32):
    super().__init__()
    n = int(math.log2(image_size))
    tail = [8 * ch, 8 * ch, 4 * ch, 2 * ch, ch, ch // 2]
    chans = [16 * ch] + tail[len(tail) - (n - 1):]
    self.names = [self.NAMES[0]] + list(self.NAMES[len(self.NAMES) - (n - 1):])
    c_in = z
    for name, c in zip(self.names, chans):
      setattr(self, name, ResUp(c_in, c))
      c_in = c
    self.conv7 = nn.Conv2d(ch // 2, channels, 3, 1, 1)
    self.act = nn.Tanh()

  def forward(self, x):
    for name in self.names:
      x = getattr(self, name)(x)
    return self.act(self.conv7(x))


class VAE(nn.Module):
  """``VAE`` (encoder + decoder; the state_dict has ``encoder.*`` and ``decoder.*``)."""

  def __init__(self, image_size=128, ch=64, z=32):
    super().__init__()
    self.encoder = Encoder(image_size, 1, ch, z)
    self.decoder = Decoder(image_size, 1, ch, z)
