"""StyleGAN2 training step: non-saturating logistic loss, lazy R1 and path-length, ADA.

Trains ``model.name='stylegan2'`` (the official networks,
:mod:`jaxlatent.models.stylegan2`) and ``'stylegan2_simple'``.  One step runs the
four stylegan2-ada phases (``training/loss.py`` there): G main, G reg (path length,
every ``pl_interval`` steps), D main, D reg (R1, every ``r1_interval`` steps), then
the generator EMA update and, with ``augment.mode='ada'``, the adjustment of the
augmentation probability p (:func:`jaxlatent.training.augment.ada_update`, every
``augment.interval`` steps).  With ``augment.mode`` 'ada' or 'fixed' every image the
discriminator sees (fakes in G main, fakes and reals in D main, reals in R1) goes
through :func:`jaxlatent.training.augment.augment` with the current p.  With ``phase=(pl_now, r1_now)``
(static: ``trainer.phase(step)``, what the loop passes) the reg phases are Python
branches, one program per phase; without it they are ``lax.cond``s on ``state.step``
(one program, but XLA:CPU runs the branches far slower).  Each network has one Adam
whose lr and betas are rescaled by c / (c + 1) (lazy regularisation); reg losses are
multiplied by their interval.

State: params/opt_state = {'generator', 'discriminator'}; ema_params = the G EMA;
model_state = {'buffers' (G's w_avg, const noise, filters), 'd_buffers' (D's
filters), 'pl_mean', 'r1', 'pl', 'ada'} for 'stylegan2' ('stats' and 'noise_const'
instead of the buffers for 'stylegan2_simple'); ``model_state['ada']`` holds p and
its sign statistics (:class:`~jaxlatent.training.augment.AdaState` fields), so a
resumed run continues with the same p.  G and the EMA generator share the buffers
(the reference copies G's into G_ema every step).  ``'ada'`` is there only when
``augment.mode`` is not 'off'.
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

from jaxlatent.errors import ConfigError, DataError
from jaxlatent.generator import Generator
from jaxlatent.models import stylegan2, stylegan2_simple
from jaxlatent.training import augment as ada
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
  official: bool = True  # model 'stylegan2' (else 'stylegan2_simple')
  augment: ada.AugmentSpec | None = None  # None: D sees the images as they are
  ada_target: float | None = None  # set: p adapts (augment.mode='ada')
  ada_interval: int = 4
  ada_kimg: float = 500.0
  ada_p0: float = 0.0  # the initial p

  @property
  def img_channels(self) -> int:
    return int(getattr(self.generator, "img_channels", 1))


def lazy_ratio(interval: int, on: bool) -> float:
  """c / (c + 1) for lazy regularisation every c steps (1 when off)."""
  return interval / (interval + 1.0) if on and interval > 0 else 1.0


def init_state(parts: StyleGAN2Parts, key: jax.Array) -> TrainState:
  """Fresh parameters, optimizer states, const noise, w_avg and the G EMA."""
  g, size = parts.generator, parts.generator.img_resolution
  kg, kd = jax.random.split(key)
  z = jnp.zeros((1, g.z_dim), jnp.float32)
  img = jnp.zeros((1, size, size, parts.img_channels), jnp.float32)
  zero = lambda: jnp.zeros((), jnp.float32)  # distinct buffers: the state is donated
  model_state = {"pl_mean": zero(), "r1": zero(), "pl": zero()}
  if parts.augment is not None:
    model_state["ada"] = ada_to_dict(ada.ada_init(parts.ada_p0))
  if parts.official:
    gv = g.init({"params": kg, "noise": kg}, z, None, noise_mode="const")
    dv = parts.discriminator.init(kd, img)
    model_state.update(buffers=gv["buffers"], d_buffers=dv["buffers"])
  else:
    gv = g.init(kg, z, noise_mode="const")
    dv = parts.discriminator.init(kd, img)
    model_state.update(stats=gv["stats"], noise_const=gv["noise_const"])
  params = {"generator": gv["params"], "discriminator": dv["params"]}
  return first_state(
      params, {"generator": parts.g_tx.init(params["generator"]),
               "discriminator": parts.d_tx.init(params["discriminator"])},
      model_state=model_state, ema_params=jax.tree.map(jnp.copy, params["generator"]))


def ada_to_dict(state: ada.AdaState) -> dict[str, jax.Array]:
  """An :class:`AdaState` as the plain dict kept in ``model_state['ada']``."""
  return {"p": state.p, "sign_sum": state.sign_sum, "count": state.count,
          "steps": state.steps}


def generator_variables(parts: StyleGAN2Parts, g_params, model_state) -> dict[str, Any]:
  """The generator's Flax variables: ``g_params`` and the buffers of ``model_state``."""
  if parts.official:
    return {"params": g_params, "buffers": model_state["buffers"]}
  return {"params": g_params, "stats": model_state["stats"],
          "noise_const": model_state["noise_const"]}


def _buffer_collection(parts: StyleGAN2Parts) -> str:
  return "buffers" if parts.official else "stats"


def run_mapping(parts: StyleGAN2Parts, g_params, model_state, z, key, update_emas: bool):
  """z -> ws with style mixing; returns (ws, the w_avg collection after its update)."""
  g, variables = parts.generator, generator_variables(parts, g_params, model_state)
  coll = _buffer_collection(parts)
  if parts.official:
    map_fn = lambda zz, upd, **kw: g.apply(variables, zz, None, update_w_avg=upd,
                                           method="map", **kw)
  else:
    map_fn = lambda zz, upd, **kw: g.apply(variables, zz, update_emas=upd, method="map", **kw)
  ws, updated = map_fn(z, update_emas, mutable=[coll])
  mixing_prob = parts.loss.style_mixing_prob
  if mixing_prob > 0:
    k_z, k_mix = jax.random.split(key)
    ws2 = map_fn(jax.random.normal(k_z, z.shape, z.dtype), False)
    ws = stylegan2.mix_styles(ws, ws2, k_mix, mixing_prob)
  return ws, updated[coll]


def run_synthesis(parts: StyleGAN2Parts, g_params, model_state, ws, key):
  return parts.generator.apply(generator_variables(parts, g_params, model_state), ws, "random",
                               method="synthesize", rngs={"noise": key})


def run_discriminator(parts: StyleGAN2Parts, d_params, model_state, x, key):
  """Logits ``[B]`` of D on ``x`` augmented with the current p (when augmenting)."""
  if parts.augment is not None:
    x = ada.augment(x, key, model_state["ada"]["p"], parts.augment)
  if parts.official:
    return parts.discriminator.apply({"params": d_params, "buffers": model_state["d_buffers"]},
                                     x)[:, 0]
  return parts.discriminator.apply({"params": d_params}, x)


def g_main_loss(g_params, parts: StyleGAN2Parts, model_state, d_params, z, keys):
  """softplus(-D(G(z))); the mapping's w_avg is updated from this batch (aux: its
  collection)."""
  ws, stats = run_mapping(parts, g_params, model_state, z, keys[0], True)
  k_syn, k_aug = jax.random.split(keys[1])
  logits = run_discriminator(parts, d_params, model_state,
                             run_synthesis(parts, g_params, model_state, ws, k_syn), k_aug)
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
  pl_noise = jax.random.normal(keys[1], (pl_batch, size, size, parts.img_channels)) / size
  (_, (pl_mean, penalty)), grads = jax.value_and_grad(path_length_loss, has_aux=True)(
      g_params, parts, model_state, pl_mean, z, pl_noise, keys[2:])
  g_params, g_opt = apply_gradients(parts.g_tx, g_params, g_opt, grads)
  return g_params, g_opt, pl_mean, penalty


def d_main_loss(d_params, parts: StyleGAN2Parts, model_state, real, fake, key):
  """softplus(D(G(z))) + softplus(-D(x)); aux: (real logits, fake logits)."""
  k_real, k_fake = jax.random.split(key)
  real_logits = run_discriminator(parts, d_params, model_state, real, k_real)
  fake_logits = run_discriminator(parts, d_params, model_state, fake, k_fake)
  return losses.d_logistic_loss(real_logits, fake_logits), (real_logits, fake_logits)


def r1_loss(d_params, parts: StyleGAN2Parts, model_state, real, key):
  """The R1 penalty (at the un-augmented reals, through the augmentation) times
  gamma / 2 and its interval; aux: the penalty."""
  d_fn = lambda x: run_discriminator(parts, d_params, model_state, x, key)
  penalty = jnp.mean(losses.r1_penalty(d_fn, real))
  return penalty * (parts.loss.r1_gamma / 2) * parts.loss.r1_interval, penalty


def d_reg_phase(parts: StyleGAN2Parts, model_state, real, key, operand):
  """One Adam step on R1: ``(d_params, d_opt)`` -> ``(d_params, d_opt, penalty)``."""
  d_params, d_opt = operand
  (_, penalty), grads = jax.value_and_grad(r1_loss, has_aux=True)(d_params, parts, model_state,
                                                                   real, key)
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
  model_state = {**model_state, _buffer_collection(parts): stats}
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
  k_map, k_syn, k_main, k_reg = jax.random.split(keys[1], 4)
  ws, _ = run_mapping(parts, g_params, model_state, z, k_map, False)
  fake = jax.lax.stop_gradient(run_synthesis(parts, g_params, model_state, ws, k_syn))
  (d_loss, logits), d_grads = jax.value_and_grad(d_main_loss, has_aux=True)(
      state.params["discriminator"], parts, model_state, real, fake, k_main)
  d_params, d_opt = apply_gradients(parts.d_tx, state.params["discriminator"],
                                    state.opt_state["discriminator"], d_grads)
  r1 = model_state["r1"]
  if loss.do_r1:
    d_params, d_opt, r1 = run_if_due(
        r1_now, state.step % loss.r1_interval == 0,
        functools.partial(d_reg_phase, parts, model_state, real, k_reg),
        lambda operand: (*operand, model_state["r1"]), (d_params, d_opt))
  return d_params, d_opt, r1, d_loss, logits, d_grads


def train_step(parts: StyleGAN2Parts, state: TrainState, batch: dict, key: jax.Array,
               phase=None):
  """The four phases and the EMA update (see the module docstring)."""
  real = batch["image"]  # [B, R, R, C]
  b = real.shape[0]
  if real.shape[-1] != parts.img_channels:
    raise DataError(f"model.img_channels={parts.img_channels}: the generator makes "
                    f"{parts.img_channels}-channel images but the data gives "
                    f"{real.shape[-1]}-channel slices")
  pl_now, r1_now = (None, None) if phase is None else (bool(phase[0]), bool(phase[1]))
  keys = jax.random.split(key, 9)
  g_params, g_opt, model_state, g_loss, g_grads = generator_phases(
      parts, state, b, keys[:7], pl_now)
  d_params, d_opt, r1, d_loss, (real_logits, fake_logits), d_grads = discriminator_phases(
      parts, state, g_params, model_state, real, keys[7:], r1_now)
  # G EMA with a half-life in images (ramped up early on).
  beta = losses.ema_beta(state.step, b, parts.loss.ema_images, parts.loss.ema_rampup)
  ema = losses.ema_update(state.ema_params, g_params, beta)
  model_state = {**model_state, "r1": r1}
  if parts.ada_target is not None:  # global batch: the logits of every device
    model_state["ada"] = ada_to_dict(ada.ada_update(
        ada.AdaState(**model_state["ada"]), real_logits, b, parts.ada_target,
        parts.ada_interval, parts.ada_kimg))
  new_state = state.replace(
      step=state.step + 1, params={"generator": g_params, "discriminator": d_params},
      opt_state={"generator": g_opt, "discriminator": d_opt},
      model_state=model_state, ema_params=ema)
  metrics = {
      "g_loss": g_loss, "d_loss": d_loss,
      "d_real": jnp.mean(jax.nn.sigmoid(real_logits)),  # D(x) as a probability
      "d_fake": jnp.mean(jax.nn.sigmoid(fake_logits)),  # D(G(z))
      "r1": r1, "pl": model_state["pl"], "pl_mean": model_state["pl_mean"], "ema_beta": beta,
      "g_grad_norm": optax.tree.norm(g_grads), "d_grad_norm": optax.tree.norm(d_grads),
      "augment_p": model_state["ada"]["p"] if "ada" in model_state else 0.0,
  }
  return new_state, float32_metrics(metrics)


# jaxlatent's data pipeline gives single-channel slices.
DATA_CHANNELS = 1


def make_generator(config: ml_collections.ConfigDict, state: TrainState) -> Generator:
  """The EMA generator in z space.

  Raises DataError for a network whose images do not have the data's one channel
  (e.g. a converted RGB snapshot analysed with MR slices).
  """
  official = config.model.name == "stylegan2"
  channels = int(config.model.get("img_channels", 1)) if official else 1
  if channels != DATA_CHANNELS:
    raise DataError(f"model.img_channels={channels}: this network makes {channels}-channel "
                    f"images but the data pipeline (data.modality="
                    f"{config.data.get('modality') if 'data' in config else None!r}) gives "
                    f"{DATA_CHANNELS}-channel slices; analyse or train a single-channel network"
                    " (load_stylegan2_ada gives the Generator of any network in-process)")
  if official:
    variables = {"params": state.ema_params, "buffers": state.model_state["buffers"]}
    return stylegan2.make_generator(variables, config, "z")
  variables = {"params": state.ema_params, "stats": state.model_state["stats"],
               "noise_const": state.model_state["noise_const"]}
  return stylegan2_simple.make_generator(variables, config, "z")


def augment_settings(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """:class:`StyleGAN2Parts` fields of ``config.augment`` (over its defaults; absent: off)."""
  cfg = ada.default_augment_config()
  user = config.get("augment", None)
  if user is not None:
    user = user.to_dict() if isinstance(user, ml_collections.ConfigDict) else dict(user)
    for k, v in user.items():
      if k not in cfg:
        raise ConfigError(f"augment.{k}: unknown key (keys: {', '.join(sorted(cfg))})")
      cfg[k] = v
  cfg = cfg.to_dict()
  ada.check_augment_config(cfg)
  if cfg["mode"] == "off":
    return {}
  out = dict(augment=ada.spec_from_config(cfg), ada_p0=float(cfg["p"]))
  if cfg["mode"] == "ada":
    out.update(ada_target=float(cfg["target"]), ada_interval=int(cfg["interval"]),
               ada_kimg=float(cfg["kimg"]))
  return out


def _check_batch(config: ml_collections.ConfigDict, d: nn.Module) -> None:
  group = getattr(d, "mbstd_group_size", None)
  if group and int(config.get("batch_size", group)) % min(int(group), int(config.batch_size)):
    raise ConfigError(f"batch_size={config.batch_size}: must be a multiple of "
                      f"model.mbstd_group_size={group} (the minibatch-std groups)")


def make_stylegan2_trainer(config: ml_collections.ConfigDict) -> ModelTrainer:
  """The StyleGAN2's :class:`ModelTrainer` for ``config`` ('stylegan2' or
  'stylegan2_simple')."""
  official = config.model.name == "stylegan2"
  model = stylegan2 if official else stylegan2_simple
  loss = model.loss_settings(config)
  d = model.build_discriminator(config)
  if official and "batch_size" in config:
    _check_batch(config, d)
  parts = StyleGAN2Parts(
      model.build_generator(config), d, loss,
      make_optimizer(config, "g", lazy_ratio(loss.pl_interval, loss.do_pl)),
      make_optimizer(config, "d", lazy_ratio(loss.r1_interval, loss.do_r1)),
      official=official, **augment_settings(config))

  # A function of its own (not a partial): chex.assert_max_traces reads its source.
  def stylegan2_step(state, batch, key, phase=None):
    return train_step(parts, state, batch, key, phase)

  return ModelTrainer(init=functools.partial(init_state, parts),
                      train_step=stylegan2_step,
                      generator=functools.partial(make_generator, config),
                      loss_terms=("g_loss", "d_loss", "r1", "pl"), name=config.model.name,
                      phase=functools.partial(reg_phase, loss))
