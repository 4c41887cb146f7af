"""GANSpace: principal components of latents or early activations (Härkönen et al. 2020).

Two modes:
  * latent PCA: PCA of codes drawn from the generator's sampling distribution
    (``Generator.sample_latents``: mapped w for StyleGAN's w / w+, N(0, I) for z);
  * feature PCA: PCA of an early layer's activations ``features_fn(latents) -> [B, F]``
    (e.g. the DCGAN's first-layer output), then the latent basis U is found by least
    squares so that ``z - mean_z ~= x @ U`` with ``x`` the samples' PCA coordinates.
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxlatent.directions import vector_ops
from jaxlatent.directions.io import Directions
from jaxlatent.errors import ConfigError


def pca(x, num_components: int | None = None) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
  """PCA of rows ``x [N, F]``.

  Uses the smaller of the ``F x F`` covariance and the ``N x N`` Gram matrix, so
  wide features (e.g. 4*4*2048 DCGAN activations) stay cheap.

  Returns:
    ``(components [C, F] unit rows, variances [C], explained_variance_ratio [C],
    mean [F])``, variances descending, signs fixed.
  """
  x = jnp.asarray(x, jnp.float32)
  n, f = x.shape
  if n < 2:
    raise ConfigError(f"PCA needs at least 2 samples, got {n}")
  c = min(n, f) if num_components is None else int(num_components)
  if not 1 <= c <= min(n, f):
    raise ConfigError(f"num_components must be in 1..{min(n, f)}, got {num_components}")
  return _pca(x, c)


@functools.partial(jax.jit, static_argnames=("c",))
def _pca(x, c):
  n, f = x.shape
  mean = x.mean(0)
  xc = x - mean
  total = (xc**2).sum() / (n - 1)
  if f <= n:
    evals, evecs = jnp.linalg.eigh(xc.T @ xc / (n - 1))  # [F], [F, F]
    order = jnp.argsort(-evals)[:c]
    comps, var = evecs[:, order].T, evals[order]
  else:
    evals, evecs = jnp.linalg.eigh(xc @ xc.T / (n - 1))  # [N], [N, N]
    order = jnp.argsort(-evals)[:c]
    var = jnp.maximum(evals[order], 0.0)
    comps = vector_ops.unit_rows((xc.T @ evecs[:, order]).T)  # [C, F]
  comps = vector_ops.fix_signs(comps)
  return comps, var, var / total, mean


def _sample(generator, key, num_samples, batch_size):
  n_batches = -(-num_samples // batch_size)
  keys = jax.random.split(key, n_batches)
  z = jax.lax.map(lambda k: generator.sample_latents(k, batch_size), keys)
  return z.reshape((-1, *generator.latent_spec.shape))[:num_samples]


def ganspace(generator, key: jax.Array, num_components: int | None = None, *,
             num_samples: int = 10_000, features_fn: Callable[[jax.Array], jax.Array] | None = None,
             batch_size: int = 1000, latents: jax.Array | None = None) -> Directions:
  """GANSpace directions of a Generator.

  Args:
    generator: any Generator; codes come from ``generator.sample_latents``.
    key: sampling key.
    num_components: C (default: all of min(D, F)); GANSpace uses 80.
    num_samples: N codes to draw (ignored when ``latents`` is given).
    features_fn: ``latents [B, *shape] -> [B, F]`` early-layer activations; None:
      PCA of the latents themselves.
    batch_size: codes per sampling call.
    latents: optional ``[N, *shape]`` codes to use instead of sampling.

  Returns:
    Directions with unit ``vectors [C, *latent_shape]``, and scores
    ``explained_variance_ratio [C]``, ``variance [C]``, ``latent_std [C]`` (std of the
    samples' coordinate along each direction: a natural traversal scale).
  """
  spec = generator.latent_spec
  if latents is None:
    latents = _sample(generator, key, num_samples, batch_size)
  z = jnp.asarray(latents, jnp.float32).reshape(latents.shape[0], -1)  # [N, D]
  if features_fn is None:
    comps, var, ratio, mean = pca(z, num_components)  # comps [C, D]
    dirs = comps
    mode = "latent"
  else:
    feats = features_fn(latents)
    feats = feats.reshape(feats.shape[0], -1)  # [N, F]
    comps, var, ratio, fmean = pca(feats, num_components)  # [C, F]
    x = (feats - fmean) @ comps.T  # [N, C] PCA coordinates
    zc = z - z.mean(0)
    u, *_ = jnp.linalg.lstsq(x, zc)  # [C, D]: zc ~= x @ U
    dirs = vector_ops.fix_signs(vector_ops.unit_rows(u))
    mode = "features"
  coords = (z - z.mean(0)) @ dirs.T  # [N, C]
  dirs = np.asarray(dirs).reshape((dirs.shape[0], *spec.shape))
  return Directions(
      vectors=dirs, method="ganspace", model=generator.name, space=spec.space,
      scores={"explained_variance_ratio": np.asarray(ratio), "variance": np.asarray(var),
              "latent_std": np.asarray(coords.std(0))},
      meta={"mode": mode, "num_samples": int(z.shape[0])})
