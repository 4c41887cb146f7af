"""DCGAN training step: D then G on one fake batch, as the PyTorch DCGAN reference does.

State: params/opt_state = {'generator', 'discriminator'}; model_state = the BatchNorm
statistics {'generator', 'discriminator'}.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from jaxlatent.models import dcgan
from jaxlatent.training import losses
from jaxlatent.training.optim import apply_gradients, make_optimizer
from jaxlatent.training.trainers.state import (ModelTrainer, TrainState, first_state,
                                               float32_metrics)


@dataclasses.dataclass(frozen=True)
class DCGANParts:
  """The networks and optimizers of one DCGAN run."""

  generator: nn.Module
  discriminator: nn.Module
  g_tx: optax.GradientTransformation
  d_tx: optax.GradientTransformation


def init_state(parts: DCGANParts, key: jax.Array) -> TrainState:
  """Fresh parameters, optimizer states and BatchNorm statistics."""
  g, d = parts.generator, parts.discriminator
  kg, kd = jax.random.split(key)
  gv = g.init(kg, jnp.zeros((1, g.latent_dim), jnp.float32))
  dv = d.init(kd, jnp.zeros((1, g.image_size, g.image_size, 1), jnp.float32))
  params = {"generator": gv["params"], "discriminator": dv["params"]}
  return first_state(
      params, {"generator": parts.g_tx.init(params["generator"]),
               "discriminator": parts.d_tx.init(params["discriminator"])},
      model_state={"generator": gv.get("batch_stats", {}),
                   "discriminator": dv.get("batch_stats", {})})


def run_in_training_mode(module: nn.Module, params, batch_stats, x):
  """``module(x)`` with batch statistics -> (output, updated batch_stats)."""
  out, updated = module.apply({"params": params, "batch_stats": batch_stats}, x, train=True,
                              mutable=["batch_stats"])
  return out, updated.get("batch_stats", batch_stats)


def discriminator_loss(parts: DCGANParts, d_params, d_stats, real, fake):
  """Logistic loss of D on real vs fake; aux: (batch_stats, real logits, fake logits)."""
  real_logits, d_stats = run_in_training_mode(parts.discriminator, d_params, d_stats, real)
  fake_logits, d_stats = run_in_training_mode(parts.discriminator, d_params, d_stats, fake)
  return losses.d_logistic_loss(real_logits, fake_logits), (d_stats, real_logits, fake_logits)


def generator_loss(parts: DCGANParts, d_params, d_stats, fake):
  """Non-saturating loss of fake images under D; aux: the logits."""
  logits, _ = run_in_training_mode(parts.discriminator, d_params, d_stats, fake)
  return losses.g_nonsaturating_loss(logits), logits


def train_step(parts: DCGANParts, state: TrainState, batch: dict, key: jax.Array):
  """D then G on one fake batch.

  G runs forward once; its VJP is kept for the G update, which back-propagates the
  non-saturating loss through the *updated* D into that same forward pass.
  """
  real = batch["image"]  # [B, S, S, 1]
  g_params, d_params = state.params["generator"], state.params["discriminator"]
  g_stats, d_stats = state.model_state["generator"], state.model_state["discriminator"]
  z = jax.random.normal(key, (real.shape[0], parts.generator.latent_dim), jnp.float32)
  fake, g_vjp, g_stats = jax.vjp(
      lambda p: run_in_training_mode(parts.generator, p, g_stats, z), g_params, has_aux=True)

  (d_loss, (d_stats, real_logits, fake_logits)), d_grads = jax.value_and_grad(
      discriminator_loss, argnums=1, has_aux=True)(parts, d_params, d_stats, real, fake)
  d_params, d_opt = apply_gradients(parts.d_tx, d_params, state.opt_state["discriminator"],
                                    d_grads)

  (g_loss, g_logits), d_images = jax.value_and_grad(
      generator_loss, argnums=3, has_aux=True)(parts, d_params, d_stats, fake)
  (g_grads,) = g_vjp(d_images)
  g_params, g_opt = apply_gradients(parts.g_tx, g_params, state.opt_state["generator"],
                                    g_grads)

  new_state = state.replace(
      step=state.step + 1, params={"generator": g_params, "discriminator": d_params},
      opt_state={"generator": g_opt, "discriminator": d_opt},
      model_state={"generator": g_stats, "discriminator": d_stats})
  metrics = {
      "g_loss": g_loss, "d_loss": d_loss,
      "d_real": jnp.mean(jax.nn.sigmoid(real_logits)),  # D(x)
      "d_fake": jnp.mean(jax.nn.sigmoid(fake_logits)),  # D(G(z)) before the D update
      "d_fake_after": jnp.mean(jax.nn.sigmoid(g_logits)),  # after it
      "g_grad_norm": optax.tree.norm(g_grads), "d_grad_norm": optax.tree.norm(d_grads),
  }
  return new_state, float32_metrics(metrics)


def make_generator(config: ml_collections.ConfigDict, state: TrainState) -> Any:
  """The trained generator (running BatchNorm statistics) as a Generator."""
  variables = {"params": state.params["generator"]}
  if state.model_state["generator"]:
    variables["batch_stats"] = state.model_state["generator"]
  return dcgan.make_generator(variables, config)


def make_dcgan_trainer(config: ml_collections.ConfigDict) -> ModelTrainer:
  """The DCGAN's :class:`ModelTrainer` for ``config``."""
  parts = DCGANParts(dcgan.build_generator(config), dcgan.build_discriminator(config),
                     make_optimizer(config, "g"), make_optimizer(config, "d"))

  # A function of its own (not a partial): chex.assert_max_traces reads its source.
  def dcgan_step(state, batch, key):
    return train_step(parts, state, batch, key)

  return ModelTrainer(init=functools.partial(init_state, parts),
                      train_step=dcgan_step,
                      generator=functools.partial(make_generator, config),
                      loss_terms=("g_loss", "d_loss"), name="dcgan")
