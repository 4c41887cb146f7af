"""VAE training step: one Adam step on the reconstruction + KL objective.

State: params = the VAE's params ({'encoder', 'decoder'}); one opt_state.
"""

from __future__ import annotations

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from jaxlatent.generator import Generator
from jaxlatent.models import vae
from jaxlatent.training import losses
from jaxlatent.training.optim import apply_gradients, make_optimizer
from jaxlatent.training.trainers.state import (ModelTrainer, TrainState, first_state,
                                               float32_metrics)


@dataclasses.dataclass(frozen=True)
class VAEParts:
  """The network, objective and optimizer of one VAE run."""

  module: nn.Module
  loss: vae.VAELoss
  tx: optax.GradientTransformation


def init_state(parts: VAEParts, key: jax.Array) -> TrainState:
  """Fresh parameters and optimizer state."""
  size = parts.module.encoder.image_size
  params = parts.module.init(key, jnp.zeros((1, size, size, 1), jnp.float32),
                             jax.random.key(0))["params"]
  return first_state(params, parts.tx.init(params))


def objective(parts: VAEParts, params, x: jax.Array, key: jax.Array):
  """The configured loss of a reparameterised pass: reconstruction and KL terms."""
  x_hat, mean, logvar = parts.module.apply({"params": params}, x, key)
  loss = parts.loss
  if loss.loss == "log_mse_kl":
    return losses.log_mse_kl_loss(x, x_hat, mean, logvar, loss.kl_weight)
  return losses.elbo_loss(x, x_hat, mean, logvar, loss.sigma, loss.beta)


def train_step(parts: VAEParts, state: TrainState, batch: dict, key: jax.Array):
  """One gradient step on ``batch['image']`` ``[B, S, S, 1]``."""
  (loss, terms), grads = jax.value_and_grad(objective, argnums=1, has_aux=True)(
      parts, state.params, batch["image"], key)
  params, opt_state = apply_gradients(parts.tx, state.params, state.opt_state, grads)
  metrics = {"loss": loss, **terms, "grad_norm": optax.tree.norm(grads)}
  return (state.replace(step=state.step + 1, params=params, opt_state=opt_state),
          float32_metrics(metrics))


def make_generator(config: ml_collections.ConfigDict, state: TrainState) -> Generator:
  """The decoder as a Generator."""
  return vae.make_decoder_generator({"params": state.params}, config)


def make_vae_trainer(config: ml_collections.ConfigDict) -> ModelTrainer:
  """The VAE's :class:`ModelTrainer` for ``config``."""
  parts = VAEParts(vae.build_vae(config), vae.loss_settings(config), make_optimizer(config))

  # A function of its own (not a partial): chex.assert_max_traces reads its source.
  def vae_step(state, batch, key):
    return train_step(parts, state, batch, key)

  return ModelTrainer(init=functools.partial(init_state, parts),
                      train_step=vae_step,
                      generator=functools.partial(make_generator, config),
                      loss_terms=("loss", "recon", "kl"), name="vae")
