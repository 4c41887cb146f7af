"""Traversals on any Generator, and traversal -> eigen-analysis end to end."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlatent.analysis import (default_alphas, difference_map_correlation,
                                eigen_analysis_batched, traverse, traverse_and_analyze,
                                traverse_many)
from jaxlatent.errors import ConfigError
from jaxlatent.generator import Generator, LatentSpec

S = 16


def _linear_generator(latent_shape, key):
  """x = tanh(0.1 * (B @ vec(latent)) + base): smooth in the latent, fast."""
  d = int(np.prod(latent_shape))
  k1, k2 = jax.random.split(key)
  params = {"B": jax.random.normal(k1, (S * S, d)) / np.sqrt(d),
            "base": 0.5 * jax.random.normal(k2, (S * S,))}

  def apply_fn(p, z):
    flat = z.reshape(z.shape[0], -1)
    return jnp.tanh(0.1 * flat @ p["B"].T + p["base"]).reshape(z.shape[0], S, S, 1)

  space = "w+" if len(latent_shape) == 2 else "z"
  return Generator(params, apply_fn, LatentSpec(tuple(latent_shape), space,
                                                "none" if space == "w+" else "normal"),
                   (S, S, 1), name=f"linear-{space}")


def test_default_alphas():
  np.testing.assert_allclose(np.asarray(default_alphas()), np.linspace(0, 50, 15), rtol=1e-6)
  assert default_alphas(-6, 6, 5).shape == (5,)


@pytest.mark.parametrize("latent_shape", [(6,), (3, 4)])
def test_traverse_matches_loop_on_z_and_wplus(latent_shape):
  gen = _linear_generator(latent_shape, jax.random.PRNGKey(0))
  lat = jax.random.normal(jax.random.PRNGKey(1), (2,) + latent_shape)
  dirs = jax.random.normal(jax.random.PRNGKey(2), (2,) + latent_shape)
  alphas = jnp.asarray([0.0, 0.5, 7.0])  # uneven spacing
  out = traverse(gen, lat, dirs[0], alphas)
  assert out.shape == (2, 3, S, S, 1)
  for b in range(2):
    for t in range(3):
      np.testing.assert_allclose(np.asarray(out[b, t]),
                                 np.asarray(gen(lat[b:b + 1] + alphas[t] * dirs[0:1])[0]),
                                 atol=1e-6)
  many = traverse_many(gen, lat, dirs, alphas)
  assert many.shape == (2, 2, 3, S, S, 1)
  np.testing.assert_allclose(np.asarray(many[1]), np.asarray(traverse(gen, lat, dirs[1], alphas)),
                             atol=1e-6)
  # Rendering in chunks (lax.map) gives the same images.
  np.testing.assert_allclose(np.asarray(traverse_many(gen, lat, dirs, alphas, batch_size=5)),
                             np.asarray(many), atol=1e-6)
  # normalize=True walks along the unit direction.
  unit = dirs[0] / jnp.linalg.norm(dirs[0])
  np.testing.assert_allclose(np.asarray(traverse(gen, lat, dirs[0], alphas, normalize=True)),
                             np.asarray(traverse(gen, lat, unit, alphas)), atol=1e-6)
  with pytest.raises(ConfigError, match="direction"):
    traverse(gen, lat, dirs[0].reshape(-1)[:-1], alphas)


def test_traversal_to_eigen_analysis_end_to_end():
  """A generator whose direction 0 adds a planted pattern linearly: component 2 of
  every (subject, direction) traversal along it is linear in alpha and shows it."""
  d = 6
  yy, xx = np.mgrid[:S, :S]
  pattern = np.exp(-((yy - 5) ** 2 + (xx - 10) ** 2) / 8.0).reshape(-1)
  rng = np.random.default_rng(0)
  base = rng.normal(size=(S * S,))
  cols = rng.normal(size=(S * S, d)) * 0.05
  cols[:, 0] = pattern - pattern.mean()
  params = {"B": jnp.asarray(cols, jnp.float32), "base": jnp.asarray(base, jnp.float32)}
  gen = Generator(params, lambda p, z: (z @ p["B"].T + p["base"]).reshape(-1, S, S, 1),
                  LatentSpec((d,)), (S, S, 1), name="linear")
  lat = jax.random.normal(jax.random.PRNGKey(3), (2, d))
  dirs = jnp.eye(d)[:2] * 0.02  # direction 0: the pattern; direction 1: a nuisance column
  alphas = default_alphas()
  imgs = traverse_many(gen, lat, dirs, alphas)  # [K, B, T, H, W, 1]
  imgs = jnp.moveaxis(imgs, 0, 1)  # [B, K, T, H, W, 1]
  masks = jnp.ones((2, 1, S, S), bool)
  res = eigen_analysis_batched(imgs, masks, alphas, n_components=3)
  assert res.component_maps.shape == (2, 2, 3, S, S, 1)
  # A linear generator: every traversal is x0 + alpha * change, so v_2 is linear.
  assert float(res.corr_alpha[..., 1].min()) > 0.99
  # The same as one jitted program over subjects x slices x directions.
  one = traverse_and_analyze(gen, lat.reshape(2, 1, d), dirs, masks, alphas, n_components=3)
  assert one.component_maps.shape == (2, 1, 2, 3, S, S, 1)
  np.testing.assert_allclose(np.asarray(one.eigenvalues[:, 0]), np.asarray(res.eigenvalues),
                             rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(np.asarray(one.component_maps[:, 0, :, :2]),
                             np.asarray(res.component_maps[:, :, :2]), atol=1e-3)
  for b in range(2):
    c = difference_map_correlation(res.component_maps[b, 0, 1], jnp.asarray(
        pattern.reshape(S, S)), masks[0, 0])
    assert float(c) > 0.95
