"""PyTorch references of the SAME networks and steps that jaxlatent runs.

They are the "what a user would pick instead" baseline: written the way a PyTorch
user writes them (NCHW, ``ConvTranspose2d`` / strided ``Conv2d``, the DCGAN
example's training loop, GANLatentDiscovery's discovery loop), with the channel
widths, latent sizes and losses of jaxlatent's configs, so the FLOPs match.

Every step takes a ``device`` ('cpu' or 'cuda'): its modules, batches and noise live
there (explicit devices, not ``torch.set_default_device``, which costs Python time on
every torch call).  A step's call returns the loss as a Python float, which waits for
the device, so a timed call covers the whole step on a GPU too.

Only the benchmarks import this module; torch is an optional extra
(``pip install -e .[bench]``).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
import torch.nn.functional as F


def set_threads(n: int | None) -> int:
  """Pins torch's intra-op threads (default: all cores, as XLA uses)."""
  if n:
    torch.set_num_threads(n)
  return torch.get_num_threads()


# --------------------------------------------------------------------------- DCGAN


class DCGANGenerator(nn.Module):
  """z[B, z_dim] -> images[B, 1, S, S]: 4x4 projection, then stride-2 ConvTranspose2d.

  widths: channels at 4x4, 8x8, ... (one entry per resolution below the output);
  each step doubles the resolution: ConvT(4, s2, p1) -> BN -> ReLU; the last step goes
  to ``channels`` with tanh.
  """

  def __init__(self, z_dim: int, widths: Sequence[int], channels: int = 1,
               project: str = "convt", out_bias: bool = True):
    super().__init__()
    self.z_dim, self.w0 = z_dim, widths[0]
    self.project = project
    if project == "dense":  # Dense z -> 4*4*w0 (what a Flax nn.Dense projection does)
      self.fc = nn.Linear(z_dim, 16 * widths[0], bias=False)
    else:  # the DCGAN paper's ConvT(z, w0, 4, 1, 0) on a 1x1 input
      self.fc = nn.ConvTranspose2d(z_dim, widths[0], 4, 1, 0, bias=False)
    self.bn0 = nn.BatchNorm2d(widths[0])
    ups = []
    for cin, cout in zip(widths[:-1], widths[1:]):
      ups += [nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False), nn.BatchNorm2d(cout),
              nn.ReLU(True)]
    ups += [nn.ConvTranspose2d(widths[-1], channels, 4, 2, 1, bias=out_bias), nn.Tanh()]
    self.ups = nn.Sequential(*ups)

  def forward(self, z):
    if self.project == "dense":
      x = self.fc(z).view(-1, self.w0, 4, 4)
    else:
      x = self.fc(z[:, :, None, None])
    return self.ups(F.relu(self.bn0(x)))


class DCGANDiscriminator(nn.Module):
  """images[B, 1, S, S] -> logits[B]: stride-2 Conv2d(4, s2, p1) down to 4x4, then a 4x4 conv.

  widths: channels after each stride-2 conv (first without BN, as in DCGAN).
  """

  def __init__(self, widths: Sequence[int], channels: int = 1, head: str = "conv",
               bias: bool = True):
    super().__init__()
    layers, cin = [], channels
    for i, cout in enumerate(widths):
      layers.append(nn.Conv2d(cin, cout, 4, 2, 1, bias=bias and i == 0))
      if i > 0:
        layers.append(nn.BatchNorm2d(cout))
      layers.append(nn.LeakyReLU(0.2, True))
      cin = cout
    self.body = nn.Sequential(*layers)
    self.head_kind = head
    if head == "dense":
      self.head = nn.Linear(16 * cin, 1)
    else:
      self.head = nn.Conv2d(cin, 1, 4, 1, 0, bias=bias)

  def forward(self, x):
    h = self.body(x)
    if self.head_kind == "dense":
      return self.head(h.flatten(1))[:, 0]
    return self.head(h).view(-1)


class DCGANStep:
  """One D+G step (BCE / non-saturating, Adam 2e-4, beta1 0.5), as jaxlatent's step.

  ``reuse_fake=True`` (default; the PyTorch DCGAN example's loop and the same FLOPs
  as ``jaxlatent``'s DCGAN step, which keeps G's VJP): G(z) is rendered once, D is
  updated on it detached, then G's loss is D(G(z)) through the updated D.
  ``reuse_fake=False``: G is updated on D(G(z2)) with a fresh z2 (a second G forward).
  ``schon=True``: Schön et al.'s network (Latent-Space-Exploration-CT ``Models/DCGAN.py``):
  a 4x4 ConvTranspose2d stem, no conv biases, a 4x4 conv head; what jaxlatent's
  default ``arch='schon'`` computes.
  """

  def __init__(self, image_size: int, z_dim: int, g_widths: Sequence[int],
               d_widths: Sequence[int], batch: int, channels: int = 1,
               channels_last: bool = False, seed: int = 0, project: str = "convt",
               head: str = "conv", reuse_fake: bool = True, device: str = "cpu",
               schon: bool = False):
    torch.manual_seed(seed)
    if schon:
      project, head = "convt", "conv"
    self.reuse_fake = reuse_fake
    self.device = torch.device(device)
    self.g = DCGANGenerator(z_dim, g_widths, channels, project, out_bias=not schon)
    self.d = DCGANDiscriminator(d_widths, channels, head, bias=not schon)
    self.fmt = torch.channels_last if channels_last else torch.contiguous_format
    self.g = self.g.to(self.device, memory_format=self.fmt)
    self.d = self.d.to(self.device, memory_format=self.fmt)
    self.opt_g = torch.optim.Adam(self.g.parameters(), 2e-4, betas=(0.5, 0.999))
    self.opt_d = torch.optim.Adam(self.d.parameters(), 2e-4, betas=(0.5, 0.999))
    self.batch, self.z_dim = batch, z_dim
    self.real = (torch.rand(batch, channels, image_size, image_size, device=self.device) * 2
                 - 1).contiguous(memory_format=self.fmt)
    self.ones = torch.ones(batch, device=self.device)
    self.zeros = torch.zeros(batch, device=self.device)

  def __call__(self):
    z = torch.randn(self.batch, self.z_dim, device=self.device)
    if self.reuse_fake:
      fake = self.g(z)
    else:  # G is not differentiated here (the G update renders its own batch)
      with torch.no_grad():
        fake = self.g(z)
    # D main: real -> 1, fake -> 0.
    self.opt_d.zero_grad(set_to_none=True)
    d_loss = (F.binary_cross_entropy_with_logits(self.d(self.real), self.ones) +
              F.binary_cross_entropy_with_logits(self.d(fake.detach()), self.zeros))
    d_loss.backward()
    self.opt_d.step()
    # G main: non-saturating, D(fake) -> 1.
    self.opt_g.zero_grad(set_to_none=True)
    if not self.reuse_fake:
      fake = self.g(torch.randn(self.batch, self.z_dim, device=self.device))
    g_loss = F.binary_cross_entropy_with_logits(self.d(fake), self.ones)
    g_loss.backward()
    self.opt_g.step()
    return float(d_loss.detach()) + float(g_loss.detach())


# ------------------------------------------------------- Voynov-Babenko discovery


def _groups(features: int) -> int:
  """jaxlatent.directions.networks._norm's group count."""
  for g in (32, 16, 8, 4, 2):
    if features % g == 0 and features // g >= 2:
      return g
  return 1


class LeNetReconstructor(nn.Module):
  """jaxlatent's LeNet reconstructor: 2 stacked images -> (logits[K], eps).

  GANLatentDiscovery's ``LeNetShiftPredictor`` with jaxlatent's changes (so the
  FLOPs match the JAX side): 5x5 convs of widths 3w, 8w, 60w with 'same' padding,
  GroupNorm instead of BatchNorm, 2x2 max-pools after the first two, global mean, and
  one linear layer per head.
  """

  def __init__(self, dim: int, channels: int = 1, width: int = 2):
    super().__init__()
    layers, cin = [], 2 * channels
    for i, f in enumerate((3 * width, 8 * width, 60 * width)):
      layers += [nn.Conv2d(cin, f, 5, padding=2), nn.GroupNorm(_groups(f), f), nn.ReLU()]
      if i < 2:
        layers.append(nn.MaxPool2d(2, 2))
      cin = f
    self.convnet = nn.Sequential(*layers)
    self.fc_logits = nn.Linear(cin, dim)
    self.fc_shift = nn.Linear(cin, 1)

  def forward(self, x1, x2):
    h = self.convnet(torch.cat([x1, x2], 1)).mean(dim=(2, 3))
    return self.fc_logits(h), self.fc_shift(h).squeeze(-1)


class ProjDeformator(nn.Module):
  """``proj`` deformator: shift = A_normalized @ (eps e_k), unit-norm columns."""

  def __init__(self, z_dim: int, k: int):
    super().__init__()
    self.linear = nn.Linear(k, z_dim, bias=False)

  def forward(self, x):
    w = self.linear.weight  # [z_dim, K]
    w = w / w.norm(dim=0, keepdim=True)
    return x @ w.t()


class DiscoveryStep:
  """One step of GANLatentDiscovery's ``Trainer.train`` loop (G in eval mode).

  k ~ U{0..K-1}; eps = scale * U[-1, 1] pushed to |eps| >= min_shift; the shifted
  latent is z + A(eps e_k); loss = CE(k) + 0.25 * L1(eps); Adam on A and R.

  ``freeze_generator=True`` (default) turns off ``requires_grad`` on G's parameters, so
  the backward pass only reaches the shift: the fastest form of the loop, and the work
  ``jaxlatent``'s step does.  ``False`` is the reference as written: it never freezes
  G (it calls ``G.zero_grad()`` every step), so autograd also records G(z) and computes
  G's weight gradients for both renders, and it fills the shift matrix one sample at a
  time (``Trainer.make_shifts``).
  """

  def __init__(self, generator: nn.Module, z_dim: int, k: int, batch: int,
               image_size: int, channels: int = 1, scale: float = 6.0,
               min_shift: float = 0.5, lr: float = 1e-4, seed: int = 0,
               freeze_generator: bool = True, device: str = "cpu"):
    torch.manual_seed(seed)
    self.device = torch.device(device)
    self.g = generator.to(self.device).eval()
    self.freeze_generator = freeze_generator
    for p in self.g.parameters():
      p.requires_grad_(not freeze_generator)
    self.a = ProjDeformator(z_dim, k).to(self.device)
    self.r = LeNetReconstructor(k, channels).to(self.device)
    self.opt_a = torch.optim.Adam(self.a.parameters(), lr)
    self.opt_r = torch.optim.Adam(self.r.parameters(), lr)
    self.k, self.batch, self.z_dim = k, batch, z_dim
    self.scale, self.min_shift = scale, min_shift

  def __call__(self):
    self.opt_a.zero_grad(set_to_none=True)
    self.opt_r.zero_grad(set_to_none=True)
    if not self.freeze_generator:
      self.g.zero_grad(set_to_none=True)
    dev = self.device
    z = torch.randn(self.batch, self.z_dim, device=dev)
    target = torch.randint(0, self.k, (self.batch,), device=dev)
    eps = self.scale * (2 * torch.rand(self.batch, device=dev) - 1)
    eps = torch.where(eps.abs() < self.min_shift, torch.sign(eps) * self.min_shift, eps)
    if self.freeze_generator:
      basis = F.one_hot(target, self.k).float() * eps[:, None]
    else:  # the reference's make_shifts: one sample at a time
      basis = torch.zeros(self.batch, self.k, device=dev)
      for i, (index, val) in enumerate(zip(target, eps)):
        basis[i][index] += val
    shift = self.a(basis)
    imgs = self.g(z)
    imgs_shifted = self.g(z + shift)
    logits, shift_pred = self.r(imgs, imgs_shifted)
    loss = F.cross_entropy(logits, target) + 0.25 * (shift_pred - eps).abs().mean()
    loss.backward()
    self.opt_a.step()
    self.opt_r.step()
    return float(loss.detach())


def flops_convt(batch: int, h_out: int, c_in: int, c_out: int, taps: int = 4) -> float:
  """Multiply-add FLOPs of a 4x4 stride-2 ConvTranspose2d (2x2 live taps per output)."""
  return 2.0 * batch * h_out * h_out * c_out * c_in * taps


def count_params(module: nn.Module) -> int:
  return sum(p.numel() for p in module.parameters())


__all__ = [
    "DCGANGenerator", "DCGANDiscriminator", "DCGANStep", "LeNetReconstructor",
    "ProjDeformator", "DiscoveryStep", "set_threads", "count_params", "flops_convt",
]
