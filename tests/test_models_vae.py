"""VAE: shapes, the decoder as a Generator, and the losses against NumPy formulas."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxlatent.generator import Generator
from jaxlatent.models import default_model_config, vae
from jaxlatent.training import losses
from jaxlatent.training.trainers import make_trainer


def _config(size=16):
  c = ml_collections.ConfigDict()
  c.model = default_model_config("vae")
  c.model.update(ch=4, channels=16, max_channels=16, latent_dim=8)
  c.image_size = size
  return c


def test_vae_init_encode_decode_shapes_and_contract():
  c = _config(16)
  state = jax.jit(make_trainer(c).init)(jax.random.key(0))  # the VAE's variables
  params = {"params": state.params, "batch_stats": state.model_state}
  assert set(params["params"]) == {"encoder", "decoder"}
  assert set(params["batch_stats"]) == {"encoder", "decoder"}
  assert sum(x.size for x in jax.tree.leaves(params)) > 0
  x = jnp.tanh(jax.random.normal(jax.random.key(1), (3, 16, 16, 1)))
  mean, logvar = jax.jit(functools.partial(vae.encode, config=c))(params, x)
  assert mean.shape == (3, 8) and logvar.shape == (3, 8)
  gen = vae.make_decoder_generator(params, c)
  assert isinstance(gen, Generator)
  assert gen.latent_spec.shape == (8,) and gen.latent_spec.space == "z"
  assert gen.image_shape == (16, 16, 1)
  render = jax.jit(lambda g, z: g(z))
  z = 5.0 * gen.sample_latents(jax.random.key(2), 4)
  y = render(gen, z)
  assert y.shape == (4, 16, 16, 1)
  assert float(jnp.max(jnp.abs(y))) <= 1.0
  # The decoder is batch-independent (eval mode: running BatchNorm statistics).
  np.testing.assert_allclose(np.asarray(render(gen, z.at[1:].set(-z[1:]))[0]), np.asarray(y[0]),
                             atol=1e-5)


def _np_kl(mean, logvar):
  return np.mean(np.sum(0.5 * (mean**2 + np.exp(logvar) - 1.0 - logvar), axis=1))


def test_vae_losses_match_numpy():
  rng = np.random.default_rng(0)
  x = rng.uniform(-1, 1, (4, 8, 8, 1)).astype(np.float32)
  x_hat = rng.uniform(-1, 1, (4, 8, 8, 1)).astype(np.float32)
  mean = rng.normal(size=(4, 6)).astype(np.float32)
  logvar = rng.normal(size=(4, 6)).astype(np.float32)

  loss, aux = losses.log_mse_kl_loss(x, x_hat, mean, logvar, kl_weight=0.01)
  mse = np.mean((x - x_hat) ** 2)
  np.testing.assert_allclose(float(aux["recon"]), np.log(mse), rtol=1e-5)
  np.testing.assert_allclose(float(aux["kl"]), _np_kl(mean, logvar), rtol=1e-5)
  np.testing.assert_allclose(float(loss), np.log(mse) + 0.01 * _np_kl(mean, logvar), rtol=1e-5)

  sigma, beta = 0.3, 4.0
  loss, aux = losses.elbo_loss(x, x_hat, mean, logvar, sigma=sigma, beta=beta)
  # -log N(x; x_hat, sigma^2) summed over pixels, per sample, then averaged.
  nll = np.mean([np.sum(0.5 * ((xi - yi) / sigma) ** 2 + math.log(sigma * math.sqrt(2 * math.pi)))
                 for xi, yi in zip(x, x_hat)])
  np.testing.assert_allclose(float(aux["recon"]), nll, rtol=1e-5)
  np.testing.assert_allclose(float(loss), nll + beta * _np_kl(mean, logvar), rtol=1e-5)


def test_gaussian_kl_is_zero_at_the_prior():
  assert float(jnp.max(jnp.abs(losses.gaussian_kl(jnp.zeros((2, 5)), jnp.zeros((2, 5)))))) == 0.0
