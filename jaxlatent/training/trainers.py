"""Per-model training steps behind one interface, :class:`ModelTrainer`.

The generic loop (checkpoints, sharding, metrics) only sees ``init(key) -> state``,
``train_step(state, batch, key) -> (state, metrics)`` (pure, not jitted: the loop
jits it once with shardings and donation), ``generator(state) -> Generator`` and
``loss_terms``, and optionally ``phase(step)``: periodic work (StyleGAN2's lazy
regularisation) is a static phase argument, one compiled program per phase, because
XLA:CPU runs ``lax.cond`` branches far slower (called without a phase, the step falls
back to ``lax.cond`` on ``state.step`` and traces once).  Nothing depends on the
number of devices.

State layout (:class:`TrainState`, a pytree):
  * dcgan:     params/opt_state = {'generator', 'discriminator'};
               model_state = {'generator': batch_stats, 'discriminator': batch_stats}.
  * vae:       params = the VAE's params ({'encoder', 'decoder'}); one opt_state.
  * stylegan2: params/opt_state = {'generator', 'discriminator'}; ema_params = G EMA;
               model_state = {'stats': {'w_avg'}, 'noise_const', 'pl_mean', 'r1', 'pl'}.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

from flax import struct
import jax
import jax.numpy as jnp
import ml_collections
import optax

from jaxlatent.errors import ConfigError
from jaxlatent.generator import Generator
from jaxlatent.models import ATTR_MODEL_NAMES, default_optim_config, model_module
from jaxlatent.training import losses


class TrainState(struct.PyTreeNode):
  """Everything a training run carries from step to step.

  Attributes:
    step: int32 scalar, the number of steps taken.
    params: trainable parameters (per-model layout: see the module docstring).
    opt_state: optax state(s) matching ``params``.
    model_state: non-trained variables (BatchNorm statistics, w_avg, const noise,
      path-length mean); ``None`` when the model has none.
    ema_params: exponential moving average of the generator's params (StyleGAN2);
      ``None`` otherwise.
  """

  step: jax.Array
  params: Any
  opt_state: Any
  model_state: Any = None
  ema_params: Any = None


@dataclasses.dataclass(frozen=True)
class ModelTrainer:
  """What the generic training loop needs from a model.

  Attributes:
    init: ``key -> TrainState`` (pure; can be ``jax.eval_shape``d and jitted).
    train_step: ``(state, batch, key) -> (state, metrics)``; pure, not jitted.
      ``batch = {'image': f32 [B, H, W, 1]}``; metrics are f32 scalars.
    generator: ``state -> Generator`` used for samples and FID (EMA for StyleGAN2).
    loss_terms: metric names that must stay finite.
    name: the model name.
    phase: optional ``step (int) -> hashable``, the phase of a step for models whose
      steps differ (StyleGAN2: whether the lazy path-length / R1 regularisers run).
      The loop calls ``train_step(state, batch, key, phase=phase(step))`` with ``phase``
      static, one compiled program per phase: XLA:CPU runs a ``lax.cond`` branch ~35x
      slower than the same code outside a conditional (benchmarks/RESULTS.md).
      Called without ``phase``, the step decides with ``lax.cond`` on ``state.step``.
  """

  init: Callable[[jax.Array], Any]
  train_step: Callable[..., tuple[Any, dict]]
  generator: Callable[[Any], Generator]
  loss_terms: tuple[str, ...]
  name: str = ""
  phase: Callable[[int], Any] | None = None


def make_trainer(config: ml_collections.ConfigDict) -> ModelTrainer:
  """The trainer of ``config.model.name`` ('dcgan' | 'vae' | 'stylegan2').

  The attribute models ('ifcvae_gan' | 'ssdaae') are delegated to
  ``trainers_attr.make_attr_trainer``.
  """
  if "model" not in config or "name" not in config.model:
    raise ConfigError("config.model.name is missing: expected 'dcgan', 'vae' or 'stylegan2'")
  name = config.model.name
  model_module(name)  # validates the name
  if "image_size" not in config:
    raise ConfigError("config.image_size is missing")
  if name in ATTR_MODEL_NAMES:
    from jaxlatent.training.trainers_attr import make_attr_trainer  # pylint: disable=g-import-not-at-top
    return make_attr_trainer(config)
  return {"dcgan": _dcgan_trainer, "vae": _vae_trainer,
          "stylegan2": _stylegan2_trainer}[name](config)


# ----------------------------------------------------------------------------- helpers


def _optim(config: ml_collections.ConfigDict, which: str | None = None,
           defaults: ml_collections.ConfigDict | None = None) -> dict[str, float]:
  """Adam settings from ``config.optim`` over ``defaults`` (the model's, by default).

  ``which`` ('g' | 'd' | 'aux') lets ``optim.<which>_lr`` override ``optim.lr``.
  """
  if defaults is None:
    defaults = default_optim_config(config.model.name)
  o = defaults.to_dict()
  user = config.get("optim", None)
  if user is not None:
    for k in ("lr", "b1", "b2", "eps", "grad_clip"):
      if k in user and user[k] is not None:
        o[k] = float(user[k])
    if which is not None and f"{which}_lr" in user and user[f"{which}_lr"] is not None:
      o["lr"] = float(user[f"{which}_lr"])
  if o["lr"] <= 0:
    raise ConfigError(f"optim.lr={o['lr']}: must be > 0")
  return o


def _adam(o: dict[str, float], ratio: float = 1.0) -> optax.GradientTransformation:
  """Adam from settings ``o``; ``ratio`` = c/(c+1) rescales lr and betas (lazy reg)."""
  tx = optax.adam(o["lr"] * ratio, b1=o["b1"]**ratio, b2=o["b2"]**ratio, eps=o["eps"])
  if o.get("grad_clip", 0.0) > 0:
    tx = optax.chain(optax.clip_by_global_norm(o["grad_clip"]), tx)
  return tx


def _apply_grads(tx: optax.GradientTransformation, params, opt_state, grads):
  updates, opt_state = tx.update(grads, opt_state, params)
  return optax.apply_updates(params, updates), opt_state


def _f32(x) -> jax.Array:
  return jnp.asarray(x, jnp.float32)


# ----------------------------------------------------------------------------- DCGAN


def _dcgan_trainer(config: ml_collections.ConfigDict) -> ModelTrainer:
  dcgan = model_module("dcgan")
  g_mod = dcgan.build_generator(config)
  d_mod = dcgan.build_discriminator(config)
  g_tx = _adam(_optim(config, "g"))
  d_tx = _adam(_optim(config, "d"))
  size, latent_dim = g_mod.image_size, g_mod.latent_dim

  def init(key):
    kg, kd = jax.random.split(key)
    gv = g_mod.init(kg, jnp.zeros((1, latent_dim), jnp.float32))
    dv = d_mod.init(kd, jnp.zeros((1, size, size, 1), jnp.float32))
    params = {"generator": gv["params"], "discriminator": dv["params"]}
    return TrainState(
        step=jnp.zeros((), jnp.int32), params=params,
        opt_state={"generator": g_tx.init(params["generator"]),
                   "discriminator": d_tx.init(params["discriminator"])},
        model_state={"generator": gv.get("batch_stats", {}),
                     "discriminator": dv.get("batch_stats", {})})

  def run_g(gp, g_bs, z):
    """G(z) in training mode -> (images, new batch_stats)."""
    out, upd = g_mod.apply({"params": gp, "batch_stats": g_bs}, z, train=True,
                           mutable=["batch_stats"])
    return out, upd.get("batch_stats", g_bs)

  def run_d(dp, d_bs, x):
    out, upd = d_mod.apply({"params": dp, "batch_stats": d_bs}, x, train=True,
                           mutable=["batch_stats"])
    return out, upd.get("batch_stats", d_bs)

  def train_step(state, batch, key):
    """D then G on one fake batch, as the PyTorch DCGAN reference does.

    G runs forward once; its VJP is kept for the G update, which back-propagates the
    non-saturating loss through the *updated* D into that same forward pass.
    """
    real = batch["image"]  # [B, S, S, 1]
    b = real.shape[0]
    gp, dp = state.params["generator"], state.params["discriminator"]
    g_bs, d_bs = state.model_state["generator"], state.model_state["discriminator"]
    z = jax.random.normal(key, (b, latent_dim), jnp.float32)
    fake, g_vjp, g_bs = jax.vjp(lambda gp: run_g(gp, g_bs, z), gp, has_aux=True)

    # D step: real vs G(z) (G fixed).
    def d_loss_fn(dp):
      real_logits, bs = run_d(dp, d_bs, real)
      fake_logits, bs = run_d(dp, bs, fake)
      return losses.d_logistic_loss(real_logits, fake_logits), (bs, real_logits, fake_logits)

    (d_loss, (d_bs, real_logits, fake_logits)), d_grads = jax.value_and_grad(
        d_loss_fn, has_aux=True)(dp)
    dp, d_opt = _apply_grads(d_tx, dp, state.opt_state["discriminator"], d_grads)

    # G step: non-saturating loss through the updated D, chained into G's VJP.
    def g_loss_fn(images):
      logits, _ = run_d(dp, d_bs, images)
      return losses.g_nonsaturating_loss(logits), logits

    (g_loss, g_logits), d_images = jax.value_and_grad(g_loss_fn, has_aux=True)(fake)
    (g_grads,) = g_vjp(d_images)
    gp, g_opt = _apply_grads(g_tx, gp, state.opt_state["generator"], g_grads)

    new_state = state.replace(
        step=state.step + 1, params={"generator": gp, "discriminator": dp},
        opt_state={"generator": g_opt, "discriminator": d_opt},
        model_state={"generator": g_bs, "discriminator": d_bs})
    metrics = {
        "g_loss": g_loss, "d_loss": d_loss,
        "d_real": jnp.mean(jax.nn.sigmoid(real_logits)),  # D(x)
        "d_fake": jnp.mean(jax.nn.sigmoid(fake_logits)),  # D(G(z)) before the D update
        "d_fake_after": jnp.mean(jax.nn.sigmoid(g_logits)),  # after it
        "g_grad_norm": optax.tree.norm(g_grads), "d_grad_norm": optax.tree.norm(d_grads),
    }
    return new_state, jax.tree.map(_f32, metrics)

  def generator(state):
    variables = {"params": state.params["generator"]}
    if state.model_state["generator"]:
      variables["batch_stats"] = state.model_state["generator"]
    return dcgan.make_generator(variables, config)

  return ModelTrainer(init=init, train_step=train_step, generator=generator,
                      loss_terms=("g_loss", "d_loss"), name="dcgan")


# ----------------------------------------------------------------------------- VAE


def _vae_trainer(config: ml_collections.ConfigDict) -> ModelTrainer:
  vae = model_module("vae")
  module = vae.build_vae(config)
  m = config.model
  kind = m.get("loss", "log_mse_kl")
  kl_weight, sigma, beta = m.get("kl_weight", 0.01), m.get("sigma", 0.1), m.get("beta", 1.0)
  if kind == "elbo" and sigma <= 0:
    raise ConfigError(f"model.sigma={sigma}: must be > 0")
  tx = _adam(_optim(config))
  size = module.encoder.image_size

  def init(key):
    params = module.init(key, jnp.zeros((1, size, size, 1), jnp.float32),
                         jax.random.key(0))["params"]
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))

  def loss_fn(params, x, key):
    x_hat, mean, logvar = module.apply({"params": params}, x, key)
    if kind == "log_mse_kl":
      return losses.log_mse_kl_loss(x, x_hat, mean, logvar, kl_weight)
    return losses.elbo_loss(x, x_hat, mean, logvar, sigma, beta)

  def train_step(state, batch, key):
    x = batch["image"]  # [B, S, S, 1]
    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, x, key)
    params, opt_state = _apply_grads(tx, state.params, state.opt_state, grads)
    metrics = {"loss": loss, **aux, "grad_norm": optax.tree.norm(grads)}
    return (state.replace(step=state.step + 1, params=params, opt_state=opt_state),
            jax.tree.map(_f32, metrics))

  def generator(state):
    return vae.make_decoder_generator({"params": state.params}, config)

  return ModelTrainer(init=init, train_step=train_step, generator=generator,
                      loss_terms=("loss", "recon", "kl"), name="vae")


# ----------------------------------------------------------------------------- StyleGAN2


def _lazy_ratio(interval: int, on: bool) -> float:
  """c / (c + 1) for lazy regularisation every c steps (1 when off)."""
  return interval / (interval + 1.0) if on and interval > 0 else 1.0


def _stylegan2_trainer(config: ml_collections.ConfigDict) -> ModelTrainer:
  """Non-saturating logistic loss with lazy R1 and path-length regularisation.

  One step = the four stylegan2-ada phases, G main, G reg (every ``pl_interval``
  steps), D main, D reg (every ``r1_interval`` steps), then the G EMA update.  With
  ``phase=(pl_now, r1_now)`` (static; ``trainer.phase(step)``, what the loop passes)
  the reg phases are Python branches, one program per phase; without it they are
  ``lax.cond``s on ``state.step`` (one program, ~35x slower reg phases on CPU).  Each network
  has one Adam whose lr and betas are rescaled by c / (c + 1) (lazy regularisation);
  reg losses are multiplied by their interval.
  """
  sg = model_module("stylegan2")
  G, D = sg.build_generator(config), sg.build_discriminator(config)
  m = config.model
  r1_gamma, r1_interval = float(m.get("r1_gamma", 1.0)), int(m.get("r1_interval", 16))
  pl_weight, pl_interval = float(m.get("pl_weight", 2.0)), int(m.get("pl_interval", 4))
  pl_decay, pl_shrink = float(m.get("pl_decay", 0.01)), int(m.get("pl_batch_shrink", 2))
  mixing_prob = float(m.get("style_mixing_prob", 0.9))
  ema_kimg = m.get("ema_kimg", None)
  ema_images = float(ema_kimg) * 1000 if ema_kimg is not None else float(
      m.get("ema_half_life_images", 10000))
  ema_rampup = m.get("ema_rampup", 0.05)
  for key, val in (("r1_interval", r1_interval), ("pl_interval", pl_interval),
                   ("pl_batch_shrink", pl_shrink)):
    if val < 0 or (key == "pl_batch_shrink" and val < 1):
      raise ConfigError(f"model.{key}={val}: must be >= {1 if key == 'pl_batch_shrink' else 0}")
  if not 0.0 <= mixing_prob <= 1.0:
    raise ConfigError(f"model.style_mixing_prob={mixing_prob}: must be in [0, 1]")
  do_r1 = r1_gamma > 0 and r1_interval > 0
  do_pl = pl_weight > 0 and pl_interval > 0
  g_tx = _adam(_optim(config, "g"), _lazy_ratio(pl_interval, do_pl))
  d_tx = _adam(_optim(config, "d"), _lazy_ratio(r1_interval, do_r1))
  size, z_dim = G.img_resolution, G.z_dim

  def init(key):
    kg, kd = jax.random.split(key)
    gv = G.init(kg, jnp.zeros((1, z_dim), jnp.float32), noise_mode="const")
    dv = D.init(kd, jnp.zeros((1, size, size, 1), jnp.float32))
    params = {"generator": gv["params"], "discriminator": dv["params"]}
    zero = lambda: jnp.zeros((), jnp.float32)  # distinct buffers: the state is donated
    return TrainState(
        step=jnp.zeros((), jnp.int32), params=params,
        opt_state={"generator": g_tx.init(params["generator"]),
                   "discriminator": d_tx.init(params["discriminator"])},
        model_state={"stats": gv["stats"], "noise_const": gv["noise_const"],
                     "pl_mean": zero(), "r1": zero(), "pl": zero()},
        ema_params=jax.tree.map(jnp.copy, params["generator"]))

  def variables(gp, ms, stats=None):
    return {"params": gp, "stats": ms["stats"] if stats is None else stats,
            "noise_const": ms["noise_const"]}

  def run_mapping(gp, ms, z, key, update_emas):
    """z -> ws with style mixing; returns (ws, stats after the w_avg update)."""
    ws, upd = G.apply(variables(gp, ms), z, update_emas=update_emas, method="map",
                      mutable=["stats"])
    if mixing_prob > 0:
      k_z, k_mix = jax.random.split(key)
      ws2 = G.apply(variables(gp, ms), jax.random.normal(k_z, z.shape, z.dtype), method="map")
      ws = sg.mix_styles(ws, ws2, k_mix, mixing_prob)
    return ws, upd["stats"]

  def run_synthesis(gp, ms, ws, key):
    return G.apply(variables(gp, ms), ws, "random", method="synthesize", rngs={"noise": key})

  def run_d(dp, x):
    return D.apply({"params": dp}, x)

  def reg_phase(step: int) -> tuple[bool, bool]:
    """(path-length step?, R1 step?) of the Python step number ``step``."""
    return (do_pl and step % pl_interval == 0, do_r1 and step % r1_interval == 0)

  def maybe(now: bool | None, pred, branch, skip, operand):
    """``branch(operand)`` where due: static ``now`` if given, else ``lax.cond(pred)``."""
    if now is None:
      return jax.lax.cond(pred, branch, skip, operand)
    return branch(operand) if now else skip(operand)

  def train_step(state, batch, key, phase=None):
    real = batch["image"]  # [B, R, R, 1]
    b = real.shape[0]
    pl_now, r1_now = (None, None) if phase is None else (bool(phase[0]), bool(phase[1]))
    ks = jax.random.split(key, 9)
    gp, dp = state.params["generator"], state.params["discriminator"]
    g_opt, d_opt = state.opt_state["generator"], state.opt_state["discriminator"]
    ms = state.model_state

    # G main: softplus(-D(G(z))); the mapping's w_avg is updated from this batch.
    z = jax.random.normal(ks[0], (b, z_dim), jnp.float32)

    def g_main_loss(gp):
      ws, stats = run_mapping(gp, ms, z, ks[1], True)
      logits = run_d(dp, run_synthesis(gp, ms, ws, ks[2]))
      return losses.g_nonsaturating_loss(logits), stats

    (g_loss, stats), g_grads = jax.value_and_grad(g_main_loss, has_aux=True)(gp)
    gp, g_opt = _apply_grads(g_tx, gp, g_opt, g_grads)
    ms = {**ms, "stats": stats}

    # G reg: path-length penalty every pl_interval steps (gain = pl_interval).
    def g_reg(operand):
      gp, g_opt, pl_mean = operand
      pl_b = max(b // pl_shrink, 1)
      z_pl = jax.random.normal(ks[3], (pl_b, z_dim), jnp.float32)
      pl_noise = jax.random.normal(ks[4], (pl_b, size, size, 1)) / size  # / sqrt(H W)

      def pl_loss(gp):
        ws, _ = run_mapping(gp, ms, z_pl, ks[5], False)
        lengths = losses.path_lengths(lambda w: run_synthesis(gp, ms, w, ks[6]), ws, pl_noise)
        new_mean = jax.lax.stop_gradient(pl_mean + pl_decay * (jnp.mean(lengths) - pl_mean))
        penalty = jnp.mean(jnp.square(lengths - new_mean))
        return penalty * pl_weight * pl_interval, (new_mean, penalty)

      (_, (pl_mean, penalty)), grads = jax.value_and_grad(pl_loss, has_aux=True)(gp)
      gp, g_opt = _apply_grads(g_tx, gp, g_opt, grads)
      return gp, g_opt, pl_mean, penalty

    pl_mean, pl_penalty = ms["pl_mean"], ms["pl"]
    if do_pl:
      gp, g_opt, pl_mean, pl_penalty = maybe(
          pl_now, state.step % pl_interval == 0, g_reg, lambda o: (*o, ms["pl"]),
          (gp, g_opt, pl_mean))

    # D main: softplus(D(G(z))) + softplus(-D(x)).
    z_d = jax.random.normal(ks[7], (b, z_dim), jnp.float32)
    k_map, k_syn = jax.random.split(ks[8])
    ws_d, _ = run_mapping(gp, ms, z_d, k_map, False)
    fake = jax.lax.stop_gradient(run_synthesis(gp, ms, ws_d, k_syn))

    def d_main_loss(dp):
      real_logits, fake_logits = run_d(dp, real), run_d(dp, fake)
      return losses.d_logistic_loss(real_logits, fake_logits), (real_logits, fake_logits)

    (d_loss, (real_logits, fake_logits)), d_grads = jax.value_and_grad(
        d_main_loss, has_aux=True)(dp)
    dp, d_opt = _apply_grads(d_tx, dp, d_opt, d_grads)

    # D reg: R1 every r1_interval steps (gain = r1_interval).
    def d_reg(operand):
      dp, d_opt = operand

      def r1_loss(dp):
        penalty = jnp.mean(losses.r1_penalty(lambda x: run_d(dp, x), real))
        return penalty * (r1_gamma / 2) * r1_interval, penalty

      (_, penalty), grads = jax.value_and_grad(r1_loss, has_aux=True)(dp)
      dp, d_opt = _apply_grads(d_tx, dp, d_opt, grads)
      return dp, d_opt, penalty

    r1 = ms["r1"]
    if do_r1:
      dp, d_opt, r1 = maybe(r1_now, state.step % r1_interval == 0, d_reg,
                            lambda o: (*o, ms["r1"]), (dp, d_opt))

    # G EMA with a half-life in images (ramped up early on).
    beta = losses.ema_beta(state.step, b, ema_images, ema_rampup)
    ema = losses.ema_update(state.ema_params, gp, beta)

    new_state = state.replace(
        step=state.step + 1, params={"generator": gp, "discriminator": dp},
        opt_state={"generator": g_opt, "discriminator": d_opt},
        model_state={**ms, "pl_mean": pl_mean, "r1": r1, "pl": pl_penalty}, ema_params=ema)
    metrics = {
        "g_loss": g_loss, "d_loss": d_loss,
        "d_real": jnp.mean(jax.nn.sigmoid(real_logits)),  # D(x) as a probability
        "d_fake": jnp.mean(jax.nn.sigmoid(fake_logits)),  # D(G(z))
        "r1": r1, "pl": pl_penalty, "pl_mean": pl_mean, "ema_beta": beta,
        "g_grad_norm": optax.tree.norm(g_grads), "d_grad_norm": optax.tree.norm(d_grads),
    }
    return new_state, jax.tree.map(_f32, metrics)

  def generator(state):
    v = {"params": state.ema_params, "stats": state.model_state["stats"],
         "noise_const": state.model_state["noise_const"]}
    return sg.make_generator(v, config, "z")

  return ModelTrainer(init=init, train_step=train_step, generator=generator,
                      loss_terms=("g_loss", "d_loss", "r1", "pl"), name="stylegan2",
                      phase=reg_phase)
