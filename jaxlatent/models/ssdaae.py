"""Semi-supervised denoising adversarial autoencoder (Creswell et al.; Makhzani et al.).

A denoising AAE (Creswell & Bharath, "Denoising adversarial autoencoders") with the
semi-supervised head of the adversarial autoencoder (Makhzani et al. 2016, sec. 5),
as Creswell et al. used for skin lesions with few labels:

  * the input is corrupted (:func:`corrupt`: additive Gaussian noise and/or pixel
    dropout); the encoder maps the corrupted image to a code ``z [B, z_dim]`` and
    class logits ``[B, K]``; the decoder reconstructs the CLEAN image from
    ``concat(z, softmax(logits))``;
  * a latent discriminator matches z to the prior N(0, I), a second one matches
    ``softmax(logits)`` to the categorical prior (uniform one-hot codes), so the
    class head is shaped by unlabelled data too;
  * the class head gets a cross-entropy loss on the labelled examples only.

Which examples are labelled is fixed per example by a seed (:func:`labelled_mask`,
:func:`labelled_from_index`, :func:`labelled_from_image`), so a resumed run sees the
same labelled subset.  The decoder is a Generator over ``concat(z, y_onehot)``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxlatent.errors import ConfigError
from jaxlatent.generator import Generator, LatentSpec
from jaxlatent.models import blocks, settings
from jaxlatent.models.ifcvae_gan import (ConvTrunk, attribute_decoder, check_attribute_model,
                                         conv_trunk)
from jaxlatent.models.vae import Decoder


# ----------------------------------------------------------------------------- labelled subset


def labelled_from_index(index: jax.Array, fraction: float, seed: int) -> jax.Array:
  """bool ``[B]``: example ``i`` is labelled iff ``U(fold_in(key(seed), i)) < fraction``.

  A fixed Bernoulli(fraction) draw per dataset index (independent of batch order,
  batch size and device count), so resume is exact.
  """
  base = jax.random.PRNGKey(int(seed))
  u = jax.vmap(lambda i: jax.random.uniform(jax.random.fold_in(base, i)))(
      jnp.asarray(index).astype(jnp.uint32))
  return u < fraction


def labelled_mask(num_examples: int, fraction: float, seed: int) -> np.ndarray:
  """bool ``[N]``: the labelled subset over example indices 0..N-1 (same draw as above)."""
  return np.asarray(labelled_from_index(jnp.arange(num_examples), fraction, seed))


def image_hash(images: jax.Array) -> jax.Array:
  """uint32 ``[B]`` hash of each image's float32 bits (a per-example id without an index)."""
  bits = jax.lax.bitcast_convert_type(images.astype(jnp.float32), jnp.uint32)
  bits = bits.reshape(images.shape[0], -1)  # [B, P]
  p = bits.shape[1]
  mult = (jnp.arange(p, dtype=jnp.uint32) * jnp.uint32(2654435761)) | jnp.uint32(1)  # odd
  mixed = bits * mult
  mixed = mixed ^ (mixed >> 15)
  return jnp.sum(mixed, axis=1, dtype=jnp.uint32)  # wraps mod 2^32


def labelled_from_image(images: jax.Array, fraction: float, seed: int) -> jax.Array:
  """bool ``[B]`` labelled flags from the image content (when the batch has no index).

  Deterministic per image (its float32 bits), so resume is exact; the realised
  fraction is ``fraction`` in expectation.
  """
  base = jax.random.PRNGKey(int(seed))
  u = jax.vmap(lambda h: jax.random.uniform(jax.random.fold_in(base, h)))(image_hash(images))
  return u < fraction


def batch_labelled(batch: dict, fraction: float, seed: int) -> jax.Array:
  """The labelled flags of a batch: ``batch['labelled']``, else from ``batch['index']``,
  else from the image content (see the functions above)."""
  if "labelled" in batch:
    return jnp.asarray(batch["labelled"]).astype(bool)
  if fraction >= 1.0:
    return jnp.ones((batch["image"].shape[0],), bool)
  if "index" in batch:
    return labelled_from_index(batch["index"], fraction, seed)
  return labelled_from_image(batch["image"], fraction, seed)


# ----------------------------------------------------------------------------- networks


def corrupt(x: jax.Array, key: jax.Array, noise_std: float, dropout: float) -> jax.Array:
  """Corruption C(x~|x): ``x * Bernoulli(1 - dropout) + noise_std * N(0, I)``."""
  k1, k2 = jax.random.split(key)
  if dropout > 0:
    x = x * jax.random.bernoulli(k1, 1.0 - dropout, x.shape).astype(x.dtype)
  if noise_std > 0:
    x = x + noise_std * jax.random.normal(k2, x.shape, x.dtype)
  return x


class SSEncoder(nn.Module):
  """images ``[B, S, S, 1]`` -> (z ``[B, z_dim]``, class logits ``[B, K]``)."""

  trunk: ConvTrunk
  z_dim: int = 16
  num_classes: int = 2

  @nn.compact
  def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    h = self.trunk(x)  # [B, F]
    z = nn.Dense(self.z_dim, name="z")(h)
    logits = nn.Dense(self.num_classes, name="class_head")(h)
    return z, logits


class LatentDiscriminator(nn.Module):
  """codes ``[B, D]`` -> logits ``[B]`` (prior sample > 0): the AAE's adversary."""

  hidden: tuple[int, ...] = (64, 64)

  @nn.compact
  def __call__(self, c: jax.Array) -> jax.Array:
    h = c
    for i, w in enumerate(self.hidden):
      h = nn.leaky_relu(nn.Dense(w, name=f"hidden{i}")(h), 0.2)
    return nn.Dense(1, name="logit")(h)[:, 0]


@dataclasses.dataclass(frozen=True)
class SSDAAE:
  """The networks of one semi-supervised denoising AAE and its sizes (hashable)."""

  encoder: SSEncoder
  decoder: Decoder
  disc_z: LatentDiscriminator
  disc_y: LatentDiscriminator
  image_size: int
  z_dim: int
  num_classes: int


@dataclasses.dataclass(frozen=True)
class SSDAAESettings:
  """``config.model`` of the semi-supervised denoising AAE.

  Attributes:
    z_dim: style code z, matched to N(0, I).
    num_classes: classes of the head; y is one-hot in the decoder's latent.
    channels: channels at 4x4 (encoder and decoder); halved per doubling.
    max_channels: cap on the channels of any layer.
    num_res_blocks: residual blocks per resolution.
    upsample, downsample, subpixel_kernel: resampling (jaxlatent.models.blocks).
    disc_hidden: the latent discriminators' hidden widths.
    noise_std: corruption: additive Gaussian noise std (pixel units of [-1, 1]).
    dropout: corruption: probability of zeroing a pixel.
    labelled_fraction: fraction of examples whose label is used.
    label_seed: seed choosing the labelled examples (fixed over resumes).
    recon_weight: MSE(Dec(Enc(C(x))), x).
    adv_weight: the encoder's non-saturating loss against the latent discriminator.
    cat_adv_weight: ... against the categorical one (0: no categorical prior).
    class_weight: cross-entropy on labelled examples.
  """

  z_dim: int = 16
  num_classes: int = 2
  channels: int = 256
  max_channels: int = 256
  num_res_blocks: int = 1
  upsample: str = "subpixel"
  downsample: str = "space_to_depth"
  subpixel_kernel: int = 2
  disc_hidden: tuple[int, ...] = (256, 256)
  noise_std: float = 0.25
  dropout: float = 0.0
  labelled_fraction: float = 0.1
  label_seed: int = 0
  recon_weight: float = 1.0
  adv_weight: float = 0.1
  cat_adv_weight: float = 0.1
  class_weight: float = 1.0


def default_config() -> ml_collections.ConfigDict:
  """``config.model`` of the semi-supervised denoising AAE."""
  return settings.default_config("ssdaae", SSDAAESettings)


def model_settings(config: ml_collections.ConfigDict) -> SSDAAESettings:
  """The checked :class:`SSDAAESettings` of ``config.model``."""
  model = SSDAAESettings(**settings.kwargs_for(SSDAAESettings, config.model))
  check_attribute_model(
      model, ("noise_std", "recon_weight", "adv_weight", "cat_adv_weight", "class_weight"))
  if not 0.0 <= float(model.labelled_fraction) <= 1.0:
    raise ConfigError(f"model.labelled_fraction={model.labelled_fraction}: must be in [0, 1]")
  if not 0.0 <= float(model.dropout) < 1.0:
    raise ConfigError(f"model.dropout={model.dropout}: must be in [0, 1)")
  return model


def build(config: ml_collections.ConfigDict) -> SSDAAE:
  """The networks for ``config`` (``config.model`` + ``config.image_size``)."""
  size = blocks.check_image_size(config.image_size, 8)
  model = model_settings(config)
  k, z_dim = int(model.num_classes), int(model.z_dim)
  hidden = tuple(int(h) for h in model.disc_hidden)
  return SSDAAE(
      encoder=SSEncoder(conv_trunk(model, size, model.channels), z_dim, k),
      decoder=attribute_decoder(model, size, z_dim + k),
      disc_z=LatentDiscriminator(hidden), disc_y=LatentDiscriminator(hidden),
      image_size=size, z_dim=z_dim, num_classes=k)


def init_params(config: ml_collections.ConfigDict, key: jax.Array) -> dict[str, Any]:
  """Parameters ``{'encoder', 'decoder', 'disc_z', 'disc_y'}``."""
  net = build(config)
  s, k = net.image_size, net.num_classes
  ke, kd, kz, ky = jax.random.split(key, 4)
  return {
      "encoder": net.encoder.init(ke, jnp.zeros((1, s, s, 1), jnp.float32))["params"],
      "decoder": net.decoder.init(kd, jnp.zeros((1, net.z_dim + k), jnp.float32))["params"],
      "disc_z": net.disc_z.init(kz, jnp.zeros((1, net.z_dim), jnp.float32))["params"],
      "disc_y": net.disc_y.init(ky, jnp.zeros((1, k), jnp.float32))["params"],
  }


def encode(params: dict[str, Any], images: jax.Array, config: ml_collections.ConfigDict
           ) -> tuple[jax.Array, jax.Array]:
  """Clean images ``[B, S, S, 1]`` -> (z ``[B, z_dim]``, class logits ``[B, K]``)."""
  return build(config).encoder.apply({"params": params["encoder"]}, images)


def classify(params: dict[str, Any], images: jax.Array, config: ml_collections.ConfigDict
             ) -> jax.Array:
  """Predicted class ids int32 ``[B]`` of clean images (the semi-supervised head)."""
  return jnp.argmax(encode(params, images, config)[1], axis=-1).astype(jnp.int32)


def make_decoder_generator(params: dict[str, Any], config: ml_collections.ConfigDict
                           ) -> Generator:
  """The decoder as a Generator over ``latent = concat(z, y_onehot)`` (``[z_dim + K]``).

  ``sample_latents`` draws z ~ N(0, I) and a uniform one-hot class; the latent
  space has no closed-form normal prior (``latent_spec.prior == 'none'``).
  ``params``: the model's params (``params['decoder']`` is used).
  """
  net = build(config)
  s = net.image_size
  # y is one-hot for every K here (the IFcVAE-GAN uses one scalar for K = 2).
  return Generator(
      params={"params": params["decoder"]}, apply_fn=blocks.ModuleApply(net.decoder),
      latent_spec=LatentSpec((net.z_dim + net.num_classes,), "z", "none"),
      image_shape=(s, s, 1), sample_fn=OneHotSampler(net.z_dim, net.num_classes),
      name="ssdaae")


@dataclasses.dataclass(frozen=True)
class OneHotSampler:
  """``(params, key, n) -> concat(z ~ N(0, I), one-hot y ~ uniform)``, ``[n, z_dim + K]``."""

  z_dim: int
  num_classes: int

  def __call__(self, params: Any, key: jax.Array, n: int) -> jax.Array:
    del params
    kz, ky = jax.random.split(key)
    z = jax.random.normal(kz, (n, self.z_dim), jnp.float32)
    y = jax.nn.one_hot(jax.random.randint(ky, (n,), 0, self.num_classes), self.num_classes)
    return jnp.concatenate([z, y.astype(jnp.float32)], axis=-1)
