"""VAE training step: one Adam step on the reconstruction + KL objective.

State: params = the VAE's params ({'encoder', 'decoder'}); one opt_state;
model_state = the BatchNorm statistics of Schön's networks ({} for arch='resample').
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
  """Fresh parameters, optimizer state and BatchNorm statistics."""
  size = parts.module.encoder.image_size
  variables = parts.module.init(key, jnp.zeros((1, size, size, 1), jnp.float32),
                                jax.random.key(0))
  params = variables["params"]
  return first_state(params, parts.tx.init(params),
                     model_state=variables.get("batch_stats", {}))


def objective(parts: VAEParts, params, batch_stats, x: jax.Array, key: jax.Array):
  """The configured loss of a reparameterised pass in training mode: reconstruction
  and KL terms; aux also carries the updated BatchNorm statistics."""
  k_eps, k_rrelu = jax.random.split(key)
  (x_hat, mean, logvar), updated = parts.module.apply(
      {"params": params, "batch_stats": batch_stats}, x, k_eps, train=True,
      rngs={"rrelu": k_rrelu}, mutable=["batch_stats"])
  loss = parts.loss
  if loss.loss == "log_mse_kl":
    value, terms = losses.log_mse_kl_loss(x, x_hat, mean, logvar, loss.kl_weight)
  else:
    value, terms = losses.elbo_loss(x, x_hat, mean, logvar, loss.sigma, loss.beta)
  return value, (terms, updated.get("batch_stats", batch_stats))


def train_step(parts: VAEParts, state: TrainState, batch: dict, key: jax.Array):
  """One gradient step on ``batch['image']`` ``[B, S, S, 1]``."""
  (loss, (terms, stats)), grads = jax.value_and_grad(objective, argnums=1, has_aux=True)(
      parts, state.params, state.model_state, batch["image"], key)
  params, opt_state = apply_gradients(parts.tx, state.params, state.opt_state, grads)
  metrics = {"loss": loss, **terms, "grad_norm": optax.tree.norm(grads)}
  return (state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                        model_state=stats),
          float32_metrics(metrics))


def make_generator(config: ml_collections.ConfigDict, state: TrainState) -> Generator:
  """The decoder as a Generator (eval mode: running BatchNorm statistics)."""
  variables = {"params": state.params}
  if state.model_state:
    variables["batch_stats"] = state.model_state
  return vae.make_decoder_generator(variables, config)


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
