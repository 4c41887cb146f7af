"""A ResNet-style convolutional VAE (Schön et al. 2022 use one with a 32-d latent).

Encoder: images ``[B, S, S, 1]`` -> residual blocks and down-sampling to 4x4 ->
(mean, log-variance) of a diagonal Gaussian posterior ``[B, latent_dim]`` each.
Decoder: z -> 4x4 -> (up-sample, residual blocks) -> tanh image.  The decoder is a
generator like any other (:func:`make_decoder_generator`).  Normalisation is
GroupNorm, so outputs never depend on the rest of the batch.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from jaxlatent.errors import ConfigError
from jaxlatent.generator import Generator, LatentSpec
from jaxlatent.models import blocks, settings

LOSSES = ("log_mse_kl", "elbo")


class ResBlock(nn.Module):
  """Pre-activation residual block: x + conv(swish(GN(conv(swish(GN(x)))))).

  A 1x1 conv maps the skip path when the channel count changes.
  """

  features: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    h = nn.swish(blocks.group_norm(x.shape[-1], "norm0")(x))
    h = nn.Conv(self.features, (3, 3), padding="SAME", name="conv0")(h)
    h = nn.swish(blocks.group_norm(self.features, "norm1")(h))
    h = nn.Conv(self.features, (3, 3), padding="SAME", name="conv1",
                kernel_init=nn.initializers.variance_scaling(0.1, "fan_in", "normal"))(h)
    if x.shape[-1] != self.features:
      x = nn.Conv(self.features, (1, 1), name="skip")(x)
    return x + h


class Encoder(nn.Module):
  """images ``[B, S, S, 1]`` -> (mean, logvar), each ``[B, latent_dim]``.

  Attributes:
    image_size: input side S.
    latent_dim: size of z.
    channels: channels at 4x4; halved per doubling of the resolution.
    max_channels: cap on channels.
    num_res_blocks: residual blocks per resolution.
    downsample: see jaxlatent.models.blocks.Downsample.
    subpixel_kernel: conv kernel after space-to-depth.
  """

  image_size: int
  latent_dim: int = 32
  channels: int = 256
  max_channels: int = 256
  num_res_blocks: int = 1
  downsample: str = "space_to_depth"
  subpixel_kernel: int = 2

  @nn.compact
  def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    ch = lambda res: blocks.channels_at(res, self.channels, self.max_channels)
    res = self.image_size
    x = nn.Conv(ch(res), (3, 3), padding="SAME", name="from_image")(x)  # [B, S, S, C_S]
    while res > 4:
      for i in range(self.num_res_blocks):
        x = ResBlock(ch(res), name=f"res{res}_{i}")(x)
      res //= 2
      x = blocks.Downsample(ch(res), self.downsample, self.subpixel_kernel,
                            name=f"down{res}")(x)  # [B, res, res, C_res]
    for i in range(self.num_res_blocks):
      x = ResBlock(ch(4), name=f"res4_{i}")(x)
    x = nn.swish(blocks.group_norm(x.shape[-1], "norm_out")(x))
    x = x.reshape(x.shape[0], -1)  # [B, 16*C4]
    h = nn.Dense(2 * self.latent_dim, name="posterior")(x)  # [B, 2D]
    mean, logvar = jnp.split(h, 2, axis=-1)
    return mean, jnp.clip(logvar, -30.0, 20.0)


class Decoder(nn.Module):
  """z ``[B, latent_dim]`` -> images ``[B, S, S, 1]`` in [-1, 1] (tanh).

  Attributes mirror :class:`Encoder`; ``upsample`` see jaxlatent.models.blocks.Upsample.
  """

  image_size: int
  latent_dim: int = 32
  channels: int = 256
  max_channels: int = 256
  num_res_blocks: int = 1
  upsample: str = "subpixel"
  subpixel_kernel: int = 2

  @nn.compact
  def __call__(self, z: jax.Array) -> jax.Array:
    ch = lambda res: blocks.channels_at(res, self.channels, self.max_channels)
    x = nn.Dense(4 * 4 * ch(4), name="fc")(z).reshape(z.shape[0], 4, 4, ch(4))  # [B, 4, 4, C4]
    res = 4
    for i in range(self.num_res_blocks):
      x = ResBlock(ch(4), name=f"res4_{i}")(x)
    while res < self.image_size:
      res *= 2
      x = blocks.Upsample(ch(res), self.upsample, self.subpixel_kernel, name=f"up{res}")(x)
      for i in range(self.num_res_blocks):
        x = ResBlock(ch(res), name=f"res{res}_{i}")(x)  # [B, res, res, C_res]
    x = nn.swish(blocks.group_norm(x.shape[-1], "norm_out")(x))
    x = nn.Conv(1, (3, 3), padding="SAME", name="to_image")(x)
    return jnp.tanh(x)  # [B, S, S, 1]


class VAE(nn.Module):
  """Encoder + decoder; ``__call__(x, key)`` -> (reconstruction, mean, logvar)."""

  encoder: Encoder
  decoder: Decoder

  def encode(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    return self.encoder(x)

  def decode(self, z: jax.Array) -> jax.Array:
    return self.decoder(z)

  def __call__(self, x: jax.Array, key: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    mean, logvar = self.encoder(x)
    eps = jax.random.normal(key, mean.shape, mean.dtype)
    z = mean + jnp.exp(0.5 * logvar) * eps  # reparameterisation
    return self.decoder(z), mean, logvar


@dataclasses.dataclass(frozen=True)
class VAELoss:
  """The training objective's settings (``config.model`` keys next to the networks').

  Attributes:
    loss: 'log_mse_kl' (Schön et al.: log(MSE) + kl_weight KL) or 'elbo' (Gaussian
      beta-VAE).
    kl_weight: 'log_mse_kl': weight of the KL term.
    sigma: 'elbo': std of the Gaussian likelihood in [-1, 1] pixel units.
    beta: 'elbo': weight of the KL term (1: the ELBO).
  """

  loss: str = "log_mse_kl"
  kl_weight: float = 0.01
  sigma: float = 0.1
  beta: float = 1.0


def default_config() -> ml_collections.ConfigDict:
  """``config.model`` of the VAE (latent 32 and log(MSE) + 0.01 KL as in Schön et al.)."""
  return settings.default_config("vae", Encoder, Decoder, VAELoss)


def loss_settings(config: ml_collections.ConfigDict) -> VAELoss:
  """The checked :class:`VAELoss` of ``config.model``."""
  loss = VAELoss(**settings.kwargs_for(VAELoss, config.model))
  if loss.loss not in LOSSES:
    raise ConfigError(f"model.loss={loss.loss!r}: expected one of {LOSSES}")
  if loss.loss == "elbo" and loss.sigma <= 0:
    raise ConfigError(f"model.sigma={loss.sigma}: must be > 0")
  return loss


def build_vae(config: ml_collections.ConfigDict) -> VAE:
  """The VAE module for ``config`` (``config.model`` + ``config.image_size``)."""
  m = config.model
  size = blocks.check_image_size(config.image_size, 8)
  blocks.check_resample_modes(m.get("upsample"), m.get("downsample"))
  loss_settings(config)
  return VAE(encoder=Encoder(image_size=size, **settings.kwargs_for(Encoder, m)),
             decoder=Decoder(image_size=size, **settings.kwargs_for(Decoder, m)))


def encode(params: Any, images: jax.Array, config: ml_collections.ConfigDict
           ) -> tuple[jax.Array, jax.Array]:
  """Posterior of ``images [B, S, S, 1]``: (mean, logvar), each ``[B, latent_dim]``.

  ``params`` are the VAE's variables ``{'params': ...}``.
  """
  return build_vae(config).apply(params, images, method=VAE.encode)


def make_decoder_generator(params: Any, config: ml_collections.ConfigDict) -> Generator:
  """The decoder as a :class:`Generator` over z ~ N(0, I) (``params``: VAE variables)."""
  v = build_vae(config)
  s = v.decoder.image_size
  return Generator(
      params=params, apply_fn=blocks.ModuleApply(v, "decode"),
      latent_spec=LatentSpec((v.decoder.latent_dim,), "z", "normal"),
      image_shape=(s, s, 1), name="vae")
