"""The VAE of Schön et al. 2022 (``Models/VAE.py`` of their code), and a ResNet variant.

``arch='schon'`` (default), the reference exactly: the encoder is five
:class:`ResDown` blocks (conv3x3 + BatchNorm + RReLU, 2x2 average pooling, a conv3x3
skip on the pooled input) from ``ch`` = 64 to ``8 ch`` channels at 4x4, then 4x4
stride-4 convs to the mean and log-variance of a 1x1x32 latent; the decoder maps z
through seven :class:`ResUp` blocks (nearest up-sampling) with channels 16ch, 8ch, 8ch,
4ch, 2ch, ch, ch/2 from 1x1 to 128x128, then a conv3x3 to one channel and tanh.  At
other image sizes the encoder has ``log2(S/4)`` blocks (channels ch, 2ch, ... capped at
8ch, the last 8ch) and the decoder ``log2(S)`` (16ch, then the last of the list).
BatchNorm keeps PyTorch's running statistics; RReLU in training mode draws a slope
U[1/8, 1/3] per element from the ``'rrelu'`` rng, in eval mode it uses the mean slope
11/48 (PyTorch's ``F.rrelu``).  The decoder as a generator
(:func:`make_decoder_generator`) runs in eval mode, as the reference's ``make_vae``.
:func:`vae_variables_from_torch` converts their state_dicts.

``arch='resample'``: a pre-activation ResNet with GroupNorm and swish (:class:`Encoder`,
:class:`Decoder`), whose outputs never depend on the rest of the batch.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxlatent.errors import ConfigError
from jaxlatent.generator import Generator, LatentSpec
from jaxlatent.models import blocks, settings
from jaxlatent.ops.batch_norm import BatchNorm2d

LOSSES = ("log_mse_kl", "elbo")
ARCHS = ("schon", "resample")
RRELU_LOWER, RRELU_UPPER = 1.0 / 8.0, 1.0 / 3.0
# PyTorch's default Conv2d weights: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
_TORCH_CONV_INIT = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def rrelu(x: jax.Array, key: jax.Array | None = None, lower: float = RRELU_LOWER,
          upper: float = RRELU_UPPER) -> jax.Array:
  """Randomised leaky ReLU (PyTorch ``F.rrelu``): negative inputs times a slope drawn
  per element from U[lower, upper] with ``key``, or times ``(lower + upper) / 2``
  when ``key`` is None (eval mode)."""
  if key is None:
    slope = (lower + upper) / 2.0
  else:
    slope = jax.random.uniform(key, x.shape, x.dtype, lower, upper)
  return jnp.where(x >= 0, x, x * slope)


def _conv3x3(features: int, name: str) -> nn.Conv:
  return nn.Conv(features, (3, 3), padding=((1, 1), (1, 1)), kernel_init=_TORCH_CONV_INIT,
                 name=name)


def _avg_pool2(x: jax.Array) -> jax.Array:
  b, h, w, c = x.shape
  return x.reshape(b, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))


def _upsample_nearest2(x: jax.Array) -> jax.Array:
  return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


class _SchonRes(nn.Module):
  """``Res_down`` / ``Res_up``: rrelu(BN2(conv2(resample(rrelu(BN1(conv1 x))))) +
  conv3(resample x)); resample = 2x2 average pooling (down) or nearest x2 (up)."""

  features: int
  up: bool
  train: bool = False

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    resample = _upsample_nearest2 if self.up else _avg_pool2
    act = lambda h: rrelu(h, self.make_rng("rrelu") if self.train else None)
    bn = lambda name: BatchNorm2d(use_running_average=not self.train, name=name)
    skip = _conv3x3(self.features, "conv3")(resample(x))
    h = act(bn("BN1")(_conv3x3(self.features // 2, "conv1")(x)))
    h = bn("BN2")(_conv3x3(self.features, "conv2")(resample(h)))
    return act(h + skip)


def ResDown(features: int, train: bool = False, name: str | None = None) -> nn.Module:
  """Schön et al.'s ``Res_down(C, features)`` (2x2 average pooling)."""
  return _SchonRes(features, up=False, train=train, name=name)


def ResUp(features: int, train: bool = False, name: str | None = None) -> nn.Module:
  """Schön et al.'s ``Res_up(C, features)`` (nearest up-sampling)."""
  return _SchonRes(features, up=True, train=train, name=name)


def _schon_encoder_channels(image_size: int, ch: int) -> list[int]:
  n = int(math.log2(image_size // 4))
  return [min(ch * 2 ** k, 8 * ch) for k in range(n - 1)] + [8 * ch]


def _schon_decoder_channels(image_size: int, ch: int) -> list[int]:
  n = int(math.log2(image_size))
  tail = [8 * ch, 8 * ch, 4 * ch, 2 * ch, ch, ch // 2]
  return [16 * ch] + tail[len(tail) - (n - 1):]


# The reference's attribute names of the decoder's blocks (conv1, conv12, conv2, ...).
_DECODER_BLOCK_NAMES = ("conv1", "conv12", "conv2", "conv3", "conv4", "conv5", "conv6")


class SchonEncoder(nn.Module):
  """images ``[B, S, S, 1]`` -> (mean, logvar), each ``[B, latent_dim]`` (``Encoder``).

  Attributes:
    image_size: input side S (128 in the reference).
    latent_dim: size of z (32).
    ch: channels of the first block (64); 8 ch at 4x4.
  """

  image_size: int
  latent_dim: int = 32
  ch: int = 64

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> tuple[jax.Array, jax.Array]:
    for i, c in enumerate(_schon_encoder_channels(self.image_size, self.ch)):
      x = ResDown(c, train, name=f"conv{i + 1}")(x)  # [B, S/2^(i+1), ., c]
    head = lambda name: nn.Conv(self.latent_dim, (4, 4), strides=(4, 4), padding="VALID",
                                kernel_init=_TORCH_CONV_INIT, name=name)
    mean = head("conv_mu")(x).reshape(x.shape[0], -1)  # [B, latent_dim]
    logvar = head("conv_logvar")(x).reshape(x.shape[0], -1)
    return mean, logvar


class SchonDecoder(nn.Module):
  """z ``[B, latent_dim]`` -> images ``[B, S, S, 1]`` in [-1, 1] (``Decoder``).

  Attributes as :class:`SchonEncoder`.
  """

  image_size: int
  latent_dim: int = 32
  ch: int = 64

  @nn.compact
  def __call__(self, z: jax.Array, train: bool = False) -> jax.Array:
    x = z.reshape(z.shape[0], 1, 1, -1)  # [B, 1, 1, latent_dim]
    chans = _schon_decoder_channels(self.image_size, self.ch)
    names = (_DECODER_BLOCK_NAMES[:1]
             + _DECODER_BLOCK_NAMES[len(_DECODER_BLOCK_NAMES) - (len(chans) - 1):])
    for name, c in zip(names, chans):
      x = ResUp(c, train, name=name)(x)
    return jnp.tanh(_conv3x3(1, "conv7")(x))  # [B, S, S, 1]


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
  """Encoder + decoder; ``__call__(x, key)`` -> (reconstruction, mean, logvar).

  ``train``: Schön's networks run BatchNorm on batch statistics and draw RReLU slopes
  (rng ``'rrelu'``); otherwise (and always for ``arch='resample'``) deterministic.
  """

  encoder: nn.Module
  decoder: nn.Module

  def _kw(self, train: bool) -> dict:
    return {"train": train} if isinstance(self.encoder, SchonEncoder) else {}

  def encode(self, x: jax.Array, train: bool = False) -> tuple[jax.Array, jax.Array]:
    return self.encoder(x, **self._kw(train))

  def decode(self, z: jax.Array, train: bool = False) -> jax.Array:
    return self.decoder(z, **self._kw(train))

  def __call__(self, x: jax.Array, key: jax.Array, train: bool = False
               ) -> tuple[jax.Array, jax.Array, jax.Array]:
    mean, logvar = self.encode(x, train)
    eps = jax.random.normal(key, mean.shape, mean.dtype)
    z = mean + jnp.exp(0.5 * logvar) * eps  # reparameterisation
    return self.decode(z, train), mean, logvar


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


@dataclasses.dataclass(frozen=True)
class VAENetwork:
  """Which networks the VAE has (a ``config.model`` key).

  Attributes:
    arch: 'schon' (:class:`SchonEncoder` / :class:`SchonDecoder`, keys ``ch``,
      ``latent_dim``) or 'resample' (:class:`Encoder` / :class:`Decoder`, keys
      ``channels``, ``max_channels``, ``num_res_blocks``, ``upsample``, ...).
  """

  arch: str = "schon"


def default_config() -> ml_collections.ConfigDict:
  """``config.model`` of the VAE (latent 32 and log(MSE) + 0.01 KL as in Schön et al.)."""
  return settings.default_config("vae", VAENetwork, SchonEncoder, Encoder, Decoder, VAELoss)


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
  arch = VAENetwork(**settings.kwargs_for(VAENetwork, m)).arch
  if arch not in ARCHS:
    raise ConfigError(f"model.arch={arch!r}: expected one of {ARCHS}")
  if arch == "schon":
    if size < 16:
      raise ConfigError(f"image_size={size}: Schön's VAE needs >= 16")
    return VAE(encoder=SchonEncoder(image_size=size, **settings.kwargs_for(SchonEncoder, m)),
               decoder=SchonDecoder(image_size=size, **settings.kwargs_for(SchonDecoder, m)))
  return VAE(encoder=Encoder(image_size=size, **settings.kwargs_for(Encoder, m)),
             decoder=Decoder(image_size=size, **settings.kwargs_for(Decoder, m)))


def encode(params: Any, images: jax.Array, config: ml_collections.ConfigDict
           ) -> tuple[jax.Array, jax.Array]:
  """Posterior of ``images [B, S, S, 1]``: (mean, logvar), each ``[B, latent_dim]``.

  ``params`` are the VAE's variables ``{'params': ..., ['batch_stats']}``; eval mode.
  """
  return build_vae(config).apply(params, images, method=VAE.encode)


def make_decoder_generator(params: Any, config: ml_collections.ConfigDict) -> Generator:
  """The decoder as a :class:`Generator` over z ~ N(0, I) (``params``: the VAE's
  variables ``{'params', ['batch_stats']}``), in eval mode."""
  v = build_vae(config)
  s = v.decoder.image_size
  return Generator(
      params=params, apply_fn=blocks.ModuleApply(v, "decode"),
      latent_spec=LatentSpec((v.decoder.latent_dim,), "z", "normal"),
      image_shape=(s, s, 1), name="vae")


def vae_variables_from_torch(state_dict: Mapping[str, Any], where: str = "state_dict"
                             ) -> dict[str, Any]:
  """Our variables ``{'params', 'batch_stats'}`` from a PyTorch state_dict of Schön et
  al.'s ``VAE`` (keys ``encoder.*``, ``decoder.*``) or of its ``Decoder`` alone (then
  only ``'decoder'`` is filled).

  Conv ``weight`` ``[O, I, kh, kw]`` -> ``kernel`` ``[kh, kw, I, O]``; BatchNorm
  ``weight``/``bias``/``running_mean``/``running_var`` -> ``scale``/``bias``/``mean``/
  ``var``; module names are the reference's.  :func:`vae_variables_to_torch` inverts it.
  """
  from jaxlatent.errors import CheckpointError  # pylint: disable=g-import-not-at-top
  keys = list(state_dict)
  if keys and not any(k.startswith(("encoder.", "decoder.")) for k in keys):
    state_dict = {f"decoder.{k}": v for k, v in state_dict.items()}
  params, stats = {}, {}

  def put(tree, path, value):
    for p in path[:-1]:
      tree = tree.setdefault(p, {})
    tree[path[-1]] = np.asarray(value, np.float32)

  for key, value in state_dict.items():
    *path, leaf = key.split(".")
    if not path or path[0] not in ("encoder", "decoder"):
      raise CheckpointError(f"{where}: unexpected key {key!r} for Schön's VAE")
    prefix = ".".join(path)
    is_bn = f"{prefix}.running_mean" in state_dict
    if leaf == "num_batches_tracked":
      continue
    if is_bn:
      target, name = {"weight": (params, "scale"), "bias": (params, "bias"),
                      "running_mean": (stats, "mean"), "running_var": (stats, "var")}.get(
                          leaf, (None, None))
      if target is None:
        raise CheckpointError(f"{where}: unexpected key {key!r}")
      put(target, path + [name], value)
    elif leaf == "weight":
      if np.ndim(value) != 4:
        raise CheckpointError(f"{where}: {key} has shape {np.shape(value)}: expected a 4-d "
                              "conv weight")
      put(params, path + ["kernel"], np.asarray(value).transpose(2, 3, 1, 0))
    elif leaf == "bias":
      put(params, path + ["bias"], value)
    else:
      raise CheckpointError(f"{where}: unexpected key {key!r} for Schön's VAE")
  return {"params": params, "batch_stats": stats}


def vae_variables_to_torch(variables: Mapping[str, Any]) -> dict[str, np.ndarray]:
  """The PyTorch state_dict of Schön et al.'s ``VAE`` (or of the parts present) from
  our variables (``num_batches_tracked`` written as 0)."""
  out = {}
  flat = jax.tree_util.tree_flatten_with_path(dict(variables))[0]
  rename = {"scale": "weight", "bias": "bias", "mean": "running_mean", "var": "running_var"}
  for path, value in flat:
    names = [str(getattr(k, "key", k)) for k in path]
    collection, *mod, leaf = names
    value = np.asarray(value)
    if leaf == "kernel":
      out[".".join(mod + ["weight"])] = value.transpose(3, 2, 0, 1)
    elif collection == "batch_stats" or (leaf == "scale"):
      out[".".join(mod + [rename[leaf]])] = value
      if leaf == "mean":
        out[".".join(mod + ["num_batches_tracked"])] = np.asarray(0, np.int64)
    else:
      out[".".join(mod + [leaf])] = value
  return out
