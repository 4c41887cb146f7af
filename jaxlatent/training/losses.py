"""Loss functions of the models, as small pure functions of arrays.

GAN losses take discriminator logits; VAE losses take images and the Gaussian
posterior's (mean, log-variance).  All return scalars averaged over the batch.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp


def d_logistic_loss(real_logits: jax.Array, fake_logits: jax.Array) -> jax.Array:
  """BCE discriminator loss: -log sigmoid(D(x)) - log(1 - sigmoid(D(G(z))))."""
  return jnp.mean(jax.nn.softplus(-real_logits)) + jnp.mean(jax.nn.softplus(fake_logits))


def g_nonsaturating_loss(fake_logits: jax.Array) -> jax.Array:
  """Non-saturating generator loss: -log sigmoid(D(G(z)))."""
  return jnp.mean(jax.nn.softplus(-fake_logits))


def gaussian_kl(mean: jax.Array, logvar: jax.Array) -> jax.Array:
  """KL(N(mean, exp(logvar)) || N(0, I)), summed over latent dims: ``[B, D] -> [B]``."""
  return 0.5 * jnp.sum(jnp.square(mean) + jnp.exp(logvar) - 1.0 - logvar, axis=-1)


def log_mse_kl_loss(x: jax.Array, x_hat: jax.Array, mean: jax.Array, logvar: jax.Array,
                    kl_weight: float = 0.01) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Schön et al.'s VAE loss: ``log(MSE) + kl_weight * KL``.

  MSE is the mean over all pixels of the batch; KL is summed over latent dims and
  averaged over the batch.  Returns (loss, {'recon': log MSE, 'kl', 'mse'}).
  """
  mse = jnp.mean(jnp.square(x - x_hat))
  recon = jnp.log(mse)
  kl = jnp.mean(gaussian_kl(mean, logvar))
  return recon + kl_weight * kl, {"recon": recon, "kl": kl, "mse": mse}


def elbo_loss(x: jax.Array, x_hat: jax.Array, mean: jax.Array, logvar: jax.Array,
              sigma: float = 0.1, beta: float = 1.0) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Negative (beta-)ELBO with a Gaussian likelihood N(x; x_hat, sigma^2 I).

  ``recon`` = -log p(x | z) summed over pixels, ``kl`` summed over latent dims, both
  averaged over the batch; loss = recon + beta * kl (beta = 1: the ELBO).
  """
  n = x[0].size
  sq = jnp.sum(jnp.square(x - x_hat).reshape(x.shape[0], -1), axis=-1)  # [B]
  nll = sq / (2.0 * sigma**2) + 0.5 * n * math.log(2.0 * math.pi * sigma**2)
  recon = jnp.mean(nll)
  kl = jnp.mean(gaussian_kl(mean, logvar))
  return recon + beta * kl, {"recon": recon, "kl": kl, "mse": jnp.mean(jnp.square(x - x_hat))}


def r1_penalty(d_fn, real: jax.Array) -> jax.Array:
  """R1 (Mescheder et al. 2018): ``|grad_x sum_b D(x)_b|^2`` per sample, ``[B]``.

  ``d_fn: images [B, H, W, C] -> logits [B]``.  As in stylegan2-ada, the gradient is
  of the batch sum (MinibatchStd makes samples interact slightly).
  """
  grads = jax.grad(lambda x: jnp.sum(d_fn(x)))(real)  # [B, H, W, C]
  return jnp.sum(jnp.square(grads).reshape(real.shape[0], -1), axis=-1)


def path_lengths(synth_fn, ws: jax.Array, pl_noise: jax.Array) -> jax.Array:
  """Path lengths ``|J_w^T y|`` per sample (Karras et al. 2020), ``[B]``.

  ``synth_fn: ws [B, num_ws, w_dim] -> images``; ``pl_noise``: images-shaped
  N(0, 1) / sqrt(H W).  The norm is over w_dim, averaged over the num_ws layers,
  then square-rooted, as in stylegan2-ada.
  """
  grads = jax.grad(lambda w: jnp.sum(synth_fn(w) * pl_noise))(ws)  # [B, num_ws, w_dim]
  return jnp.sqrt(jnp.mean(jnp.sum(jnp.square(grads), axis=2), axis=1))


def ema_beta(step: jax.Array, batch_size: int, half_life_images: float,
             rampup: float | None = None) -> jax.Array:
  """EMA decay per step so that the weight of old params halves every ``half_life`` images.

  ``beta = 0.5 ** (batch / half_life)``; with ``rampup`` the half-life is capped at
  ``rampup * images_seen`` (``images_seen = step * batch``), so early EMAs follow fast.
  """
  h = jnp.asarray(half_life_images, jnp.float32)
  if rampup:
    h = jnp.minimum(h, step.astype(jnp.float32) * batch_size * rampup)
  return jnp.power(0.5, batch_size / jnp.maximum(h, 1e-8))


def ema_update(ema, params, beta: jax.Array):
  """``ema <- params + beta (ema - params)`` leaf by leaf (the lerp of stylegan2-ada)."""
  return jax.tree.map(lambda e, p: p + beta * (e - p), ema, params)
