"""Attribute-factorised conditional VAE-GAN (IFcVAE-GAN; Creswell et al. 2017).

"Conditional Autoencoders with Adversarial Information Factorization": the encoder
splits an image into an attribute part ``y_hat`` (classification logits, trained
on the label) and the rest ``z`` (a diagonal Gaussian posterior); the decoder
renders ``(z, y)``; an auxiliary classifier ``A(z)`` is trained to predict ``y``
from ``z`` while the encoder is trained to make ``A``'s prediction uninformative
(cross-entropy towards the uniform distribution, i.e. BCE towards 0.5 for a binary
attribute), so ``z`` carries no attribute information; an image discriminator
gives a GAN loss on reconstructions and on samples from the prior with a random y.
Editing a real image = encode, change y, decode (:func:`edit`).

How well z is cleared of the attribute is measured with a FRESH linear probe
(:func:`jaxlatent.studies.label_fraction.probe_attribute`: logistic regression fitted
on z of training images, scored on held-out ones), not with A, which the encoder
learns to fool without removing the information: with the adversary alone the
probe read 0.92-1.0 (chance 0.5) on the tests' planted 16 px phantoms, and still
0.85-1.0 with A linear, 5 A steps per step, a 10x A learning rate, aux_weight 10 or
the encoder maximising A's CE (2 seeds each; 20 A steps at 10x lr: 0.62, 0.84).
Two defaults fix that here:
A reads the posterior MEAN (``aux_input``; against samples the encoder widened the
posterior to hide y in the noise) and a closed-form term, ``mean_gap_weight *``
:func:`class_explained_variance` of z in each batch, pulls the class means of z
together, which no linear read-out can then separate.  Measured (3 seeds each; z
posterior means; chance = majority rate of the held-out labels): planted 16 px,
150 steps: probe 0.92-1.0 -> 0.56-0.66; brain phantom 'group' (32 px, width 16,
lr 2e-3, 300 steps, held-out subjects): 0.605-0.635 -> 0.496-0.584 (chance 0.5);
thorax 'large_breast': 0.758-0.768 -> 0.723-0.729 (chance 0.734).  On the brain
and thorax phantoms at that scale z carried little of the attribute in the first
place (0.60-0.64 and 0.69-0.75 with both terms off).  Non-linear read-outs are not
bounded by the mean term: a probe on (z, z^2) still read 0.67-0.82 on the planted set.

Those figures were measured with ``mean_gap_scope='encoder'`` (the term training the
whole encoder).  The default, ``'head'``, trains the posterior head alone, on the
trunk's detached features: through the trunk the term also erased the attribute from
the features the class head reads.  On the 64 px thorax phantom ('large_breast',
breasts a few pixels wide) the class head then stayed at the majority rate (0.74)
for a whole 1920-step training, the decoder ignored y and edits changed almost nothing,
although the same encoder trained on the labels alone reaches 0.85 held out; with
the head scope it reaches 0.90 batch accuracy by step 175, as with the term off.
The price is a little more attribute left in z on the planted set (32 px, 150 steps:
fresh probe 0.74 against 0.67 with the encoder scope, about 1.0 with both terms
off).

Networks (Flax Linen, NHWC, images in [-1, 1], GroupNorm so nothing depends on
the rest of the batch):
  * :class:`AttributeEncoder`: conv trunk -> (mean, logvar) ``[B, z_dim]`` and
    y logits ``[B, y_dim]``.
  * decoder: the VAE's :class:`~jaxlatent.models.vae.Decoder` over
    ``latent_dim = z_dim + y_dim``, i.e. ``x = Dec(concat(z, y))``.
  * :class:`AuxClassifier`: MLP on z -> y logits.
  * :class:`ImageDiscriminator`: conv trunk -> real/fake logit.

The attribute code ``y``: a binary attribute (``num_classes == 2``) is one scalar
in [0, 1] (``y_dim = 1``, sigmoid/BCE), so an edit HC -> MS is y 0 -> 1; with
``num_classes > 2`` y is one-hot (``y_dim = num_classes``, softmax/CE).
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
from jaxlatent.models.vae import Decoder, ResBlock


# ----------------------------------------------------------------------------- attribute code


def y_dim_of(num_classes: int) -> int:
  """Size of the attribute code: 1 for a binary attribute, else ``num_classes``."""
  return 1 if int(num_classes) == 2 else int(num_classes)


def y_code(labels: jax.Array, num_classes: int) -> jax.Array:
  """int labels ``[B]`` -> attribute code ``[B, y_dim]`` (scalar 0/1 or one-hot)."""
  if int(num_classes) == 2:
    return labels.astype(jnp.float32)[:, None]  # [B, 1]
  return jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)  # [B, K]


def y_probs(logits: jax.Array, num_classes: int) -> jax.Array:
  """Attribute logits ``[B, y_dim]`` -> soft code ``[B, y_dim]`` (sigmoid or softmax)."""
  if int(num_classes) == 2:
    return jax.nn.sigmoid(logits)
  return jax.nn.softmax(logits, axis=-1)


def y_predict(logits: jax.Array, num_classes: int) -> jax.Array:
  """Attribute logits ``[B, y_dim]`` -> predicted class ids int32 ``[B]``."""
  if int(num_classes) == 2:
    return (logits[:, 0] > 0).astype(jnp.int32)
  return jnp.argmax(logits, axis=-1).astype(jnp.int32)


def y_cross_entropy(logits: jax.Array, labels: jax.Array, num_classes: int) -> jax.Array:
  """Per-example cross-entropy ``[B]`` of logits ``[B, y_dim]`` against int labels."""
  if int(num_classes) == 2:
    l, y = logits[:, 0], labels.astype(jnp.float32)
    return y * jax.nn.softplus(-l) + (1.0 - y) * jax.nn.softplus(l)  # BCE with logits
  logp = jax.nn.log_softmax(logits, axis=-1)
  return -jnp.take_along_axis(logp, labels[:, None].astype(jnp.int32), axis=-1)[:, 0]


def uniform_cross_entropy(logits: jax.Array, num_classes: int) -> jax.Array:
  """Per-example CE ``[B]`` towards the uniform distribution, minus its minimum log K.

  Zero exactly when the prediction is uninformative (p = 1/K; BCE towards 0.5 for a
  binary attribute).  The encoder minimises it through the auxiliary classifier.
  """
  k = int(num_classes)
  if k == 2:
    l = logits[:, 0]
    return 0.5 * (jax.nn.softplus(-l) + jax.nn.softplus(l)) - math.log(2.0)
  return -jnp.mean(jax.nn.log_softmax(logits, axis=-1), axis=-1) - math.log(k)


def class_explained_variance(z: jax.Array, labels: jax.Array, num_classes: int) -> jax.Array:
  """Share of z's batch variance explained by the class, summed over dims (scalar >= 0).

  ``sum_d sum_c (n_c / B) (mean_c[z_d] - mean[z_d])^2 / var[z_d]``: each dim's R^2 of
  a regression on the class indicators (between-class over total variance, in
  [0, 1]).  Zero iff the class means of z agree, i.e. no linear read-out of z
  separates the classes by their means; scaling z does not change it.
  """
  onehot = jax.nn.one_hot(labels, int(num_classes), dtype=jnp.float32)  # [B, K]
  counts = jnp.sum(onehot, axis=0)  # [K]
  mean = jnp.mean(z, axis=0)  # [D]
  class_means = (onehot.T @ z) / jnp.maximum(counts, 1.0)[:, None]  # [K, D]
  between = jnp.sum((counts / z.shape[0])[:, None] * jnp.square(class_means - mean), axis=0)
  return jnp.sum(between / (jnp.var(z, axis=0) + 1e-6))


def random_y(key: jax.Array, n: int, num_classes: int) -> jax.Array:
  """Uniformly drawn class codes ``[n, y_dim]`` (the prior over y)."""
  return y_code(jax.random.randint(key, (n,), 0, int(num_classes)), num_classes)


@dataclasses.dataclass(frozen=True)
class ZYSampler:
  """``(params, key, n) -> concat(z ~ N(0, I), y ~ uniform classes)``, ``[n, z_dim + y_dim]``.

  Hashable (a frozen dataclass), so Generators built from equal configs compare
  equal and jitted functions taking them do not retrace.
  """

  z_dim: int
  num_classes: int

  def __call__(self, params: Any, key: jax.Array, n: int) -> jax.Array:
    del params
    kz, ky = jax.random.split(key)
    z = jax.random.normal(kz, (n, self.z_dim), jnp.float32)
    return jnp.concatenate([z, random_y(ky, n, self.num_classes)], axis=-1)


# ----------------------------------------------------------------------------- networks


class ConvTrunk(nn.Module):
  """images ``[B, S, S, 1]`` -> features ``[B, 16 * C_4]`` (residual blocks + down-sampling).

  Attributes:
    image_size: input side S (power of two >= 8).
    channels: channels at 4x4; halved per doubling of the resolution.
    max_channels: cap on channels.
    num_res_blocks: residual blocks per resolution (0: plain conv stack).
    downsample: see ``blocks.Downsample``.
    subpixel_kernel: conv kernel after space-to-depth.
  """

  image_size: int
  channels: int = 256
  max_channels: int = 256
  num_res_blocks: int = 1
  downsample: str = "space_to_depth"
  subpixel_kernel: int = 2

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    ch = lambda res: blocks.channels_at(res, self.channels, self.max_channels)
    res = self.image_size
    x = nn.Conv(ch(res), (3, 3), padding="SAME", name="from_image")(x)  # [B, S, S, C_S]
    while res > 4:
      for i in range(self.num_res_blocks):
        x = ResBlock(ch(res), name=f"res{res}_{i}")(x)
      res //= 2
      x = blocks.Downsample(ch(res), self.downsample, self.subpixel_kernel,
                            name=f"down{res}")(x)  # [B, res, res, C_res]
      if self.num_res_blocks == 0:
        x = nn.leaky_relu(x, 0.2)
    for i in range(self.num_res_blocks):
      x = ResBlock(ch(4), name=f"res4_{i}")(x)
    x = nn.leaky_relu(blocks.group_norm(x.shape[-1], "norm_out")(x), 0.2)
    return x.reshape(x.shape[0], -1)  # [B, 16 * C_4]


class AttributeEncoder(nn.Module):
  """images ``[B, S, S, 1]`` -> (mean, logvar ``[B, z_dim]``, y logits ``[B, y_dim]``)."""

  trunk: ConvTrunk
  z_dim: int = 32
  y_dim: int = 1
  detach_class_head: bool = False  # the reference's encY(x.detach()): no CE into the trunk

  @nn.compact
  def __call__(self, x: jax.Array, return_features: bool = False):
    """(mean, logvar, y logits), and the trunk features ``[B, F]`` if ``return_features``."""
    h = self.trunk(x)  # [B, F]
    mean, logvar = split_posterior(nn.Dense(2 * self.z_dim, name="posterior")(h))
    h_y = jax.lax.stop_gradient(h) if self.detach_class_head else h
    y_logits = nn.Dense(self.y_dim, name="attribute")(h_y)  # [B, y_dim]
    return (mean, logvar, y_logits, h) if return_features else (mean, logvar, y_logits)


def split_posterior(stats: jax.Array) -> tuple[jax.Array, jax.Array]:
  """The posterior head's output ``[B, 2 z_dim]`` -> (mean, clipped logvar)."""
  mean, logvar = jnp.split(stats, 2, axis=-1)
  return mean, jnp.clip(logvar, -30.0, 20.0)


def posterior_from_features(posterior_params: dict[str, Any], h: jax.Array
                            ) -> tuple[jax.Array, jax.Array]:
  """The encoder's posterior head alone on trunk features ``h``: (mean, logvar)."""
  width = posterior_params["kernel"].shape[-1]
  return split_posterior(nn.Dense(width).apply({"params": posterior_params}, h))


class AuxClassifier(nn.Module):
  """z ``[B, z_dim]`` -> y logits ``[B, y_dim]``: the adversary that reads y from z.

  Attributes:
    y_dim: output size.
    hidden: widths of hidden layers (empty: a linear classifier).
  """

  y_dim: int = 1
  hidden: tuple[int, ...] = (64,)

  @nn.compact
  def __call__(self, z: jax.Array) -> jax.Array:
    h = z
    for i, w in enumerate(self.hidden):
      h = nn.leaky_relu(nn.Dense(w, name=f"hidden{i}")(h), 0.2)
    return nn.Dense(self.y_dim, name="logits")(h)


class ImageDiscriminator(nn.Module):
  """images ``[B, S, S, 1]`` -> logits ``[B]`` (real > 0)."""

  trunk: ConvTrunk

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    return nn.Dense(1, name="logit")(self.trunk(x))[:, 0]  # [B]


@dataclasses.dataclass(frozen=True)
class IFcVAEGAN:
  """The four networks of one IFcVAE-GAN and its sizes (hashable)."""

  encoder: AttributeEncoder
  decoder: Decoder
  aux: AuxClassifier
  discriminator: ImageDiscriminator
  image_size: int
  z_dim: int
  num_classes: int

  @property
  def y_dim(self) -> int:
    return y_dim_of(self.num_classes)


# ----------------------------------------------------------------------------- config


@dataclasses.dataclass(frozen=True)
class IFcVAEGANSettings:
  """``config.model`` of the IFcVAE-GAN: sizes, objective and loss weights.

  Attributes:
    z_dim: size of the non-attribute code z.
    num_classes: attribute classes (2: y is one scalar in [0, 1]).
    channels: channels at 4x4 of encoder and decoder; halved per doubling.
    max_channels: cap on the channels of any layer.
    disc_channels: channels at 4x4 of the image discriminator.
    num_res_blocks: residual blocks per resolution (encoder, decoder, D).
    upsample, downsample, subpixel_kernel: resampling (jaxlatent.models.blocks).
    aux_hidden: hidden widths of the auxiliary classifier A(z); () = linear.
    aux_input: what A reads: the posterior 'mean' (what code edits use) or a
      'sample' z.  With 'sample' the encoder hides the attribute under a wide
      posterior while the means still carry it.
    aux_steps: A updates per training step (on the step's detached codes).
    aux_objective: the encoder's term against A: 'uniform' (A's output -> 1/K) or
      'maximise' A's cross-entropy.
    mean_gap_weight: encoder: class_explained_variance of the codes A reads (class
      means of z apart); with it a fresh linear probe on z drops to near chance.
    mean_gap_scope: what the mean-gap term trains: the posterior 'head' alone (on
      the trunk's features, detached) or the whole 'encoder'.  Through the trunk it
      also erases the attribute from the features the class head reads: on the
      64 px thorax phantom (large breast, a few pixels) the class head stayed at
      the class prior for a whole training and the decoder learned to ignore y.
    recon_weight: mean squared error over pixels.
    kl_weight: KL(q(z|x) || N(0, I)), summed over z dims.
    class_weight: cross-entropy of the encoder's y_hat against the label.
    aux_weight: encoder: cross-entropy of A(z) towards uniform (0: no factorisation).
    gan_weight: non-saturating GAN loss of reconstructions and prior samples.
    recon_y: decode reconstructions from the 'label' y or the 'predicted' y_hat.
    class_head_input: what the class head reads: the trunk's 'features' (its
      cross-entropy trains the trunk too) or the 'detached' features (the
      reference: a read-out trained on its own).
  """

  z_dim: int = 32
  num_classes: int = 2
  channels: int = 256
  max_channels: int = 256
  disc_channels: int = 256
  num_res_blocks: int = 1
  upsample: str = "subpixel"
  downsample: str = "space_to_depth"
  subpixel_kernel: int = 2
  aux_hidden: tuple[int, ...] = (64,)
  aux_input: str = "mean"
  aux_steps: int = 1
  aux_objective: str = "uniform"
  mean_gap_weight: float = 10.0
  mean_gap_scope: str = "head"
  recon_weight: float = 1.0
  kl_weight: float = 0.005
  class_weight: float = 1.0
  aux_weight: float = 1.0
  gan_weight: float = 0.05
  recon_y: str = "label"
  class_head_input: str = "features"


AUX_INPUTS = ("sample", "mean")
AUX_OBJECTIVES = ("uniform", "maximise")
RECON_YS = ("label", "predicted")
MEAN_GAP_SCOPES = ("head", "encoder")
CLASS_HEAD_INPUTS = ("features", "detached")
_LOSS_WEIGHTS = ("recon_weight", "kl_weight", "class_weight", "aux_weight", "gan_weight",
                 "mean_gap_weight")


def default_config() -> ml_collections.ConfigDict:
  """``config.model`` of the IFcVAE-GAN (binary attribute, z 32, small GAN weight)."""
  return settings.default_config("ifcvae_gan", IFcVAEGANSettings)


def check_attribute_model(model: Any, weights: tuple[str, ...]) -> None:
  """Validates the fields the attribute models share (``model``: their settings).

  Checks ``num_classes >= 2``, ``z_dim >= 1``, the resample modes, and that every
  loss weight in ``weights`` is >= 0; ConfigError names the ``config.model`` key.
  """
  blocks.check_resample_modes(model.upsample, model.downsample)
  if int(model.num_classes) < 2:
    raise ConfigError(f"model.num_classes={model.num_classes}: must be >= 2")
  if int(model.z_dim) < 1:
    raise ConfigError(f"model.z_dim={model.z_dim}: must be >= 1")
  for w in weights:
    if float(getattr(model, w)) < 0:
      raise ConfigError(f"model.{w}={getattr(model, w)}: must be >= 0")


def model_settings(config: ml_collections.ConfigDict) -> IFcVAEGANSettings:
  """The checked :class:`IFcVAEGANSettings` of ``config.model``."""
  model = IFcVAEGANSettings(**settings.kwargs_for(IFcVAEGANSettings, config.model))
  check_attribute_model(model, _LOSS_WEIGHTS)
  if model.recon_y not in RECON_YS:
    raise ConfigError(f"model.recon_y={model.recon_y!r}: expected one of {RECON_YS}")
  if model.class_head_input not in CLASS_HEAD_INPUTS:
    raise ConfigError(f"model.class_head_input={model.class_head_input!r}: expected one of "
                      f"{CLASS_HEAD_INPUTS}")
  if model.mean_gap_scope not in MEAN_GAP_SCOPES:
    raise ConfigError(f"model.mean_gap_scope={model.mean_gap_scope!r}: expected one of "
                      f"{MEAN_GAP_SCOPES}")
  if model.aux_input not in AUX_INPUTS:
    raise ConfigError(f"model.aux_input={model.aux_input!r}: expected one of {AUX_INPUTS}")
  if model.aux_objective not in AUX_OBJECTIVES:
    raise ConfigError(f"model.aux_objective={model.aux_objective!r}: expected one of "
                      f"{AUX_OBJECTIVES}")
  aux_steps = model.aux_steps
  if isinstance(aux_steps, bool) or not isinstance(aux_steps, int) or aux_steps < 1:
    raise ConfigError(f"model.aux_steps={aux_steps!r}: must be an int >= 1")
  return model


def conv_trunk(model: Any, size: int, channels: int) -> ConvTrunk:
  """An attribute model's image trunk (``model``: its settings) with ``channels`` at 4x4."""
  return ConvTrunk(size, channels, model.max_channels, num_res_blocks=int(model.num_res_blocks),
                   downsample=model.downsample, subpixel_kernel=int(model.subpixel_kernel))


def attribute_decoder(model: Any, size: int, latent_dim: int) -> Decoder:
  """An attribute model's decoder: the trunk's widths and depth, mirrored."""
  return Decoder(image_size=size, latent_dim=latent_dim, channels=model.channels,
                 max_channels=model.max_channels, upsample=model.upsample,
                 num_res_blocks=int(model.num_res_blocks),
                 subpixel_kernel=int(model.subpixel_kernel))


def build(config: ml_collections.ConfigDict) -> IFcVAEGAN:
  """The networks for ``config`` (``config.model`` + ``config.image_size``)."""
  size = blocks.check_image_size(config.image_size, 8)
  model = model_settings(config)
  k, z_dim = int(model.num_classes), int(model.z_dim)
  yd = y_dim_of(k)
  return IFcVAEGAN(
      encoder=AttributeEncoder(conv_trunk(model, size, model.channels), z_dim, yd,
                               detach_class_head=model.class_head_input == "detached"),
      decoder=attribute_decoder(model, size, z_dim + yd),
      aux=AuxClassifier(yd, tuple(int(h) for h in model.aux_hidden)),
      discriminator=ImageDiscriminator(conv_trunk(model, size, model.disc_channels)),
      image_size=size, z_dim=z_dim, num_classes=k)


def init_params(config: ml_collections.ConfigDict, key: jax.Array) -> dict[str, Any]:
  """Parameters ``{'encoder', 'decoder', 'aux', 'discriminator'}``."""
  net = build(config)
  s = net.image_size
  ke, kd, ka, kc = jax.random.split(key, 4)
  x = jnp.zeros((1, s, s, 1), jnp.float32)
  return {
      "encoder": net.encoder.init(ke, x)["params"],
      "decoder": net.decoder.init(kd, jnp.zeros((1, net.z_dim + net.y_dim), jnp.float32))["params"],
      "aux": net.aux.init(ka, jnp.zeros((1, net.z_dim), jnp.float32))["params"],
      "discriminator": net.discriminator.init(kc, x)["params"],
  }


# ----------------------------------------------------------------------------- use


def encode(params: dict[str, Any], images: jax.Array, config: ml_collections.ConfigDict
           ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """images ``[B, S, S, 1]`` -> (z mean, z logvar ``[B, z_dim]``, y logits ``[B, y_dim]``)."""
  return build(config).encoder.apply({"params": params["encoder"]}, images)


def decode(params: dict[str, Any], z: jax.Array, y: jax.Array,
           config: ml_collections.ConfigDict) -> jax.Array:
  """``Dec(concat(z [B, z_dim], y [B, y_dim]))`` -> images ``[B, S, S, 1]``."""
  return build(config).decoder.apply({"params": params["decoder"]},
                                     jnp.concatenate([z, y], axis=-1))


def edit(params: dict[str, Any], images: jax.Array, y_to: jax.Array,
         config: ml_collections.ConfigDict) -> jax.Array:
  """Attribute editing of real images: encode (posterior mean), set y = ``y_to``, decode.

  ``y_to``: ``[B, y_dim]`` or ``[y_dim]`` (or a scalar for a binary attribute).
  """
  mean, _, _ = encode(params, images, config)
  y = jnp.broadcast_to(jnp.asarray(y_to, jnp.float32), (mean.shape[0], build(config).y_dim))
  return decode(params, mean, y, config)


def make_decoder_generator(params: dict[str, Any], config: ml_collections.ConfigDict
                           ) -> Generator:
  """The decoder as a Generator over ``latent = concat(z, y)`` (``[z_dim + y_dim]``).

  ``params``: the model's params (``params['decoder']`` is used).  Typical latents
  are z ~ N(0, I) with a uniformly drawn class code (``sample_latents``); the latent
  space has no closed-form normal prior, so ``latent_spec.prior == 'none'``.
  """
  net = build(config)
  s = net.image_size
  return Generator(
      params={"params": params["decoder"]}, apply_fn=blocks.ModuleApply(net.decoder),
      latent_spec=LatentSpec((net.z_dim + net.y_dim,), "z", "none"),
      image_shape=(s, s, 1), sample_fn=ZYSampler(net.z_dim, net.num_classes),
      name="ifcvae_gan")
