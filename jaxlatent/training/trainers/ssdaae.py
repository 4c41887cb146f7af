"""Semi-supervised denoising AAE training step: two phases per step.

1. Latent discriminators (:func:`latent_discriminator_phase`): ``D_z``: N(0, I)
   samples vs ``z = Enc_z(C(x))``; ``D_y``: uniform one-hot codes vs
   ``softmax(Enc_y(C(x)))`` (logistic losses).
2. Autoencoder (:func:`autoencoder_loss`): ``recon_weight * MSE(Dec(z, softmax(y)), x)``
   (clean target) ``+ adv_weight * softplus(-D_z(z)) + cat_adv_weight *
   softplus(-D_y(y)) + class_weight * CE(y_logits, label)`` averaged over the labelled
   examples of the batch only (0 when none is labelled).

Metrics include ``labelled_acc`` (head accuracy on the labelled examples),
``batch_acc`` (on every example of the batch: monitoring only, no gradient) and
``num_labelled`` / ``labelled_frac``.  The labelled subset is fixed per example
(:func:`jaxlatent.models.ssdaae.batch_labelled`): ``batch['labelled']`` when given,
else a seeded draw per dataset index from ``batch['index']`` (the trainer sets
``needs_index``, so the loop adds it), else per image content; either way a resumed
run uses the same labelled examples.

State: params/opt_state = {'encoder', 'decoder', 'disc_z', 'disc_y'} / {'ae', 'disc_z',
'disc_y'}: one Adam for the autoencoder, one for each latent discriminator.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import ml_collections
import optax

from jaxlatent.generator import Generator
from jaxlatent.models import ssdaae
from jaxlatent.training import losses
from jaxlatent.training.optim import apply_gradients, make_optimizer
from jaxlatent.training.trainers.labels import batch_labels, check_labelled_config
from jaxlatent.training.trainers.state import (ModelTrainer, TrainState, first_state,
                                               float32_metrics)


@dataclasses.dataclass(frozen=True)
class SSDAAEParts:
  """The networks, settings and optimizers of one semi-supervised DAAE run."""

  nets: ssdaae.SSDAAE
  model: ssdaae.SSDAAESettings
  ae_tx: optax.GradientTransformation
  d_tx: optax.GradientTransformation

  def encode(self, params, x):
    return self.nets.encoder.apply({"params": params}, x)

  def decode(self, params, code):
    return self.nets.decoder.apply({"params": params}, code)

  def judge_z(self, params, z):
    return self.nets.disc_z.apply({"params": params}, z)

  def judge_y(self, params, y):
    return self.nets.disc_y.apply({"params": params}, y)


def init_state(parts: SSDAAEParts, config: ml_collections.ConfigDict, key: jax.Array
               ) -> TrainState:
  """Fresh parameters and the three optimizer states."""
  params = ssdaae.init_params(config, key)
  ae_params = {"encoder": params["encoder"], "decoder": params["decoder"]}
  return first_state(params, {"ae": parts.ae_tx.init(ae_params),
                              "disc_z": parts.d_tx.init(params["disc_z"]),
                              "disc_y": parts.d_tx.init(params["disc_y"])})


def latent_discriminator_phase(parts: SSDAAEParts, state: TrainState, x_tilde, keys):
  """One step of D_z and of D_y (encoder fixed): (params, opts, losses)."""
  params, opt = state.params, state.opt_state
  k = parts.nets.num_classes
  z, logits = jax.lax.stop_gradient(parts.encode(params["encoder"], x_tilde))
  z_prior = jax.random.normal(keys[0], z.shape)
  y_prior = jax.nn.one_hot(jax.random.randint(keys[1], (z.shape[0],), 0, k), k)
  dz_loss, dz_grads = jax.value_and_grad(
      lambda p: losses.d_logistic_loss(parts.judge_z(p, z_prior), parts.judge_z(p, z)))(
          params["disc_z"])
  dz_params, dz_opt = apply_gradients(parts.d_tx, params["disc_z"], opt["disc_z"], dz_grads)
  dy_loss, dy_grads = jax.value_and_grad(
      lambda p: losses.d_logistic_loss(parts.judge_y(p, y_prior),
                                       parts.judge_y(p, jax.nn.softmax(logits))))(
          params["disc_y"])
  dy_params, dy_opt = apply_gradients(parts.d_tx, params["disc_y"], opt["disc_y"], dy_grads)
  return (dz_params, dy_params), (dz_opt, dy_opt), (dz_loss, dy_loss)


def autoencoder_loss(ae_params, parts: SSDAAEParts, disc_params, x, x_tilde, labels,
                     labelled):
  """Reconstruction, latent regularisation and the labelled CE; aux: the terms."""
  model = parts.model
  dz_params, dy_params = disc_params
  z, logits = parts.encode(ae_params["encoder"], x_tilde)
  y = jax.nn.softmax(logits)
  x_rec = parts.decode(ae_params["decoder"], jnp.concatenate([z, y], -1))  # [B, S, S, 1]
  recon = jnp.mean(jnp.square(x_rec - x))
  g_z = losses.g_nonsaturating_loss(parts.judge_z(dz_params, z))
  g_y = losses.g_nonsaturating_loss(parts.judge_y(dy_params, y))
  ce = -jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], -1)[:, 0]
  num_labelled = jnp.maximum(jnp.sum(labelled), 1.0)
  class_loss = jnp.sum(labelled * ce) / num_labelled
  loss = (float(model.recon_weight) * recon + float(model.adv_weight) * g_z
          + float(model.cat_adv_weight) * g_y + float(model.class_weight) * class_loss)
  correct = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
  return loss, {"recon": recon, "g_z": g_z, "g_y": g_y, "class_loss": class_loss,
                "labelled_acc": jnp.sum(labelled * correct) / num_labelled,
                "batch_acc": jnp.mean(correct)}


def train_step(parts: SSDAAEParts, state: TrainState, batch: dict, key: jax.Array):
  """Latent discriminators, then the autoencoder (see the module docstring)."""
  model = parts.model
  x = batch["image"]  # [B, S, S, 1]
  labels = batch_labels(batch, "ssdaae")  # [B]
  labelled = ssdaae.batch_labelled(batch, float(model.labelled_fraction),
                                int(model.label_seed)).astype(jnp.float32)  # [B]
  k_corrupt, k_z, k_y = jax.random.split(key, 3)
  x_tilde = ssdaae.corrupt(x, k_corrupt, float(model.noise_std), float(model.dropout))  # C(x~|x)
  disc_params, (dz_opt, dy_opt), (dz_loss, dy_loss) = latent_discriminator_phase(
      parts, state, x_tilde, (k_z, k_y))
  ae_params = {"encoder": state.params["encoder"], "decoder": state.params["decoder"]}
  (loss, terms), ae_grads = jax.value_and_grad(autoencoder_loss, has_aux=True)(
      ae_params, parts, disc_params, x, x_tilde, labels, labelled)
  ae_params, ae_opt = apply_gradients(parts.ae_tx, ae_params, state.opt_state["ae"], ae_grads)
  new_state = state.replace(
      step=state.step + 1,
      params={"encoder": ae_params["encoder"], "decoder": ae_params["decoder"],
              "disc_z": disc_params[0], "disc_y": disc_params[1]},
      opt_state={"ae": ae_opt, "disc_z": dz_opt, "disc_y": dy_opt})
  metrics = {"loss": loss, **terms, "d_z_loss": dz_loss, "d_y_loss": dy_loss,
             "labelled_frac": jnp.mean(labelled), "num_labelled": jnp.sum(labelled),
             "ae_grad_norm": optax.tree.norm(ae_grads)}
  return new_state, float32_metrics(metrics)


def make_generator(config: ml_collections.ConfigDict, state: TrainState) -> Generator:
  """The decoder over ``concat(z, y_onehot)`` as a Generator."""
  return ssdaae.make_decoder_generator(state.params, config)


def make_ssdaae_trainer(config: ml_collections.ConfigDict) -> ModelTrainer:
  """The semi-supervised DAAE's :class:`ModelTrainer` (needs ``data.label_column``).

  ``needs_index`` is set: the loop's batches carry ``'index'``, so the labelled subset
  is the per-index draw of :func:`jaxlatent.models.ssdaae.labelled_mask`.
  """
  check_labelled_config(config, "ssdaae")
  parts = SSDAAEParts(ssdaae.build(config), ssdaae.model_settings(config),
                      make_optimizer(config, "g"), make_optimizer(config, "d"))

  # A function of its own (not a partial): chex.assert_max_traces reads its source.
  def ssdaae_step(state, batch, key):
    return train_step(parts, state, batch, key)

  return ModelTrainer(
      init=functools.partial(init_state, parts, config),
      train_step=ssdaae_step,
      generator=functools.partial(make_generator, config),
      loss_terms=("loss", "recon", "class_loss", "d_z_loss", "d_y_loss"),
      name="ssdaae", needs_index=True)
