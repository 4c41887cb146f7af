"""DCGAN training step: D then G on one fake batch, as Schön et al.'s PyTorch loop does.

Loss phases: D main (:func:`discriminator_loss`: BCE on real images vs smoothed labels
and on fakes vs 0), G main (:func:`generator_loss`: BCE of D(G(z)) vs 1); every
discriminator input optionally gets instance noise (:func:`discriminator_input`).

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

from jaxlatent.errors import ConfigError
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
  training: dcgan.DCGANTraining = dcgan.DCGANTraining()
  steps_per_epoch: int = 0  # of the instance-noise schedule


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


def discriminator_input(images: jax.Array, key: jax.Array, noise_std: jax.Array | None
                        ) -> jax.Array:
  """What D sees: ``images`` plus N(0, noise_std^2) instance noise, clamped to [-1, 1]
  (Schön et al.'s ``Discriminator.forward``); ``noise_std`` None: ``images`` as they are."""
  if noise_std is None:
    return images
  return jnp.clip(images + noise_std * jax.random.normal(key, images.shape, images.dtype),
                  -1.0, 1.0)


def discriminator_loss(parts: DCGANParts, d_params, d_stats, real, fake, real_labels,
                       keys, noise_std):
  """D main: BCE of D on real (vs ``real_labels``) and fake (vs 0), each a batch mean,
  summed; aux: (batch_stats, real logits, fake logits).  ``keys``: the instance noise
  of the real and the fake pass."""
  real_logits, d_stats = run_in_training_mode(
      parts.discriminator, d_params, d_stats, discriminator_input(real, keys[0], noise_std))
  fake_logits, d_stats = run_in_training_mode(
      parts.discriminator, d_params, d_stats, discriminator_input(fake, keys[1], noise_std))
  loss = (jnp.mean(optax.sigmoid_binary_cross_entropy(real_logits, real_labels))
          + jnp.mean(optax.sigmoid_binary_cross_entropy(fake_logits,
                                                        jnp.zeros_like(fake_logits))))
  return loss, (d_stats, real_logits, fake_logits)


def generator_loss(parts: DCGANParts, d_params, d_stats, fake, key, noise_std):
  """G main: BCE of D(fake) vs 1 (the non-saturating loss); aux: (logits, batch_stats:
  D runs in training mode, so its running statistics see this pass too)."""
  logits, d_stats = run_in_training_mode(parts.discriminator, d_params, d_stats,
                                         discriminator_input(fake, key, noise_std))
  return losses.g_nonsaturating_loss(logits), (logits, d_stats)


def real_labels(training: dcgan.DCGANTraining, key: jax.Array, batch: int) -> jax.Array:
  """Targets of real images: U{0.900, ..., 0.999} (``label_smoothing``) or 1."""
  if not training.label_smoothing:
    return jnp.ones((batch,), jnp.float32)
  return jax.random.randint(key, (batch,), 900, 1000).astype(jnp.float32) / 1000.0


def noise_std_at(training: dcgan.DCGANTraining, steps_per_epoch: int, step: jax.Array):
  """Instance noise std at ``step`` (None when instance noise is off)."""
  if not training.instance_noise:
    return None
  return dcgan.instance_noise_std(step // steps_per_epoch)


def train_step(parts: DCGANParts, state: TrainState, batch: dict, key: jax.Array):
  """D then G on one fake batch (Schön et al.'s ``Training/TrainGAN.py``).

  G runs forward once; its VJP is kept for the G update, which back-propagates the
  non-saturating loss through the *updated* D into that same forward pass.
  """
  real = batch["image"]  # [B, S, S, 1]
  b = real.shape[0]
  g_params, d_params = state.params["generator"], state.params["discriminator"]
  g_stats, d_stats = state.model_state["generator"], state.model_state["discriminator"]
  k_z, k_label, k_real, k_fake, k_g = jax.random.split(key, 5)
  noise_std = noise_std_at(parts.training, parts.steps_per_epoch, state.step)
  z = jax.random.normal(k_z, (b, parts.generator.latent_dim), jnp.float32)
  fake, g_vjp, g_stats = jax.vjp(
      lambda p: run_in_training_mode(parts.generator, p, g_stats, z), g_params, has_aux=True)

  (d_loss, (d_stats, real_logits, fake_logits)), d_grads = jax.value_and_grad(
      discriminator_loss, argnums=1, has_aux=True)(
          parts, d_params, d_stats, real, fake, real_labels(parts.training, k_label, b),
          (k_real, k_fake), noise_std)
  d_params, d_opt = apply_gradients(parts.d_tx, d_params, state.opt_state["discriminator"],
                                    d_grads)

  (g_loss, (g_logits, d_stats)), d_images = jax.value_and_grad(
      generator_loss, argnums=3, has_aux=True)(parts, d_params, d_stats, fake, k_g, noise_std)
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
  if noise_std is not None:
    metrics["instance_noise_std"] = noise_std
  return new_state, float32_metrics(metrics)


def steps_per_epoch(config: ml_collections.ConfigDict, training: dcgan.DCGANTraining) -> int:
  """Steps of one epoch for the instance-noise schedule (0 when the noise is off)."""
  if not training.instance_noise:
    return 0
  if training.steps_per_epoch:
    return int(training.steps_per_epoch)
  data = config.get("data", None)
  if data is None or not str(data.get("source", "")).startswith("phantom"):
    raise ConfigError("model.instance_noise=True needs model.steps_per_epoch (training "
                      "images // batch_size) unless data.source is a phantom")
  held = config.fid_num_samples if config.fid_every > 0 else 0
  return max(1, (int(data.num_images) - int(held)) // int(config.batch_size))


def make_generator(config: ml_collections.ConfigDict, state: TrainState) -> Any:
  """The trained generator (running BatchNorm statistics) as a Generator."""
  variables = {"params": state.params["generator"]}
  if state.model_state["generator"]:
    variables["batch_stats"] = state.model_state["generator"]
  return dcgan.make_generator(variables, config)


def make_dcgan_trainer(config: ml_collections.ConfigDict) -> ModelTrainer:
  """The DCGAN's :class:`ModelTrainer` for ``config``."""
  training = dcgan.training_settings(config)
  parts = DCGANParts(dcgan.build_generator(config), dcgan.build_discriminator(config),
                     make_optimizer(config, "g"), make_optimizer(config, "d"), training,
                     steps_per_epoch(config, training))

  # A function of its own (not a partial): chex.assert_max_traces reads its source.
  def dcgan_step(state, batch, key):
    return train_step(parts, state, batch, key)

  return ModelTrainer(init=functools.partial(init_state, parts),
                      train_step=dcgan_step,
                      generator=functools.partial(make_generator, config),
                      loss_terms=("g_loss", "d_loss"), name="dcgan")
