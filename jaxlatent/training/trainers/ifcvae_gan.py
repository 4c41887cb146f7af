"""IFcVAE-GAN training step (Creswell et al. 2017): three updates per step.

One encoder/decoder pass gives ``z ~ q(z|x)``, ``x_rec = Dec(z, y)`` and
``x_prior = Dec(z', y')`` (``z' ~ N(0, I)``, ``y'`` a random class); A reads
``c = mean`` of q(z|x) (``model.aux_input='mean'``) or the sample z; then

1. encoder + decoder (:func:`vae_loss`): ``recon_weight * MSE(x_rec, x) + kl_weight
   * KL + class_weight * CE(y_hat, label) + aux_weight * CE_uniform(A(c))
   + mean_gap_weight * class_explained_variance(c') + gan_weight * (softplus(-D(x_rec))
   + softplus(-D(x_prior))) / 2``, against the current A and D; ``CE_uniform`` is zero
   when A's prediction is uninformative (``model.aux_objective='maximise'``:
   ``-CE(A(c), label)`` instead); ``c'`` is ``c`` recomputed by the posterior head on
   the trunk's detached features (``model.mean_gap_scope='head'``), or ``c`` itself
   (``'encoder'``);
2. A, the auxiliary classifier (:func:`aux_phase`): ``model.aux_steps`` Adam steps on
   the CE of ``A(c)`` against the label (c detached);
3. D, the image discriminator (:func:`discriminator_loss`): ``softplus(-D(x)) +
   (softplus(D(x_rec)) + softplus(D(x_prior))) / 2`` (images detached).

Reconstructions decode the label's code (``model.recon_y='label'``, a conditional
VAE) or the encoder's soft prediction (``'predicted'``).

State: params/opt_state = {'encoder', 'decoder', 'aux', 'discriminator'} / {'vae',
'aux', 'discriminator'}: one Adam for encoder + decoder, one for A, one for D.
``batch = {'image': f32 [B, S, S, 1], 'label': int32 [B]}``.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import ml_collections
import optax

from jaxlatent.generator import Generator
from jaxlatent.models import ifcvae_gan
from jaxlatent.training import losses
from jaxlatent.training.optim import apply_gradients, make_optimizer
from jaxlatent.training.trainers.labels import batch_labels, check_labelled_config
from jaxlatent.training.trainers.state import (ModelTrainer, TrainState, first_state,
                                               float32_metrics)


@dataclasses.dataclass(frozen=True)
class IFcVAEGANParts:
  """The networks, settings and optimizers of one IFcVAE-GAN run."""

  nets: ifcvae_gan.IFcVAEGAN
  model: ifcvae_gan.IFcVAEGANSettings
  vae_tx: optax.GradientTransformation
  aux_tx: optax.GradientTransformation
  d_tx: optax.GradientTransformation

  def encode(self, params, x, return_features: bool = False):
    return self.nets.encoder.apply({"params": params}, x, return_features=return_features)

  def decode(self, params, code):
    return self.nets.decoder.apply({"params": params}, code)

  def classify_code(self, params, z):
    return self.nets.aux.apply({"params": params}, z)

  def discriminate(self, params, x):
    return self.nets.discriminator.apply({"params": params}, x)


def init_state(parts: IFcVAEGANParts, config: ml_collections.ConfigDict, key: jax.Array
               ) -> TrainState:
  """Fresh parameters and the three optimizer states."""
  params = ifcvae_gan.init_params(config, key)
  vae_params = {"encoder": params["encoder"], "decoder": params["decoder"]}
  return first_state(params, {"vae": parts.vae_tx.init(vae_params),
                              "aux": parts.aux_tx.init(params["aux"]),
                              "discriminator": parts.d_tx.init(params["discriminator"])})


def forward(parts: IFcVAEGANParts, vae_params, x, labels, k_eps, k_prior):
  """Encoder and decoder pass: (mean, logvar, y_logits, x_rec, x_prior, eps, h); z ~
  q(z|x) is ``reparameterise(mean, logvar, eps)``."""
  k = parts.nets.num_classes
  mean, logvar, y_logits, h = parts.encode(vae_params["encoder"], x, return_features=True)
  eps = jax.random.normal(k_eps, mean.shape)  # [B, z_dim]
  z = reparameterise(mean, logvar, eps)
  if parts.model.recon_y == "label":
    y = ifcvae_gan.y_code(labels, k)
  else:
    y = ifcvae_gan.y_probs(y_logits, k)
  x_rec = parts.decode(vae_params["decoder"], jnp.concatenate([z, y], -1))  # [B, S, S, 1]
  # [B, z_dim + y_dim]: z ~ N(0, I) and a random class code.
  code = ifcvae_gan.ZYSampler(parts.nets.z_dim, k)(None, k_prior, x.shape[0])
  x_prior = parts.decode(vae_params["decoder"], code)
  return mean, logvar, y_logits, x_rec, x_prior, eps, h


def reparameterise(mean, logvar, eps):
  """z = mean + sigma * eps."""
  return mean + jnp.exp(0.5 * logvar) * eps


def aux_codes(parts: IFcVAEGANParts, mean, logvar, eps):
  """The codes A reads (``model.aux_input``): the posterior mean or the sample z."""
  return mean if parts.model.aux_input == "mean" else reparameterise(mean, logvar, eps)


def mean_gap_codes(parts: IFcVAEGANParts, vae_params, h, eps):
  """The codes A reads, recomputed by the posterior head alone on the detached trunk
  features (``model.mean_gap_scope='head'``): the mean-gap term then clears z by the
  head without erasing the attribute from the features the class head reads."""
  mean, logvar = ifcvae_gan.posterior_from_features(vae_params["encoder"]["posterior"],
                                                    jax.lax.stop_gradient(h))
  return aux_codes(parts, mean, logvar, eps)


def encoder_aux_loss(parts: IFcVAEGANParts, aux_logits, labels):
  """The encoder's adversarial term ``[B]``: A's output towards uniform, or -CE."""
  k = parts.nets.num_classes
  if parts.model.aux_objective == "maximise":
    return -ifcvae_gan.y_cross_entropy(aux_logits, labels, k)
  return ifcvae_gan.uniform_cross_entropy(aux_logits, k)


def vae_loss(vae_params, parts: IFcVAEGANParts, params, x, labels, keys):
  """Phase 1's loss against the current A and D; aux: (terms, detachable outputs)."""
  model, k = parts.model, parts.nets.num_classes
  mean, logvar, y_logits, x_rec, x_prior, eps, h = forward(parts, vae_params, x, labels,
                                                           *keys)
  z_aux = aux_codes(parts, mean, logvar, eps)  # what A reads
  z_gap = z_aux if model.mean_gap_scope == "encoder" else mean_gap_codes(
      parts, vae_params, h, eps)
  recon = jnp.mean(jnp.square(x_rec - x))
  kl = jnp.mean(losses.gaussian_kl(mean, logvar))
  class_loss = jnp.mean(ifcvae_gan.y_cross_entropy(y_logits, labels, k))
  aux_uniform = jnp.mean(encoder_aux_loss(parts, parts.classify_code(params["aux"], z_aux),
                                          labels))
  g_gan = 0.5 * (losses.g_nonsaturating_loss(parts.discriminate(params["discriminator"], x_rec))
                 + losses.g_nonsaturating_loss(
                     parts.discriminate(params["discriminator"], x_prior)))
  mean_gap = ifcvae_gan.class_explained_variance(z_gap, labels, k)
  loss = (float(model.recon_weight) * recon + float(model.kl_weight) * kl
          + float(model.class_weight) * class_loss + float(model.aux_weight) * aux_uniform
          + float(model.gan_weight) * g_gan + float(model.mean_gap_weight) * mean_gap)
  terms = {"recon": recon, "kl": kl, "class_loss": class_loss,
           "aux_uniform": aux_uniform, "g_gan": g_gan, "mean_gap": mean_gap,
           "class_acc": jnp.mean(ifcvae_gan.y_predict(y_logits, k) == labels)}
  return loss, (terms, (z_aux, x_rec, x_prior))


def aux_loss(aux_params, parts: IFcVAEGANParts, z_aux, labels):
  """A's cross-entropy reading y from the (detached) codes; aux: its logits."""
  logits = parts.classify_code(aux_params, z_aux)
  return jnp.mean(ifcvae_gan.y_cross_entropy(logits, labels, parts.nets.num_classes)), logits


def aux_phase(parts: IFcVAEGANParts, aux_params, aux_opt, z_aux, labels):
  """``model.aux_steps`` Adam steps of A: (params, opt, first loss, first accuracy)."""

  def update(carry, _):
    params, opt = carry
    (loss, logits), grads = jax.value_and_grad(aux_loss, has_aux=True)(
        params, parts, z_aux, labels)
    return apply_gradients(parts.aux_tx, params, opt, grads), (loss, logits)

  (aux_params, aux_opt), (aux_losses, aux_logits) = jax.lax.scan(
      update, (aux_params, aux_opt), None, length=int(parts.model.aux_steps))
  # The first update's loss and accuracy: before this step's A updates.
  aux_acc = jnp.mean(ifcvae_gan.y_predict(aux_logits[0], parts.nets.num_classes) == labels)
  return aux_params, aux_opt, aux_losses[0], aux_acc


def discriminator_loss(d_params, parts: IFcVAEGANParts, x, x_rec, x_prior):
  """Real vs reconstructions and prior samples; aux: the real logits."""
  real = parts.discriminate(d_params, x)
  rec, prior = parts.discriminate(d_params, x_rec), parts.discriminate(d_params, x_prior)
  loss = jnp.mean(jax.nn.softplus(-real)) + 0.5 * (
      jnp.mean(jax.nn.softplus(rec)) + jnp.mean(jax.nn.softplus(prior)))
  return loss, real


def train_step(parts: IFcVAEGANParts, state: TrainState, batch: dict, key: jax.Array):
  """Encoder + decoder, then A, then D (see the module docstring)."""
  x = batch["image"]  # [B, S, S, 1]
  labels = batch_labels(batch, "ifcvae_gan")  # [B]
  params, opt = state.params, state.opt_state
  vae_params = {"encoder": params["encoder"], "decoder": params["decoder"]}
  (loss, (terms, outputs)), vae_grads = jax.value_and_grad(vae_loss, has_aux=True)(
      vae_params, parts, params, x, labels, jax.random.split(key))
  vae_params, vae_opt = apply_gradients(parts.vae_tx, vae_params, opt["vae"], vae_grads)
  z_aux, x_rec, x_prior = jax.lax.stop_gradient(outputs)
  aux_params, aux_opt, first_aux_loss, aux_acc = aux_phase(
      parts, params["aux"], opt["aux"], z_aux, labels)
  (d_loss, real_logits), d_grads = jax.value_and_grad(discriminator_loss, has_aux=True)(
      params["discriminator"], parts, x, x_rec, x_prior)
  d_params, d_opt = apply_gradients(parts.d_tx, params["discriminator"],
                                    opt["discriminator"], d_grads)
  new_state = state.replace(
      step=state.step + 1,
      params={"encoder": vae_params["encoder"], "decoder": vae_params["decoder"],
              "aux": aux_params, "discriminator": d_params},
      opt_state={"vae": vae_opt, "aux": aux_opt, "discriminator": d_opt})
  metrics = {"loss": loss, **terms, "aux_loss": first_aux_loss, "aux_acc": aux_acc,
             "d_loss": d_loss, "d_real": jnp.mean(jax.nn.sigmoid(real_logits)),
             "vae_grad_norm": optax.tree.norm(vae_grads),
             "d_grad_norm": optax.tree.norm(d_grads)}
  return new_state, float32_metrics(metrics)


def make_generator(config: ml_collections.ConfigDict, state: TrainState) -> Generator:
  """The decoder over ``concat(z, y)`` as a Generator."""
  return ifcvae_gan.make_decoder_generator(state.params, config)


def make_ifcvae_gan_trainer(config: ml_collections.ConfigDict) -> ModelTrainer:
  """The IFcVAE-GAN's :class:`ModelTrainer` for ``config`` (needs ``data.label_column``)."""
  check_labelled_config(config, "ifcvae_gan")
  parts = IFcVAEGANParts(ifcvae_gan.build(config), ifcvae_gan.model_settings(config),
                         make_optimizer(config, "g"), make_optimizer(config, "aux"),
                         make_optimizer(config, "d"))

  # A function of its own (not a partial): chex.assert_max_traces reads its source.
  def ifcvae_gan_step(state, batch, key):
    return train_step(parts, state, batch, key)

  return ModelTrainer(
      init=functools.partial(init_state, parts, config),
      train_step=ifcvae_gan_step,
      generator=functools.partial(make_generator, config),
      loss_terms=("loss", "recon", "kl", "class_loss", "aux_loss", "d_loss"),
      name="ifcvae_gan")
