"""DCGAN (Radford et al. 2016) as used by Schön et al. 2022 on CT slices.

Generator: z[32] -> dense 4x4xC -> (up-sample, BatchNorm, ReLU) x n -> up-sample to
one channel -> tanh.  Channels halve as the resolution doubles (4x4x2048 -> ... for
the paper's 128x128).  Discriminator mirrors it with LeakyReLU(0.2) and a linear
logit.  BatchNorm (``norm='batch'``, the paper's choice) runs with batch statistics
during training and with the stored running statistics in :func:`make_generator`,
so a Generator is a deterministic function of z; ``norm='none'`` drops it.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from jaxlatent.errors import ConfigError
from jaxlatent.generator import Generator, LatentSpec
from jaxlatent.models import blocks, settings
from jaxlatent.ops import conv2x2

NORMS = ("batch", "none")


def _norm(kind: str, train: bool, name: str):
  if kind == "batch":
    return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, name=name)
  if kind == "none":
    return lambda x: x
  raise ConfigError(f"model.norm={kind!r}: expected one of {NORMS}")


class DCGANGenerator(nn.Module):
  """z ``[B, latent_dim]`` -> images ``[B, S, S, 1]`` in [-1, 1].

  Attributes:
    image_size: output side S (power of two >= 8).
    latent_dim: size of z (paper: 32).
    gen_channels: channels at 4x4 (paper: 2048); halved per doubling.
    max_channels: cap on the channels of any layer.
    upsample: 'subpixel' | 'resize' | 'transpose' (see jaxlatent.models.blocks.Upsample).
    subpixel_kernel: conv kernel of sub-pixel up-sampling.
    norm: 'batch' (DCGAN) or 'none'.
    conv_grad: how the 2x2 resampling convs back-propagate (jaxlatent.ops.conv2x2.Conv2x2).
    matmul_dtype: 'float32', or 'bfloat16' for mixed precision in the 2x2 resampling
      convs (bfloat16 operands, float32 accumulation; jaxlatent.ops.conv2x2.Conv2x2).
  """

  image_size: int
  latent_dim: int = 32
  gen_channels: int = 2048
  max_channels: int = 2048
  upsample: str = "subpixel"
  subpixel_kernel: int = 2
  norm: str = "batch"
  conv_grad: str = "auto"
  matmul_dtype: str = "float32"

  @nn.compact
  def __call__(self, z: jax.Array, train: bool = False) -> jax.Array:
    b = z.shape[0]
    bias = self.norm == "none"
    ch = lambda res: blocks.channels_at(res, self.gen_channels, self.max_channels)
    x = nn.Dense(4 * 4 * ch(4), use_bias=bias, name="fc")(z)
    x = x.reshape(b, 4, 4, ch(4))  # [B, 4, 4, C4]
    x = nn.relu(_norm(self.norm, train, "fc_norm")(x))
    res = 4
    while res < self.image_size // 2:
      res *= 2
      x = blocks.Upsample(ch(res), self.upsample, self.subpixel_kernel, use_bias=bias,
                          conv_grad=self.conv_grad, matmul_dtype=self.matmul_dtype,
                          name=f"up{res}")(x)  # [B, res, res, C_res]
      x = nn.relu(_norm(self.norm, train, f"norm{res}")(x))
    x = blocks.Upsample(1, self.upsample, self.subpixel_kernel, conv_grad=self.conv_grad,
                        matmul_dtype=self.matmul_dtype, name="to_image")(x)
    return jnp.tanh(x)  # [B, S, S, 1]


class DCGANDiscriminator(nn.Module):
  """images ``[B, S, S, 1]`` -> logits ``[B]`` (real > 0).

  Attributes:
    image_size: input side S.
    disc_channels: channels at 4x4; halved per doubling of the resolution.
    max_channels: cap on the channels of any layer.
    downsample: 'space_to_depth' | 'strided' | 'avgpool' (see jaxlatent.models.blocks.Downsample).
    subpixel_kernel: conv kernel after space-to-depth.
    norm: 'batch' (DCGAN; none on the first layer) or 'none'.
    conv_grad: how the 2x2 convs back-propagate (jaxlatent.ops.conv2x2.Conv2x2).
    matmul_dtype: 'float32' or 'bfloat16' (as in DCGANGenerator).
  """

  image_size: int
  disc_channels: int = 2048
  max_channels: int = 2048
  downsample: str = "space_to_depth"
  subpixel_kernel: int = 2
  norm: str = "batch"
  conv_grad: str = "auto"
  matmul_dtype: str = "float32"

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    ch = lambda res: blocks.channels_at(res, self.disc_channels, self.max_channels)
    bias = self.norm == "none"
    res = self.image_size // 2
    x = blocks.Downsample(ch(res), self.downsample, self.subpixel_kernel,
                          conv_grad=self.conv_grad, matmul_dtype=self.matmul_dtype,
                          name=f"down{res}")(x)
    x = nn.leaky_relu(x, 0.2)  # [B, S/2, S/2, C]
    while res > 4:
      res //= 2
      x = blocks.Downsample(ch(res), self.downsample, self.subpixel_kernel, use_bias=bias,
                            conv_grad=self.conv_grad, matmul_dtype=self.matmul_dtype,
                            name=f"down{res}")(x)
      x = nn.leaky_relu(_norm(self.norm, train, f"norm{res}")(x), 0.2)
    x = x.reshape(x.shape[0], -1)  # [B, 16*C4]
    return nn.Dense(1, name="logit")(x)[:, 0]  # [B]


def default_config() -> ml_collections.ConfigDict:
  """``config.model`` of the paper's DCGAN (Schön et al. 2022): the modules' field defaults."""
  return settings.default_config("dcgan", DCGANGenerator, DCGANDiscriminator)


def _checked_image_size(config: ml_collections.ConfigDict) -> int:
  """``config.image_size`` after checking the model's mode keys (ConfigError names the key)."""
  m = config.model
  size = blocks.check_image_size(config.image_size, 8)
  blocks.check_resample_modes(m.get("upsample"), m.get("downsample"))
  if "norm" in m and m.norm not in NORMS:
    raise ConfigError(f"model.norm={m.norm!r}: expected one of {NORMS}")
  if "conv_grad" in m:
    conv2x2.check_conv_grad(m.conv_grad)
  if "matmul_dtype" in m:
    conv2x2.check_matmul_dtype(m.matmul_dtype)
  return size


def build_generator(config: ml_collections.ConfigDict) -> DCGANGenerator:
  """The generator module for ``config`` (``config.model`` + ``config.image_size``)."""
  size = _checked_image_size(config)
  return DCGANGenerator(image_size=size, **settings.kwargs_for(DCGANGenerator, config.model))


def build_discriminator(config: ml_collections.ConfigDict) -> DCGANDiscriminator:
  """The discriminator module for ``config``."""
  size = _checked_image_size(config)
  return DCGANDiscriminator(image_size=size,
                            **settings.kwargs_for(DCGANDiscriminator, config.model))


def init_generator(config: ml_collections.ConfigDict, key: jax.Array) -> dict[str, Any]:
  """Generator variables ``{'params', ['batch_stats']}`` for ``config``."""
  g = build_generator(config)
  return dict(g.init(key, jnp.zeros((1, g.latent_dim), jnp.float32)))


def make_generator(params: Any, config: ml_collections.ConfigDict) -> Generator:
  """A :class:`Generator` over z from the generator's variables.

  Args:
    params: the generator's variables ``{'params': ..., 'batch_stats': ...}`` (as
      returned by :func:`init_generator` or ``trainer.generator(state).params``).
    config: the run config (``config.model``, ``config.image_size``).
  """
  g = build_generator(config)
  # train=False: BatchNorm uses the stored running statistics.
  apply_fn = blocks.ModuleApply(g, None, (("train", False),))
  return Generator(
      params=params, apply_fn=apply_fn, latent_spec=LatentSpec((g.latent_dim,), "z", "normal"),
      image_shape=(g.image_size, g.image_size, 1), name="dcgan")
