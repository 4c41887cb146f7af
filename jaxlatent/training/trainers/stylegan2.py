"""StyleGAN2 training step: non-saturating logistic loss, lazy R1 and path-length.

One step runs the four stylegan2-ada phases (``training/loss.py`` there): G main,
G reg (path length, every ``pl_interval`` steps), D main, D reg (R1, every
``r1_interval`` steps), then the generator EMA update.  With ``phase=(pl_now, r1_now)``
(static: ``trainer.phase(step)``, what the loop passes) the reg phases are Python
branches, one program per phase; without it they are ``lax.cond``s on ``state.step``
(one program, but XLA:CPU runs the branches far slower).  Each network has one Adam
whose lr and betas are rescaled by c / (c + 1) (lazy regularisation); reg losses are
multiplied by their interval.

State: params/opt_state = {'generator', 'discriminator'}; ema_params = the G EMA;
model_state = {'stats': {'w_avg'}, 'noise_const', 'pl_mean', 'r1', 'pl'}.
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

from jaxlatent.generator import Generator
from jaxlatent.models import stylegan2
from jaxlatent.training import losses
from jaxlatent.training.optim import apply_gradients, make_optimizer
from jaxlatent.training.trainers.state import (ModelTrainer, TrainState, first_state,
                                               float32_metrics)


@dataclasses.dataclass(frozen=True)
class StyleGAN2Parts:
  """The networks, loss settings and optimizers of one StyleGAN2 run."""

  generator: nn.Module
  discriminator: nn.Module
  loss: stylegan2.StyleGAN2Loss
  g_tx: optax.GradientTransformation
  d_tx: optax.GradientTransformation


def lazy_ratio(interval: int, on: bool) -> float:
  """c / (c + 1) for lazy regularisation every c steps (1 when off)."""
  return interval / (interval + 1.0) if on and interval > 0 else 1.0


def init_state(parts: StyleGAN2Parts, key: jax.Array) -> TrainState:
  """Fresh parameters, optimizer states, const noise, w_avg and the G EMA."""
  g, size = parts.generator, parts.generator.img_resolution
  kg, kd = jax.random.split(key)
  gv = g.init(kg, jnp.zeros((1, g.z_dim), jnp.float32), noise_mode="const")
  dv = parts.discriminator.init(kd, jnp.zeros((1, size, size, 1), jnp.float32))
  params = {"generator": gv["params"], "discriminator": dv["params"]}
  zero = lambda: jnp.zeros((), jnp.float32)  # distinct buffers: the state is donated
  return first_state(
      params, {"generator": parts.g_tx.init(params["generator"]),
               "discriminator": parts.d_tx.init(params["discriminator"])},
      model_state={"stats": gv["stats"], "noise_const": gv["noise_const"],
                   "pl_mean": zero(), "r1": zero(), "pl": zero()},
      ema_params=jax.tree.map(jnp.copy, params["generator"]))


def generator_variables(g_params, model_state) -> dict[str, Any]:
  return {"params": g_params, "stats": model_state["stats"],
          "noise_const": model_state["noise_const"]}


def run_mapping(parts: StyleGAN2Parts, g_params, model_state, z, key, update_emas: bool):
  """z -> ws with style mixing; returns (ws, stats after the w_avg update)."""
  g, variables = parts.generator, generator_variables(g_params, model_state)
  ws, updated = g.apply(variables, z, update_emas=update_emas, method="map", mutable=["stats"])
  mixing_prob = parts.loss.style_mixing_prob
  if mixing_prob > 0:
    k_z, k_mix = jax.random.split(key)
    ws2 = g.apply(variables, jax.random.normal(k_z, z.shape, z.dtype), method="map")
    ws = stylegan2.mix_styles(ws, ws2, k_mix, mixing_prob)
  return ws, updated["stats"]


def run_synthesis(parts: StyleGAN2Parts, g_params, model_state, ws, key):
  return parts.generator.apply(generator_variables(g_params, model_state), ws, "random",
                               method="synthesize", rngs={"noise": key})


def run_discriminator(parts: StyleGAN2Parts, d_params, x):
  return parts.discriminator.apply({"params": d_params}, x)


def g_main_loss(g_params, parts: StyleGAN2Parts, model_state, d_params, z, keys):
  """softplus(-D(G(z))); the mapping's w_avg is updated from this batch (aux: stats)."""
  ws, stats = run_mapping(parts, g_params, model_state, z, keys[0], True)
  logits = run_discriminator(parts, d_params, run_synthesis(parts, g_params, model_state,
                                                            ws, keys[1]))
  return losses.g_nonsaturating_loss(logits), stats


def path_length_loss(g_params, parts: StyleGAN2Parts, model_state, pl_mean, z, pl_noise,
                     keys):
  """The path-length penalty times its weight and interval; aux: (new mean, penalty)."""
  loss = parts.loss
  ws, _ = run_mapping(parts, g_params, model_state, z, keys[0], False)
  lengths = losses.path_lengths(
      lambda w: run_synthesis(parts, g_params, model_state, w, keys[1]), ws, pl_noise)
  new_mean = jax.lax.stop_gradient(pl_mean + loss.pl_decay * (jnp.mean(lengths) - pl_mean))
  penalty = jnp.mean(jnp.square(lengths - new_mean))
  return penalty * loss.pl_weight * loss.pl_interval, (new_mean, penalty)


def g_reg_phase(parts: StyleGAN2Parts, model_state, batch_size: int, keys, operand):
  """One Adam step on the path-length penalty: ``(g_params, g_opt, pl_mean)`` ->
  ``(g_params, g_opt, pl_mean, penalty)``."""
  g_params, g_opt, pl_mean = operand
  size = parts.generator.img_resolution
  pl_batch = max(batch_size // parts.loss.pl_batch_shrink, 1)
  z = jax.random.normal(keys[0], (pl_batch, parts.generator.z_dim), jnp.float32)
  pl_noise = jax.random.normal(keys[1], (pl_batch, size, size, 1)) / size  # / sqrt(H W)
  (_, (pl_mean, penalty)), grads = jax.value_and_grad(path_length_loss, has_aux=True)(
      g_params, parts, model_state, pl_mean, z, pl_noise, keys[2:])
  g_params, g_opt = apply_gradients(parts.g_tx, g_params, g_opt, grads)
  return g_params, g_opt, pl_mean, penalty


def d_main_loss(d_params, parts: StyleGAN2Parts, real, fake):
  """softplus(D(G(z))) + softplus(-D(x)); aux: (real logits, fake logits)."""
  real_logits = run_discriminator(parts, d_params, real)
  fake_logits = run_discriminator(parts, d_params, fake)
  return losses.d_logistic_loss(real_logits, fake_logits), (real_logits, fake_logits)


def r1_loss(d_params, parts: StyleGAN2Parts, real):
  """The R1 penalty times gamma / 2 and its interval; aux: the penalty."""
  penalty = jnp.mean(losses.r1_penalty(lambda x: run_discriminator(parts, d_params, x), real))
  return penalty * (parts.loss.r1_gamma / 2) * parts.loss.r1_interval, penalty


def d_reg_phase(parts: StyleGAN2Parts, real, operand):
  """One Adam step on R1: ``(d_params, d_opt)`` -> ``(d_params, d_opt, penalty)``."""
  d_params, d_opt = operand
  (_, penalty), grads = jax.value_and_grad(r1_loss, has_aux=True)(d_params, parts, real)
  d_params, d_opt = apply_gradients(parts.d_tx, d_params, d_opt, grads)
  return d_params, d_opt, penalty


def reg_phase(loss: stylegan2.StyleGAN2Loss, step: int) -> tuple[bool, bool]:
  """(path-length step?, R1 step?) of the Python step number ``step``."""
  return (loss.do_pl and step % loss.pl_interval == 0,
          loss.do_r1 and step % loss.r1_interval == 0)


def run_if_due(now: bool | None, pred, branch, skip, operand):
  """``branch(operand)`` where due: static ``now`` if given, else ``lax.cond(pred)``."""
  if now is None:
    return jax.lax.cond(pred, branch, skip, operand)
  return branch(operand) if now else skip(operand)


def generator_phases(parts, state, batch_size, keys, pl_now):
  """G main, then G reg where due: (g_params, g_opt, model_state, g_loss, g_grads)."""
  loss, model_state = parts.loss, state.model_state
  g_params, d_params = state.params["generator"], state.params["discriminator"]
  z = jax.random.normal(keys[0], (batch_size, parts.generator.z_dim), jnp.float32)
  (g_loss, stats), g_grads = jax.value_and_grad(g_main_loss, has_aux=True)(
      g_params, parts, model_state, d_params, z, keys[1:3])
  g_params, g_opt = apply_gradients(parts.g_tx, g_params, state.opt_state["generator"],
                                    g_grads)
  model_state = {**model_state, "stats": stats}
  pl_mean, pl_penalty = model_state["pl_mean"], model_state["pl"]
  if loss.do_pl:
    g_reg = functools.partial(g_reg_phase, parts, model_state, batch_size, keys[3:7])
    g_params, g_opt, pl_mean, pl_penalty = run_if_due(
        pl_now, state.step % loss.pl_interval == 0, g_reg,
        lambda operand: (*operand, model_state["pl"]), (g_params, g_opt, pl_mean))
  model_state = {**model_state, "pl_mean": pl_mean, "pl": pl_penalty}
  return g_params, g_opt, model_state, g_loss, g_grads


def discriminator_phases(parts, state, g_params, model_state, real, keys, r1_now):
  """D main on fresh fakes, then D reg where due: (d_params, d_opt, r1, d_loss, logits,
  d_grads)."""
  loss = parts.loss
  z = jax.random.normal(keys[0], (real.shape[0], parts.generator.z_dim), jnp.float32)
  k_map, k_syn = jax.random.split(keys[1])
  ws, _ = run_mapping(parts, g_params, model_state, z, k_map, False)
  fake = jax.lax.stop_gradient(run_synthesis(parts, g_params, model_state, ws, k_syn))
  (d_loss, logits), d_grads = jax.value_and_grad(d_main_loss, has_aux=True)(
      state.params["discriminator"], parts, real, fake)
  d_params, d_opt = apply_gradients(parts.d_tx, state.params["discriminator"],
                                    state.opt_state["discriminator"], d_grads)
  r1 = model_state["r1"]
  if loss.do_r1:
    d_params, d_opt, r1 = run_if_due(
        r1_now, state.step % loss.r1_interval == 0,
        functools.partial(d_reg_phase, parts, real),
        lambda operand: (*operand, model_state["r1"]), (d_params, d_opt))
  return d_params, d_opt, r1, d_loss, logits, d_grads


def train_step(parts: StyleGAN2Parts, state: TrainState, batch: dict, key: jax.Array,
               phase=None):
  """The four phases and the EMA update (see the module docstring)."""
  real = batch["image"]  # [B, R, R, 1]
  b = real.shape[0]
  pl_now, r1_now = (None, None) if phase is None else (bool(phase[0]), bool(phase[1]))
  keys = jax.random.split(key, 9)
  g_params, g_opt, model_state, g_loss, g_grads = generator_phases(
      parts, state, b, keys[:7], pl_now)
  d_params, d_opt, r1, d_loss, (real_logits, fake_logits), d_grads = discriminator_phases(
      parts, state, g_params, model_state, real, keys[7:], r1_now)
  # G EMA with a half-life in images (ramped up early on).
  beta = losses.ema_beta(state.step, b, parts.loss.ema_images, parts.loss.ema_rampup)
  ema = losses.ema_update(state.ema_params, g_params, beta)
  new_state = state.replace(
      step=state.step + 1, params={"generator": g_params, "discriminator": d_params},
      opt_state={"generator": g_opt, "discriminator": d_opt},
      model_state={**model_state, "r1": r1}, ema_params=ema)
  metrics = {
      "g_loss": g_loss, "d_loss": d_loss,
      "d_real": jnp.mean(jax.nn.sigmoid(real_logits)),  # D(x) as a probability
      "d_fake": jnp.mean(jax.nn.sigmoid(fake_logits)),  # D(G(z))
      "r1": r1, "pl": model_state["pl"], "pl_mean": model_state["pl_mean"], "ema_beta": beta,
      "g_grad_norm": optax.tree.norm(g_grads), "d_grad_norm": optax.tree.norm(d_grads),
  }
  return new_state, float32_metrics(metrics)


def make_generator(config: ml_collections.ConfigDict, state: TrainState) -> Generator:
  """The EMA generator in z space."""
  variables = {"params": state.ema_params, "stats": state.model_state["stats"],
               "noise_const": state.model_state["noise_const"]}
  return stylegan2.make_generator(variables, config, "z")


def make_stylegan2_trainer(config: ml_collections.ConfigDict) -> ModelTrainer:
  """The StyleGAN2's :class:`ModelTrainer` for ``config``."""
  loss = stylegan2.loss_settings(config)
  parts = StyleGAN2Parts(
      stylegan2.build_generator(config), stylegan2.build_discriminator(config), loss,
      make_optimizer(config, "g", lazy_ratio(loss.pl_interval, loss.do_pl)),
      make_optimizer(config, "d", lazy_ratio(loss.r1_interval, loss.do_r1)))

  # A function of its own (not a partial): chex.assert_max_traces reads its source.
  def stylegan2_step(state, batch, key, phase=None):
    return train_step(parts, state, batch, key, phase)

  return ModelTrainer(init=functools.partial(init_state, parts),
                      train_step=stylegan2_step,
                      generator=functools.partial(make_generator, config),
                      loss_terms=("g_loss", "d_loss", "r1", "pl"), name="stylegan2",
                      phase=functools.partial(reg_phase, loss))
