"""z inversion (Creswell & Bharath), VAE inversion and the reconstruction losses."""

from __future__ import annotations

import functools

import dm_pix
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlatent.errors import ConfigError
from jaxlatent.generator import from_flax
from jaxlatent.inversion import (invert_vae, invert_z, multiscale_ssim_loss, pixel_mse,
                                 reconstruction_loss)
from jaxlatent.inversion.losses import ssim as ssim_fn

Z_DIM, S = 8, 16


def random_variables(module, *args, seed=0):
  """Variables filled from NumPy (kernels ~ N(0, 1/fan_in), biases 0): no compiled
  flax init, which is slow to compile on CPU."""
  shapes = jax.eval_shape(module.init, jax.random.PRNGKey(0), *args)
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    if str(getattr(path[-1], "key", path[-1])) == "bias":
      return jnp.zeros(leaf.shape, jnp.float32)
    return jnp.asarray(rng.normal(size=leaf.shape) / np.sqrt(np.prod(leaf.shape[:-1])),
                       jnp.float32)

  return jax.tree_util.tree_map_with_path(fill, shapes)


class ToyMLP(nn.Module):
  """A tiny fixed-random MLP generator z [B, 8] -> [B, 16, 16, 1] in (-1, 1)."""

  @nn.compact
  def __call__(self, z):
    h = jnp.tanh(nn.Dense(32)(z))
    return jnp.tanh(nn.Dense(S * S)(h)).reshape(z.shape[0], S, S, 1)


@pytest.fixture(scope="module")
def toy():
  module = ToyMLP()
  variables = random_variables(module, jnp.zeros((1, Z_DIM)), seed=0)
  gen = from_flax(module, variables, (Z_DIM,), (S, S, 1))
  z_true = jax.random.normal(jax.random.PRNGKey(1), (6, Z_DIM))
  return gen, z_true, gen(z_true)


def test_recovers_generated_images_and_restarts_help(toy):
  gen, _, targets = toy
  kw = dict(steps=300, learning_rate=0.02, prior_weight=1e-3)
  one = invert_z(gen, targets, jax.random.PRNGKey(2), restarts=1, **kw)
  four = invert_z(gen, targets, jax.random.PRNGKey(2), restarts=4, **kw)
  assert four.latents.shape == (6, Z_DIM) and four.reconstructions.shape == targets.shape
  assert four.restart_errors.shape == (4, 6) and four.loss_trace.shape == (4, 300)
  # Images the generator made are recovered.
  assert float(four.errors.max()) < 1e-3
  np.testing.assert_allclose(np.asarray(four.reconstructions), np.asarray(gen(four.latents)),
                             atol=1e-5)
  np.testing.assert_allclose(np.asarray(four.errors),
                             np.asarray(pixel_mse(gen(four.latents), targets)), rtol=1e-4)
  # Restart 0 is the same run in both; more restarts never do worse, and the best is kept.
  np.testing.assert_allclose(np.asarray(four.restart_errors[0]), np.asarray(one.errors),
                             rtol=1e-4, atol=1e-8)
  assert np.all(np.asarray(four.errors) <= np.asarray(one.errors) * (1 + 1e-4) + 1e-9)
  np.testing.assert_allclose(np.asarray(four.errors), np.asarray(four.restart_errors).min(0))
  # Creswell's coverage measure: mean +- std of the per-image errors.
  np.testing.assert_allclose(float(four.error_mean), np.asarray(four.errors).mean(), rtol=1e-5)
  np.testing.assert_allclose(float(four.error_std), np.asarray(four.errors).std(), rtol=1e-4)
  # The loss goes down.
  trace = np.asarray(four.loss_trace)
  assert np.all(trace[:, -1] < 0.1 * trace[:, 0])


def test_adam_and_prior_weight(toy):
  gen, _, targets = toy
  kw = dict(steps=200, restarts=1, optimizer="adam", learning_rate=0.05)
  free = invert_z(gen, targets, jax.random.PRNGKey(3), prior_weight=0.0, **kw)
  strong = invert_z(gen, targets, jax.random.PRNGKey(3), prior_weight=50.0, **kw)
  assert float(free.errors.max()) < 1e-3
  # A strong N(0, I) prior pulls the codes towards 0 at the cost of reconstruction.
  norm = lambda z: float(jnp.linalg.norm(z, axis=1).mean())  # noqa: E731
  assert norm(strong.latents) < 0.9 * norm(free.latents)
  assert float(strong.error_mean) > float(free.error_mean)
  with pytest.raises(ConfigError, match="optimizer"):
    invert_z(gen, targets, jax.random.PRNGKey(3), optimizer="sgd", steps=2)
  with pytest.raises(ConfigError, match="targets"):
    invert_z(gen, targets[..., 0], jax.random.PRNGKey(3), steps=2)


def test_masked_inversion_ignores_background(toy):
  gen, _, targets = toy
  yy, xx = np.mgrid[:S, :S]
  mask = jnp.asarray((yy - 7.5) ** 2 + (xx - 7.5) ** 2 <= 36)  # [H, W]
  garbage = jnp.where(mask[None, :, :, None], targets,
                      jax.random.uniform(jax.random.PRNGKey(4), targets.shape, minval=-1))
  kw = dict(steps=50, restarts=2, mask=mask)  # the masked SSIM term: test_losses_*
  clean = invert_z(gen, targets, jax.random.PRNGKey(5), **kw)
  dirty = invert_z(gen, garbage, jax.random.PRNGKey(5), **kw)
  np.testing.assert_allclose(np.asarray(dirty.latents), np.asarray(clean.latents), atol=1e-6)
  np.testing.assert_allclose(np.asarray(dirty.errors), np.asarray(clean.errors), rtol=1e-5)


def test_losses_masked_and_ssim():
  rng = np.random.default_rng(6)
  a_np = rng.uniform(-1, 1, (3, S, S, 1)).astype(np.float32)
  a = jnp.asarray(a_np)
  b = jnp.asarray(np.clip(a_np + 0.2 * rng.normal(size=a_np.shape), -1, 1), jnp.float32)
  m = np.zeros((S, S), bool)
  m[4:12, 3:13] = True
  mask = jnp.asarray(m)
  # MSE over the foreground matches NumPy.
  ref = ((np.asarray(a) - np.asarray(b))[:, m, 0] ** 2).mean(1)
  np.testing.assert_allclose(np.asarray(pixel_mse(a, b, mask)), ref, rtol=1e-5)
  # Our SSIM gives dm_pix's values (at the window sizes the multi-scale loss uses).
  for fs in (7,):
    ref = jax.jit(functools.partial(dm_pix.ssim, max_val=2.0, filter_size=fs,
                                    filter_sigma=1.5 * fs / 11))(a, b)
    np.testing.assert_allclose(np.asarray(ssim_fn(a, b, filter_size=fs,
                                                  filter_sigma=1.5 * fs / 11)),
                               np.asarray(ref), atol=1e-5)
  # SSIM term: 0 for identical images, positive otherwise, per image.
  ssim = jax.jit(multiscale_ssim_loss)
  np.testing.assert_allclose(np.asarray(ssim(a, a)), 0.0, atol=1e-5)
  assert np.all(np.asarray(ssim(a, b)) > 0.05)
  # Background changes of the target change neither the masked loss nor its gradient.
  b2 = jnp.where(mask[None, :, :, None], b, -b)
  per_image = lambda p, t: reconstruction_loss(p, t, mask, ssim_weight=1.0)  # noqa: E731
  value_grad = jax.jit(jax.value_and_grad(lambda p, t: per_image(p, t).sum()))
  (l1, g1), (l2, g2) = value_grad(a, b), value_grad(a, b2)
  np.testing.assert_allclose(float(l1), float(l2), rtol=1e-6)
  np.testing.assert_allclose(np.asarray(g1), np.asarray(g2), atol=1e-7)
  assert float(jnp.abs(g1[:, ~m]).max()) == 0.0
  # Per-image losses: changing image 1 leaves the loss of images 0 and 2 unchanged.
  per_image = jax.jit(per_image)
  l_a, l_c = per_image(a, b), per_image(a.at[1].set(-a[1]), b)
  np.testing.assert_allclose(np.asarray(l_a)[[0, 2]], np.asarray(l_c)[[0, 2]], rtol=1e-6)
  assert abs(float(l_a[1] - l_c[1])) > 1e-3


class ToyLinearTanh(nn.Module):
  """x = tanh(A z): an encoder can invert it exactly (arctanh, then a pseudo-inverse)."""

  @nn.compact
  def __call__(self, z):
    return jnp.tanh(nn.Dense(S * S, use_bias=False)(z)).reshape(z.shape[0], S, S, 1)


def test_vae_encoder_mean_and_refinement():
  module = ToyLinearTanh()
  variables = jax.tree.map(lambda v: 0.5 * v,  # keep tanh away from saturation
                           random_variables(module, jnp.zeros((1, Z_DIM)), seed=7))
  gen = from_flax(module, variables, (Z_DIM,), (S, S, 1), name="toy-decoder")
  a_pinv = jnp.linalg.pinv(variables["params"]["Dense_0"]["kernel"].T)  # [D, S*S]
  z_true = jax.random.normal(jax.random.PRNGKey(8), (5, Z_DIM))
  targets = gen(z_true)

  def encode_fn(images):
    """An imperfect amortized encoder: the exact inverse, shrunk by 0.7."""
    h = jnp.arctanh(jnp.clip(images.reshape(images.shape[0], -1), -0.999, 0.999))
    mean = 0.7 * h @ a_pinv.T
    return mean, jnp.zeros_like(mean)

  enc = invert_vae(gen, encode_fn, targets)
  np.testing.assert_allclose(np.asarray(enc.latents), 0.7 * np.asarray(z_true), atol=1e-3)
  assert enc.loss_trace.shape == (1, 0)
  ref = invert_vae(gen, encode_fn, targets, refine_steps=150, key=jax.random.PRNGKey(9),
                   learning_rate=0.02, prior_weight=0.0)
  assert np.all(np.asarray(ref.errors) < 0.1 * np.asarray(enc.errors))
  np.testing.assert_allclose(np.asarray(ref.latents), np.asarray(z_true), atol=0.05)
