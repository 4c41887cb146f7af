"""Training steps of the attribute models: IFcVAE-GAN and the semi-supervised DAAE.

Both follow :class:`~jaxlatent.training.trainers.ModelTrainer`: ``init(key)``,
a pure (not jitted) ``train_step(state, batch, key)``, ``generator(state)`` (the
decoder over ``concat(z, y)``) and ``loss_terms``.  Both need labels:
``batch = {'image': f32 [B, S, S, 1], 'label': int32 [B]}`` (``data.label_column``).

State layout (:class:`~jaxlatent.training.trainers.TrainState`):
  * ifcvae_gan: params/opt_state = {'encoder', 'decoder', 'aux', 'discriminator'};
    one Adam for encoder + decoder (the "VAE" phase), one for the auxiliary
    classifier, one for the image discriminator.
  * ssdaae: params/opt_state = {'encoder', 'decoder', 'disc_z', 'disc_y'}; one Adam
    for the autoencoder, one for each latent discriminator.

The semi-supervised model's labelled subset is fixed per example
(:func:`jaxlatent.models.ssdaae.batch_labelled`): ``batch['labelled']`` (bool [B])
when given, else a seeded Bernoulli(``labelled_fraction``) draw per dataset index
from ``batch['index']`` (its trainer sets ``needs_index``, so the training loop
adds the global dataset index to each batch), else per image content; either way a
resumed run uses the same labelled examples.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import ml_collections
import optax

from jaxlatent.errors import ConfigError, DataError
from jaxlatent.models import ifcvae_gan as ifc
from jaxlatent.models import ssdaae as ssd
from jaxlatent.training import losses
from jaxlatent.training import trainers
from jaxlatent.training.trainers import ModelTrainer, TrainState

ATTR_MODEL_NAMES = ("ifcvae_gan", "ssdaae")


def default_config_ifcvae_gan() -> ml_collections.ConfigDict:
  """``config.model`` of the IFcVAE-GAN (see :func:`jaxlatent.models.ifcvae_gan.default_config`)."""
  return ifc.default_config()


def default_config_ssdaae() -> ml_collections.ConfigDict:
  """``config.model`` of the semi-supervised DAAE (see :mod:`jaxlatent.models.ssdaae`)."""
  return ssd.default_config()


def default_optim_config_attr(name: str) -> ml_collections.ConfigDict:
  """``config.optim`` of the attribute models: Adam 2e-4, betas (0.5, 0.999) (GAN-style)."""
  if name not in ATTR_MODEL_NAMES:
    raise ConfigError(f"model.name={name!r}: expected one of {ATTR_MODEL_NAMES}")
  o = ml_collections.ConfigDict()
  o.lr, o.b1, o.b2, o.eps = 2e-4, 0.5, 0.999, 1e-8
  o.grad_clip = 0.0  # global-norm clipping; 0 = off
  return o


@dataclasses.dataclass(frozen=True)
class AttrTrainer(ModelTrainer):
  """A :class:`ModelTrainer` that may ask the loop for ``batch['index']``.

  Attributes:
    needs_index: the step reads ``batch['index']`` (int32 [B] global dataset
      indices, sharded like the images); the loop adds it only then.
  """

  needs_index: bool = False


# ----------------------------------------------------------------------------- helpers


def _optim(config: ml_collections.ConfigDict, which: str | None = None
           ) -> optax.GradientTransformation:
  """Adam from ``config.optim`` over the defaults; ``optim.<which>_lr`` overrides lr.

  ``which``: 'g' (encoder + decoder), 'd' (image / latent discriminators) or 'aux'
  (the IFcVAE-GAN's auxiliary classifier).
  """
  return trainers._adam(trainers._optim(  # pylint: disable=protected-access
      config, which, default_optim_config_attr(config.model.name)))


def _apply(tx, params, opt_state, grads):
  updates, opt_state = tx.update(grads, opt_state, params)
  return optax.apply_updates(params, updates), opt_state


def _f32(x) -> jax.Array:
  return jnp.asarray(x, jnp.float32)


def _check_config(config: ml_collections.ConfigDict, name: str) -> None:
  if "model" not in config or config.model.get("name", None) != name:
    raise ConfigError(f"config.model.name must be {name!r}")
  if "image_size" not in config:
    raise ConfigError("config.image_size is missing")
  data = config.get("data", None)
  if data is not None and not data.get("label_column", ""):
    raise ConfigError(f"model {name!r} trains on labels: set data.label_column (e.g. 'group' "
                      "for the brain phantom, 'large_breast' for the thorax phantom)")


def _labels(batch: dict, name: str) -> jax.Array:
  if "label" not in batch:
    raise DataError(f"model {name!r}: the batch has no 'label' (set data.label_column)")
  return jnp.asarray(batch["label"]).astype(jnp.int32)


# ----------------------------------------------------------------------------- IFcVAE-GAN


def make_ifcvae_gan_trainer(config: ml_collections.ConfigDict) -> AttrTrainer:
  """The IFcVAE-GAN step (Creswell et al. 2017); three updates per step.

  One encoder/decoder pass gives ``z ~ q(z|x)``, ``x_rec = Dec(z, y)`` and
  ``x_prior = Dec(z', y')`` (``z' ~ N(0, I)``, ``y'`` a random class); A reads
  ``c = mean`` of q(z|x) (``model.aux_input='mean'``) or the sample z; then
  1. encoder + decoder: ``recon_weight * MSE(x_rec, x) + kl_weight * KL
     + class_weight * CE(y_hat, label) + aux_weight * CE_uniform(A(c))
     + mean_gap_weight * class_explained_variance(c)
     + gan_weight * (softplus(-D(x_rec)) + softplus(-D(x_prior))) / 2``, against
     the current A and D; ``CE_uniform`` is zero when A's prediction is uninformative
     (``model.aux_objective='maximise'``: ``-CE(A(c), label)`` instead);
  2. A (auxiliary classifier): ``model.aux_steps`` Adam steps on the CE of ``A(c)``
     against the label (c detached);
  3. D (image discriminator): ``softplus(-D(x)) + (softplus(D(x_rec)) +
     softplus(D(x_prior))) / 2`` (images detached).

  Reconstructions decode the label's code (``model.recon_y='label'``, a conditional
  VAE) or the encoder's soft prediction (``'predicted'``).
  """
  _check_config(config, "ifcvae_gan")
  net = ifc.build(config)
  m = config.model
  k = net.num_classes
  w_rec, w_kl = float(m.get("recon_weight", 1.0)), float(m.get("kl_weight", 0.005))
  w_cls, w_aux = float(m.get("class_weight", 1.0)), float(m.get("aux_weight", 1.0))
  w_gan = float(m.get("gan_weight", 0.05))
  w_gap = float(m.get("mean_gap_weight", 0.0))
  recon_y = m.get("recon_y", "label")
  aux_on_mean = m.get("aux_input", "sample") == "mean"
  aux_steps = int(m.get("aux_steps", 1))
  maximise = m.get("aux_objective", "uniform") == "maximise"
  vae_tx, aux_tx, d_tx = _optim(config, "g"), _optim(config, "aux"), _optim(config, "d")

  def init(key):
    params = ifc.init_params(config, key)
    return TrainState(
        step=jnp.zeros((), jnp.int32), params=params,
        opt_state={"vae": vae_tx.init({"encoder": params["encoder"], "decoder": params["decoder"]}),
                   "aux": aux_tx.init(params["aux"]),
                   "discriminator": d_tx.init(params["discriminator"])})

  enc = lambda p, x: net.encoder.apply({"params": p}, x)
  dec = lambda p, c: net.decoder.apply({"params": p}, c)
  aux = lambda p, z: net.aux.apply({"params": p}, z)
  disc = lambda p, x: net.discriminator.apply({"params": p}, x)

  def forward(vae_params, x, labels, k_eps, k_prior):
    """Encoder and decoder pass: (z, mean, logvar, y_logits, x_rec, x_prior)."""
    mean, logvar, y_logits = enc(vae_params["encoder"], x)
    z = mean + jnp.exp(0.5 * logvar) * jax.random.normal(k_eps, mean.shape)  # [B, z_dim]
    y = ifc.y_code(labels, k) if recon_y == "label" else ifc.y_probs(y_logits, k)
    x_rec = dec(vae_params["decoder"], jnp.concatenate([z, y], -1))  # [B, S, S, 1]
    code = ifc.ZYSampler(net.z_dim, k)(None, k_prior, x.shape[0])  # [B, z_dim + y_dim]
    x_prior = dec(vae_params["decoder"], code)
    return z, mean, logvar, y_logits, x_rec, x_prior

  def encoder_aux_loss(aux_logits, labels):
    """The encoder's adversarial term ``[B]``: A's output towards uniform, or -CE."""
    if maximise:
      return -ifc.y_cross_entropy(aux_logits, labels, k)
    return ifc.uniform_cross_entropy(aux_logits, k)

  def train_step(state, batch, key):
    x = batch["image"]  # [B, S, S, 1]
    labels = _labels(batch, "ifcvae_gan")  # [B]
    k_eps, k_prior = jax.random.split(key)
    p, o = state.params, state.opt_state
    vae_params = {"encoder": p["encoder"], "decoder": p["decoder"]}

    # Encoder + decoder against the current A and D (one forward pass; its outputs,
    # detached, are then the inputs of the A and D updates).
    def vae_loss_fn(vp):
      z, mean, logvar, y_logits, x_rec, x_prior = forward(vp, x, labels, k_eps, k_prior)
      z_aux = mean if aux_on_mean else z  # what A reads
      recon = jnp.mean(jnp.square(x_rec - x))
      kl = jnp.mean(losses.gaussian_kl(mean, logvar))
      class_loss = jnp.mean(ifc.y_cross_entropy(y_logits, labels, k))
      aux_uniform = jnp.mean(encoder_aux_loss(aux(p["aux"], z_aux), labels))
      g_gan = 0.5 * (losses.g_nonsaturating_loss(disc(p["discriminator"], x_rec))
                     + losses.g_nonsaturating_loss(disc(p["discriminator"], x_prior)))
      mean_gap = ifc.class_explained_variance(z_aux, labels, k)
      loss = (w_rec * recon + w_kl * kl + w_cls * class_loss + w_aux * aux_uniform
              + w_gan * g_gan + w_gap * mean_gap)
      parts = {"recon": recon, "kl": kl, "class_loss": class_loss,
               "aux_uniform": aux_uniform, "g_gan": g_gan, "mean_gap": mean_gap,
               "class_acc": jnp.mean(ifc.y_predict(y_logits, k) == labels)}
      return loss, (parts, (z_aux, x_rec, x_prior))

    (loss, (parts, outs)), vae_grads = jax.value_and_grad(vae_loss_fn, has_aux=True)(vae_params)
    vae_params, vae_opt = _apply(vae_tx, vae_params, o["vae"], vae_grads)
    z_aux, x_rec, x_prior = jax.lax.stop_gradient(outs)

    # Auxiliary classifier: reads y from z (the encoder's adversary); ``aux_steps``
    # updates on this step's codes.
    def aux_loss_fn(ap):
      logits = aux(ap, z_aux)
      return jnp.mean(ifc.y_cross_entropy(logits, labels, k)), logits

    def aux_update(carry, _):
      ap, ao = carry
      (aux_loss, aux_logits), aux_grads = jax.value_and_grad(aux_loss_fn, has_aux=True)(ap)
      return _apply(aux_tx, ap, ao, aux_grads), (aux_loss, aux_logits)

    (ap, aux_opt), (aux_losses, aux_logits) = jax.lax.scan(
        aux_update, (p["aux"], o["aux"]), None, length=aux_steps)
    aux_loss = aux_losses[0]  # before this step's updates, like aux_acc
    aux_acc = jnp.mean(ifc.y_predict(aux_logits[0], k) == labels)

    # Image discriminator: real vs reconstructions and prior samples.
    def d_loss_fn(dp):
      real, rec, pri = disc(dp, x), disc(dp, x_rec), disc(dp, x_prior)
      loss = jnp.mean(jax.nn.softplus(-real)) + 0.5 * (
          jnp.mean(jax.nn.softplus(rec)) + jnp.mean(jax.nn.softplus(pri)))
      return loss, real

    (d_loss, real_logits), d_grads = jax.value_and_grad(d_loss_fn, has_aux=True)(
        p["discriminator"])
    dp, d_opt = _apply(d_tx, p["discriminator"], o["discriminator"], d_grads)

    new_state = state.replace(
        step=state.step + 1,
        params={"encoder": vae_params["encoder"], "decoder": vae_params["decoder"],
                "aux": ap, "discriminator": dp},
        opt_state={"vae": vae_opt, "aux": aux_opt, "discriminator": d_opt})
    metrics = {"loss": loss, **parts, "aux_loss": aux_loss, "aux_acc": aux_acc,
               "d_loss": d_loss, "d_real": jnp.mean(jax.nn.sigmoid(real_logits)),
               "vae_grad_norm": optax.tree.norm(vae_grads),
               "d_grad_norm": optax.tree.norm(d_grads)}
    return new_state, jax.tree.map(_f32, metrics)

  def generator(state):
    return ifc.make_decoder_generator(state.params, config)

  return AttrTrainer(init=init, train_step=train_step, generator=generator,
                     loss_terms=("loss", "recon", "kl", "class_loss", "aux_loss", "d_loss"),
                     name="ifcvae_gan")


# ----------------------------------------------------------------------------- SS-DAAE


def make_ssdaae_trainer(config: ml_collections.ConfigDict) -> AttrTrainer:
  """The semi-supervised denoising AAE step; two phases per step.

  1. Latent discriminators: ``D_z``: N(0, I) samples vs ``z = Enc_z(C(x))``;
     ``D_y``: uniform one-hot codes vs ``softmax(Enc_y(C(x)))`` (logistic losses).
  2. Autoencoder: ``recon_weight * MSE(Dec(z, softmax(y)), x)`` (clean target)
     ``+ adv_weight * softplus(-D_z(z)) + cat_adv_weight * softplus(-D_y(y))
     + class_weight * CE(y_logits, label)`` averaged over the labelled examples
     of the batch only (0 when none is labelled).

  Metrics include ``labelled_acc`` (head accuracy on the labelled examples),
  ``batch_acc`` (on every example of the batch: monitoring only, no gradient) and
  ``num_labelled`` / ``labelled_frac`` (labelled examples in the batch).  The trainer
  sets ``needs_index``: the loop's batches carry ``'index'``, so the labelled subset
  is the per-index draw of :func:`jaxlatent.models.ssdaae.labelled_mask`.
  """
  _check_config(config, "ssdaae")
  net = ssd.build(config)
  m = config.model
  k = net.num_classes
  noise_std, dropout = float(m.get("noise_std", 0.25)), float(m.get("dropout", 0.0))
  fraction, label_seed = float(m.get("labelled_fraction", 0.1)), int(m.get("label_seed", 0))
  w_rec, w_adv = float(m.get("recon_weight", 1.0)), float(m.get("adv_weight", 0.1))
  w_cat, w_cls = float(m.get("cat_adv_weight", 0.1)), float(m.get("class_weight", 1.0))
  ae_tx, d_tx = _optim(config, "g"), _optim(config, "d")

  def init(key):
    params = ssd.init_params(config, key)
    return TrainState(
        step=jnp.zeros((), jnp.int32), params=params,
        opt_state={"ae": ae_tx.init({"encoder": params["encoder"], "decoder": params["decoder"]}),
                   "disc_z": d_tx.init(params["disc_z"]), "disc_y": d_tx.init(params["disc_y"])})

  enc = lambda p, x: net.encoder.apply({"params": p}, x)
  dec = lambda p, c: net.decoder.apply({"params": p}, c)
  d_z = lambda p, c: net.disc_z.apply({"params": p}, c)
  d_y = lambda p, c: net.disc_y.apply({"params": p}, c)

  def train_step(state, batch, key):
    x = batch["image"]  # [B, S, S, 1]
    b = x.shape[0]
    labels = _labels(batch, "ssdaae")  # [B]
    labelled = ssd.batch_labelled(batch, fraction, label_seed).astype(jnp.float32)  # [B]
    k_c, k_z, k_y = jax.random.split(key, 3)
    p, o = state.params, state.opt_state
    ae = {"encoder": p["encoder"], "decoder": p["decoder"]}
    x_tilde = ssd.corrupt(x, k_c, noise_std, dropout)  # C(x~ | x)

    # Phase 1: latent discriminators (encoder fixed).
    z, logits = jax.lax.stop_gradient(enc(ae["encoder"], x_tilde))
    z_prior = jax.random.normal(k_z, z.shape)
    y_prior = jax.nn.one_hot(jax.random.randint(k_y, (b,), 0, k), k)

    def dz_loss_fn(dp):
      return losses.d_logistic_loss(d_z(dp, z_prior), d_z(dp, z))

    def dy_loss_fn(dp):
      return losses.d_logistic_loss(d_y(dp, y_prior), d_y(dp, jax.nn.softmax(logits)))

    dz_loss, dz_grads = jax.value_and_grad(dz_loss_fn)(p["disc_z"])
    dzp, dz_opt = _apply(d_tx, p["disc_z"], o["disc_z"], dz_grads)
    dy_loss, dy_grads = jax.value_and_grad(dy_loss_fn)(p["disc_y"])
    dyp, dy_opt = _apply(d_tx, p["disc_y"], o["disc_y"], dy_grads)

    # Phase 2: autoencoder (reconstruction, regularisation, semi-supervised CE).
    def ae_loss_fn(ap):
      z, logits = enc(ap["encoder"], x_tilde)
      y = jax.nn.softmax(logits)
      x_rec = dec(ap["decoder"], jnp.concatenate([z, y], -1))  # [B, S, S, 1]
      recon = jnp.mean(jnp.square(x_rec - x))
      g_z = losses.g_nonsaturating_loss(d_z(dzp, z))
      g_y = losses.g_nonsaturating_loss(d_y(dyp, y))
      ce = -jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], -1)[:, 0]
      class_loss = jnp.sum(labelled * ce) / jnp.maximum(jnp.sum(labelled), 1.0)
      loss = w_rec * recon + w_adv * g_z + w_cat * g_y + w_cls * class_loss
      correct = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
      return loss, {"recon": recon, "g_z": g_z, "g_y": g_y, "class_loss": class_loss,
                    "labelled_acc": jnp.sum(labelled * correct) / jnp.maximum(
                        jnp.sum(labelled), 1.0),
                    "batch_acc": jnp.mean(correct)}

    (loss, parts), ae_grads = jax.value_and_grad(ae_loss_fn, has_aux=True)(ae)
    ae, ae_opt = _apply(ae_tx, ae, o["ae"], ae_grads)

    new_state = state.replace(
        step=state.step + 1,
        params={"encoder": ae["encoder"], "decoder": ae["decoder"], "disc_z": dzp, "disc_y": dyp},
        opt_state={"ae": ae_opt, "disc_z": dz_opt, "disc_y": dy_opt})
    metrics = {"loss": loss, **parts, "d_z_loss": dz_loss, "d_y_loss": dy_loss,
               "labelled_frac": jnp.mean(labelled), "num_labelled": jnp.sum(labelled),
               "ae_grad_norm": optax.tree.norm(ae_grads)}
    return new_state, jax.tree.map(_f32, metrics)

  def generator(state):
    return ssd.make_decoder_generator(state.params, config)

  return AttrTrainer(init=init, train_step=train_step, generator=generator,
                     loss_terms=("loss", "recon", "class_loss", "d_z_loss", "d_y_loss"),
                     name="ssdaae", needs_index=True)


def make_attr_trainer(config: ml_collections.ConfigDict) -> AttrTrainer:
  """``make_ifcvae_gan_trainer`` or ``make_ssdaae_trainer`` by ``config.model.name``."""
  name = config.model.get("name", None)
  if name == "ifcvae_gan":
    return make_ifcvae_gan_trainer(config)
  if name == "ssdaae":
    return make_ssdaae_trainer(config)
  raise ConfigError(f"model.name={name!r}: expected one of {ATTR_MODEL_NAMES}")
