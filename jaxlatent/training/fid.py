"""Frechet distance in a fixed random feature space (``fd_random_features``).

What it is: the Frechet distance between two Gaussians fitted to image features,
``||mu_a - mu_b||^2 + tr(S_a) + tr(S_b) - 2 tr((S_a S_b)^(1/2))``, as in FID
(Heusel et al. 2017), but the features come from a small convolutional net whose
weights are drawn at random from a fixed NumPy seed (no download, no training),
concatenated with handcrafted intensity features (a 16-bin intensity histogram and
gradient-magnitude statistics).  Random conv features are known to rank generative
models sensibly (they respond to texture, edges and intensity statistics) and, being
seeded by NumPy's PCG64 generator, are identical on every machine and JAX version.

What it is NOT: it is not FID.  The numbers are not comparable with Inception-v3 FID
values in papers, nor between different image sizes or ``feature_seed`` values, nor
between different sample counts (like FID it is biased upward for small samples).
Use it to compare runs of this tool with the same ``image_size``, ``fid_num_samples``
and ``feature_seed``: lower is better, 0 means identical feature statistics.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

# Output channels of the stride-2 3x3 conv layers of the random feature net.
FEATURE_CHANNELS = (32, 64, 64, 64)
NUM_HIST_BINS = 16


def random_feature_params(feature_seed: int = 0,
                          channels: Sequence[int] = FEATURE_CHANNELS) -> list[np.ndarray]:
  """Draws the conv kernels ``[3, 3, C_in, C_out]`` (He-normal) from a fixed NumPy seed."""
  rng = np.random.default_rng(feature_seed)
  kernels, c_in = [], 1
  for c_out in channels:
    std = np.sqrt(2.0 / (9 * c_in))
    kernels.append((rng.standard_normal((3, 3, c_in, c_out)) * std).astype(np.float32))
    c_in = c_out
  return kernels


def _handcrafted_features(images: jax.Array) -> jax.Array:
  """Intensity histogram + gradient-magnitude stats: ``[N, H, W, 1] -> [N, 20]``."""
  x = images[..., 0]  # [N, H, W]
  edges = jnp.linspace(-1.0, 1.0, NUM_HIST_BINS + 1)
  # Bin index per pixel (values outside [-1, 1] fall into the end bins).
  idx = jnp.clip(jnp.searchsorted(edges, x, side="right") - 1, 0, NUM_HIST_BINS - 1)
  hist = jax.nn.one_hot(idx, NUM_HIST_BINS).mean(axis=(1, 2))  # [N, bins], fractions
  gy = x[:, 1:, :-1] - x[:, :-1, :-1]
  gx = x[:, :-1, 1:] - x[:, :-1, :-1]
  mag = jnp.sqrt(gx**2 + gy**2).reshape(x.shape[0], -1)  # [N, (H-1)(W-1)]
  grad = jnp.stack([mag.mean(1), mag.std(1), jnp.quantile(mag, 0.5, axis=1),
                    jnp.quantile(mag, 0.9, axis=1)], axis=1)  # [N, 4]
  return jnp.concatenate([hist, grad], axis=1)


def extract_features(kernels: Sequence[jax.Array], images: jax.Array) -> jax.Array:
  """Features of ``images[N, H, W, 1]`` in [-1, 1]: ``[N, 2 * C_last + 20]``.

  Random conv net (3x3 stride-2 convs + ReLU), then per-channel spatial mean and
  standard deviation of the last layer, then the handcrafted intensity features.
  """
  h = images.astype(jnp.float32)
  for k in kernels:
    h = jax.lax.conv_general_dilated(
        h, jnp.asarray(k), window_strides=(2, 2), padding="SAME",
        dimension_numbers=("NHWC", "HWIO", "NHWC"))
    h = jax.nn.relu(h)  # [N, H/2^l, W/2^l, C_l]
  conv = jnp.concatenate([h.mean(axis=(1, 2)), h.std(axis=(1, 2))], axis=1)
  return jnp.concatenate([conv, _handcrafted_features(images)], axis=1)


# One jitted function per process: every RandomFeatureFD shares its compilations.
_extract_features_jit = jax.jit(extract_features)


def gaussian_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Mean ``[D]`` and (unbiased) covariance ``[D, D]`` of ``features[N, D]``, float64."""
  f = np.asarray(features, np.float64)
  if f.ndim != 2 or f.shape[0] < 2:
    raise ValueError(f"need features [N >= 2, D], got shape {f.shape}")
  return f.mean(axis=0), np.cov(f, rowvar=False)


def frechet_distance(mu_a: np.ndarray, sigma_a: np.ndarray, mu_b: np.ndarray,
                     sigma_b: np.ndarray) -> float:
  """Frechet distance between N(mu_a, sigma_a) and N(mu_b, sigma_b).

  ``tr((S_a S_b)^(1/2))`` is computed as the sum of square roots of the eigenvalues of
  the symmetric PSD matrix ``S_a^(1/2) S_b S_a^(1/2)`` (same spectrum), with ``eigh``
  only: stable for singular covariances and free of the complex parts ``sqrtm`` gives.
  """
  mu_a, mu_b = np.asarray(mu_a, np.float64), np.asarray(mu_b, np.float64)
  sigma_a = np.atleast_2d(np.asarray(sigma_a, np.float64))
  sigma_b = np.atleast_2d(np.asarray(sigma_b, np.float64))
  w, v = np.linalg.eigh((sigma_a + sigma_a.T) / 2)
  sqrt_a = (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T
  m = sqrt_a @ sigma_b @ sqrt_a
  tr_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0.0, None)).sum()
  d = float(np.sum((mu_a - mu_b) ** 2) + np.trace(sigma_a) + np.trace(sigma_b) - 2 * tr_sqrt)
  return max(d, 0.0)


class RandomFeatureFD:
  """Scores image sets against a fixed reference set by ``fd_random_features``.

  The reference statistics are computed once; ``__call__(images)`` features the new
  images in chunks of ``chunk`` (one jitted function, one compile) and returns the FD.
  """

  def __init__(self, reference_images: np.ndarray, feature_seed: int = 0, chunk: int = 256):
    self.chunk = int(chunk)
    self.kernels = [jnp.asarray(k) for k in random_feature_params(feature_seed)]
    self.ref_mu, self.ref_sigma = gaussian_stats(self.features(reference_images))

  def features(self, images: np.ndarray) -> np.ndarray:
    """Features ``[N, D]`` of ``images[N, H, W, 1]`` (padded to whole chunks, one shape)."""
    images = np.asarray(images, np.float32)
    n = images.shape[0]
    out = []
    for start in range(0, n, self.chunk):
      part = images[start:start + self.chunk]
      pad = self.chunk - part.shape[0]
      if pad:  # keep one static shape: no recompiles for the last chunk
        part = np.concatenate([part, np.repeat(part[-1:], pad, axis=0)], axis=0)
      out.append(np.asarray(_extract_features_jit(self.kernels, part))[:self.chunk - pad])
    return np.concatenate(out, axis=0)

  def __call__(self, images: np.ndarray) -> float:
    mu, sigma = gaussian_stats(self.features(images))
    return frechet_distance(mu, sigma, self.ref_mu, self.ref_sigma)


def fd_random_features(images_a: np.ndarray, images_b: np.ndarray, feature_seed: int = 0,
                       chunk: int = 256) -> float:
  """One-shot ``fd_random_features`` between two image sets ``[N, H, W, 1]`` in [-1, 1]."""
  return RandomFeatureFD(images_b, feature_seed, chunk)(images_a)
