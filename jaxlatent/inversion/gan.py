"""GAN inversion in z after Creswell & Bharath ("Inverting the generator of a GAN").

Every target image x gets its own latent z, found by gradient descent (RMSprop by
default) on ``MSE(G(z), x) - lambda * log p(z)``; with the standard normal prior
``-log p(z) = 0.5 |z|^2 + const``, scaled by 1/D so lambda does not depend on the
latent size.  As in the reference (InvertingGAN ``find_batch_z``), the loss of a batch
is the batch mean, ``mean_b MSE_b - lambda * mean_b mean_d log p(z_bd)``, and
"rmsprop" is torch's RMSprop (alpha 0.99, eps 1e-8 added outside the square root).
Each z still gets only its own image's gradient (divided by B), and RMSprop/Adam are
element-wise, so the images do not interact except through eps.  R random restarts per image run as
one ``vmap``; the restart with the lowest reconstruction error is kept.  The mean
+- std of the per-image error over a test set is Creswell's measure of how well the
GAN covers the data.

The same optimizer refines VAE encoder means (:mod:`jaxlatent.inversion.vae`).
"""

from __future__ import annotations

import functools
from typing import Literal

import jax
import jax.numpy as jnp
import optax
from flax import struct

from jaxlatent.errors import ConfigError
from jaxlatent.generator import Generator
from jaxlatent.inversion.losses import pixel_mse, reconstruction_loss

OptimizerName = Literal["rmsprop", "rmsprop_optax", "adam"]
OPTIMIZERS = ("rmsprop", "rmsprop_optax", "adam")


class InversionResult(struct.PyTreeNode):
  """Inverted latents of B images (best of R restarts).

  Attributes:
    latents: [B, *latent_shape].
    reconstructions: [B, H, W, C] ``G(latents)``.
    errors: [B] per-image reconstruction MSE (over the foreground when masked).
    error_mean, error_std: [] mean and std of ``errors`` (Creswell's coverage measure).
    restart_errors: [R, B] final error of every restart.
    loss_trace: [R, steps] mean total loss over the images, per restart and step.
  """

  latents: jax.Array
  reconstructions: jax.Array
  errors: jax.Array
  error_mean: jax.Array
  error_std: jax.Array
  restart_errors: jax.Array
  loss_trace: jax.Array


def make_optimizer(name: str, learning_rate) -> optax.GradientTransformation:
  """The inversion optimizer; ``learning_rate`` may be a schedule.

  'rmsprop': ``torch.optim.RMSprop`` defaults as the reference uses them
  (``v = 0.99 v + 0.01 g^2``, step ``g / (sqrt(v) + 1e-8)``); 'rmsprop_optax': optax's
  defaults (decay 0.9, eps inside the square root); 'adam'.
  """
  if name == "rmsprop":
    return optax.rmsprop(learning_rate, decay=0.99, eps=1e-8, eps_in_sqrt=False)
  if name == "rmsprop_optax":
    return optax.rmsprop(learning_rate)
  if name == "adam":
    return optax.adam(learning_rate)
  raise ConfigError(f"optimizer={name!r} is unknown; choose one of {', '.join(OPTIMIZERS)}")


def normal_prior_penalty(latents: jax.Array) -> jax.Array:
  """``-log N(z; 0, I)`` up to a constant, per sample and divided by D: [B]."""
  axes = tuple(range(1, latents.ndim))
  d = 1
  for a in axes:
    d *= latents.shape[a]
  return 0.5 * jnp.sum(latents ** 2, axis=axes) / d


@functools.partial(jax.jit, static_argnames=("steps", "optimizer", "ssim_weight"))
def _invert_core(generator, targets, init, mask, learning_rate, prior_weight, *, steps,
                 optimizer, ssim_weight):
  """init [R, B, *shape] -> (z [R, B, *shape], rec [R, B, H, W, C], err [R, B], trace [R, T])."""
  opt = make_optimizer(optimizer, learning_rate)

  def loss_fn(z):
    rec = generator(z)
    data = reconstruction_loss(rec, targets, mask, ssim_weight=ssim_weight)  # [B]
    total = data + prior_weight * normal_prior_penalty(z)  # [B]
    return total.mean(), total  # the reference's batch mean

  def one_restart(z0):
    def step(carry, _):
      z, state = carry
      (_, total), grads = jax.value_and_grad(loss_fn, has_aux=True)(z)
      updates, state = opt.update(grads, state, z)
      return (optax.apply_updates(z, updates), state), total.mean()

    (z, _), trace = jax.lax.scan(step, (z0, opt.init(z0)), None, length=steps)
    rec = generator(z)
    return z, rec, pixel_mse(rec, targets, mask), trace

  return jax.vmap(one_restart)(init)


@jax.jit  # one program, not a dozen eagerly compiled ops
def _select_best(z, rec, err, trace) -> InversionResult:
  best = jnp.argmin(err, axis=0)  # [B]
  b = jnp.arange(err.shape[1])
  errors = err[best, b]
  return InversionResult(latents=z[best, b], reconstructions=rec[best, b], errors=errors,
                         error_mean=errors.mean(), error_std=errors.std(),
                         restart_errors=err, loss_trace=trace)


def _check_targets(generator: Generator, targets: jax.Array) -> None:
  if targets.ndim != 4 or tuple(targets.shape[1:]) != tuple(generator.image_shape):
    raise ConfigError(f"targets have shape {tuple(targets.shape)}; the generator "
                      f"{generator.name!r} makes images [B, {generator.image_shape}]")


def invert_z(
    generator: Generator,
    targets: jax.Array,
    key: jax.Array,
    *,
    steps: int = 500,
    restarts: int = 4,
    optimizer: OptimizerName = "rmsprop",
    learning_rate: float = 0.01,
    prior_weight: float | None = None,
    mask: jax.Array | None = None,
    ssim_weight: float = 0.0,
    init_latents: jax.Array | None = None,
) -> InversionResult:
  """Inverts ``targets`` [B, H, W, C] into latent codes of ``generator``.

  Args:
    generator: any Generator (the prior term assumes z ~ N(0, I)).
    targets: [B, H, W, C] images in [-1, 1].
    key: restart r starts from ``generator.sample_latents(fold_in(key, r), B)``, so
      restart 0 is the same for any ``restarts`` (more restarts never do worse).
    steps: optimizer steps (one jitted ``lax.scan``).
    restarts: R random initialisations per image (vmapped); the best is kept.
    optimizer: "rmsprop" (torch's RMSprop, as Creswell & Bharath), "rmsprop_optax"
      (optax's defaults) or "adam".
    learning_rate: step size.
    prior_weight: lambda of ``lambda * 0.5 |z|^2 / D``; default 1e-3 when the
      latent space has a normal prior (``latent_spec.prior == "normal"``), else 0.
    mask: optional foreground mask [B, H, W] or [H, W] for the loss and the errors.
    ssim_weight: weight of the multi-scale ``1 - SSIM`` term (0: pure MSE).
    init_latents: [B, *shape] start codes (e.g. a VAE encoder mean); then the
      first restart starts there and the others from random codes.

  Returns:
    An :class:`InversionResult`.
  """
  _check_targets(generator, targets)
  if restarts < 1 or steps < 1:
    raise ConfigError(f"restarts={restarts} and steps={steps} must be >= 1")
  if prior_weight is None:
    prior_weight = 1e-3 if generator.latent_spec.prior == "normal" else 0.0
  b = targets.shape[0]
  inits = [generator.sample_latents(jax.random.fold_in(key, r), b) for r in range(restarts)]
  if init_latents is not None:
    if tuple(init_latents.shape) != tuple(inits[0].shape):
      raise ConfigError(f"init_latents have shape {tuple(init_latents.shape)}, expected "
                        f"{tuple(inits[0].shape)}")
    inits[0] = jnp.asarray(init_latents, jnp.float32)
  init = jnp.stack(inits)  # [R, B, *shape]
  out = _invert_core(generator, jnp.asarray(targets, jnp.float32), init,
                     None if mask is None else jnp.asarray(mask),
                     jnp.float32(learning_rate), jnp.float32(prior_weight),
                     steps=int(steps), optimizer=optimizer, ssim_weight=float(ssim_weight))
  return _select_best(*out)


def coverage(result: InversionResult) -> tuple[float, float]:
  """Creswell's measure: mean and std of the per-image reconstruction error."""
  return float(result.error_mean), float(result.error_std)
