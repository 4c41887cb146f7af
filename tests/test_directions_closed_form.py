"""SeFa and GANSpace: NumPy references and planted principal axes."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlatent import ConfigError, Generator, LatentSpec, from_flax
from jaxlatent.directions import (first_dense_kernel, ganspace, match_directions, pca, sefa,
                                  sefa_directions, style_kernels)
from jaxlatent.directions import toy


def _abs_cos(a, b):
  a = np.asarray(a, np.float64).reshape(len(a), -1)
  b = np.asarray(b, np.float64).reshape(len(b), -1)
  a /= np.linalg.norm(a, axis=1, keepdims=True)
  b /= np.linalg.norm(b, axis=1, keepdims=True)
  return np.abs((a * b).sum(1))


def test_sefa_matches_numpy_eigh():
  w = np.random.default_rng(0).normal(size=(6, 20)).astype(np.float32)
  dirs, evals = sefa(w)
  wn = w / np.linalg.norm(w, axis=0, keepdims=True)
  ref_vals, ref_vecs = np.linalg.eigh(wn @ wn.T)
  order = np.argsort(-ref_vals)
  np.testing.assert_allclose(evals, ref_vals[order], rtol=1e-4)
  np.testing.assert_allclose(_abs_cos(dirs, ref_vecs[:, order].T), 1.0, atol=1e-4)
  np.testing.assert_allclose(np.linalg.norm(dirs, axis=1), 1.0, atol=1e-5)
  raw, raw_vals = sefa(w, 2, normalize=False)  # without column normalisation
  ref_vals, ref_vecs = np.linalg.eigh(w @ w.T)
  np.testing.assert_allclose(raw_vals, ref_vals[::-1][:2], rtol=1e-4)
  np.testing.assert_allclose(_abs_cos(raw, ref_vecs[:, ::-1][:, :2].T), 1.0, atol=1e-4)


def test_sefa_recovers_planted_axes():
  """Kernel columns cluster on three planted axes with 30 / 18 / 10 columns each."""
  rng = np.random.default_rng(1)
  planted = np.asarray(toy.random_orthonormal(jax.random.key(3), 8))[:3]
  cols = [planted[i] for i, n in enumerate((30, 18, 10)) for _ in range(n)]
  w = np.stack(cols, axis=1) + 0.05 * rng.normal(size=(8, 58))  # [D, F]
  dirs, evals = sefa(w.astype(np.float32), 3)
  assert np.all(np.diff(np.asarray(evals)) < 0)
  assert np.all(_abs_cos(dirs, planted) > 0.99)  # in order of column counts


class _Gen(nn.Module):
  @nn.compact
  def __call__(self, z):
    h = nn.Dense(4 * 4 * 8, name="project")(z)
    h = nn.tanh(h).reshape(z.shape[0], 4, 4, 8)
    return nn.tanh(nn.Conv(1, (3, 3))(jax.image.resize(h, (z.shape[0], 8, 8, 8), "nearest")))


def test_sefa_pulls_first_dense_kernel_and_style_affines():
  module = _Gen()
  variables = jax.jit(module.init)(jax.random.key(0), jnp.zeros((1, 5)))
  gen = from_flax(module, variables, (5,), (8, 8, 1), name="tiny")
  kernel = first_dense_kernel(gen.params, 5)
  np.testing.assert_array_equal(kernel, variables["params"]["project"]["kernel"])
  d = sefa_directions(gen, num_components=3)
  ref, _ = sefa(kernel, 3)
  np.testing.assert_allclose(d.flat(), ref, atol=1e-6)
  assert d.method == "sefa" and d.vectors.shape == (3, 5)
  # StyleGAN-like tree: style affines of chosen layers are concatenated.
  rng = np.random.default_rng(0)
  params = {"params": {
      "mapping": {"Dense_0": {"kernel": rng.normal(size=(4, 4))}},
      "synthesis": {f"b{4 * 2**i}": {
          "conv1": {"affine": {"weight": rng.normal(size=(4, 6 + i)), "bias": np.zeros(6 + i)}},
          "torgb": {"affine": {"weight": rng.normal(size=(4, 3)), "bias": np.zeros(3)}}}
                    for i in (2, 0, 1)}}}  # stored out of order: b16, b4, b8
  ks = style_kernels(params, 4, layers=[0, 2])  # conv layers of b4 and b16, no ToRGB
  assert [k.shape for k in ks] == [(4, 6), (4, 8)]
  assert len(style_kernels(params, 4, include_torgb=True)) == 6
  wplus = Generator(params=params, apply_fn=lambda p, w: w,
                    latent_spec=LatentSpec((3, 4), "w+", "none"), image_shape=(3, 4, 1), name="sg")
  d = sefa_directions(wplus, num_components=2, layers=[0, 2])
  ref, _ = sefa([ks[0], ks[1]], 2)
  assert d.vectors.shape == (2, 3, 4)  # placed on the w's of the chosen layers only
  np.testing.assert_allclose(d.vectors[:, 0, :] * np.sqrt(2), ref, atol=1e-5)
  np.testing.assert_allclose(d.vectors[:, 2, :] * np.sqrt(2), ref, atol=1e-5)
  np.testing.assert_array_equal(d.vectors[:, 1, :], 0.0)
  with pytest.raises(ConfigError):
    style_kernels(params, 4, layers=[5])


@pytest.mark.parametrize("n,f", [(50, 6), (6, 40)])
def test_pca_matches_numpy_svd(n, f):
  x = np.random.default_rng(2).normal(size=(n, f)) * np.linspace(3, 0.5, f)
  comps, var, ratio, mean = pca(x.astype(np.float32), 4)
  xc = x - x.mean(0)
  _, s, vt = np.linalg.svd(xc, full_matrices=False)
  np.testing.assert_allclose(var, s[:4]**2 / (n - 1), rtol=1e-3)
  np.testing.assert_allclose(ratio, s[:4]**2 / (s**2).sum(), rtol=1e-3)
  np.testing.assert_allclose(_abs_cos(comps, vt[:4]), 1.0, atol=1e-4)
  np.testing.assert_allclose(mean, x.mean(0), atol=1e-5)


def test_ganspace_latent_pca_recovers_anisotropic_sampling_axes():
  """A w-space-like generator whose sample_fn stretches planted axes by 4, 2, 1, 0.5, ..."""
  planted = toy.random_orthonormal(jax.random.key(5), 6)  # rows
  stds = jnp.asarray([4.0, 2.0, 1.0, 0.5, 0.3, 0.2])

  def sample_fn(params, key, n):
    return (jax.random.normal(key, (n, 6)) * stds) @ planted

  gen = Generator(params={}, apply_fn=lambda p, w: jnp.zeros((w.shape[0], 4, 4, 1)),
                  latent_spec=LatentSpec((6,), "w", "none"), image_shape=(4, 4, 1),
                  sample_fn=sample_fn, name="aniso")
  d = ganspace(gen, jax.random.key(0), 3, num_samples=4000)
  assert np.all(_abs_cos(d.vectors, planted[:3]) > 0.99)
  ratio = np.asarray(d.scores["explained_variance_ratio"])
  np.testing.assert_allclose(ratio, stds[:3]**2 / (stds**2).sum(), rtol=0.15)
  np.testing.assert_allclose(d.scores["latent_std"], stds[:3], rtol=0.1)
  assert d.space == "w" and d.meta["mode"] == "latent"


def test_ganspace_feature_pca_maps_back_to_latent():
  """Features z @ W (isotropic z): the top feature PCs map back to W's left singular vectors."""
  rng = np.random.default_rng(4)
  u = np.asarray(toy.random_orthonormal(jax.random.key(1), 5))
  v = np.linalg.qr(rng.normal(size=(30, 5)))[0]
  w = (u * np.array([5.0, 3.0, 1.5, 0.7, 0.3])) @ v.T  # [D=5, F=30], SVD known
  gen = Generator(params={}, apply_fn=lambda p, z: jnp.zeros((z.shape[0], 4, 4, 1)),
                  latent_spec=LatentSpec((5,)), image_shape=(4, 4, 1), name="feat")
  d = ganspace(gen, jax.random.key(2), 3, num_samples=3000,
               features_fn=lambda z: z @ jnp.asarray(w, jnp.float32))
  assert np.all(_abs_cos(d.vectors, u[:, :3].T) > 0.98)
  assert d.meta["mode"] == "features"
  np.testing.assert_allclose(np.linalg.norm(d.flat(), axis=1), 1.0, atol=1e-5)
  _, _, cos = match_directions(d.vectors, u[:, :3].T)
  assert cos.mean() > 0.98
