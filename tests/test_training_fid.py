"""fd_random_features: the Frechet distance against references, and its features."""

from __future__ import annotations

import numpy as np
import scipy.linalg

from jaxlatent.training import fid
from jaxlatent.training.testing import toy_dataset


def reference_fd(mu_a, sigma_a, mu_b, sigma_b):
  """The textbook formula with scipy's matrix square root (the FID reference code)."""
  covmean = scipy.linalg.sqrtm(sigma_a @ sigma_b).real
  return float(np.sum((mu_a - mu_b) ** 2) + np.trace(sigma_a) + np.trace(sigma_b)
               - 2 * np.trace(covmean))


def random_spd(rng, d):
  a = rng.standard_normal((d, d))
  return a @ a.T / d + 0.1 * np.eye(d)


def test_frechet_distance_matches_closed_form_and_scipy():
  rng = np.random.default_rng(0)
  # Diagonal Gaussians: FD = |mu_a - mu_b|^2 + sum (s_a - s_b)^2 with s the std devs.
  s_a, s_b = rng.uniform(0.5, 2, 6), rng.uniform(0.5, 2, 6)
  mu_a, mu_b = rng.standard_normal(6), rng.standard_normal(6)
  expected = np.sum((mu_a - mu_b) ** 2) + np.sum((s_a - s_b) ** 2)
  got = fid.frechet_distance(mu_a, np.diag(s_a**2), mu_b, np.diag(s_b**2))
  np.testing.assert_allclose(got, expected, rtol=1e-10)
  # Full covariances: the scipy.linalg.sqrtm reference.
  sa, sb = random_spd(rng, 12), random_spd(rng, 12)
  np.testing.assert_allclose(fid.frechet_distance(mu_a[:1].repeat(12), sa, mu_b[:1].repeat(12),
                                                  sb),
                             reference_fd(mu_a[:1].repeat(12), sa, mu_b[:1].repeat(12), sb),
                             rtol=1e-8)
  # A singular covariance (rank 3 of 12, as with fewer samples than features).
  low = rng.standard_normal((12, 3))
  np.testing.assert_allclose(fid.frechet_distance(np.zeros(12), low @ low.T, np.zeros(12), sb),
                             reference_fd(np.zeros(12), low @ low.T, np.zeros(12), sb),
                             rtol=1e-6, atol=1e-8)


def test_sample_gaussian_stats_recover_fd():
  rng = np.random.default_rng(1)
  a = rng.standard_normal((20000, 3)) * [1.0, 2.0, 0.5]
  b = rng.standard_normal((20000, 3)) * [1.5, 2.0, 0.5] + [1.0, 0.0, 0.0]
  got = fid.frechet_distance(*fid.gaussian_stats(a), *fid.gaussian_stats(b))
  np.testing.assert_allclose(got, 1.0 + 0.5**2, rtol=0.05)  # mean shift 1, std 1 -> 1.5


def test_fd_random_features_zero_for_same_set_and_grows_with_shift():
  images = toy_dataset(96, 16, seed=0).images
  others = toy_dataset(96, 16, seed=1).images  # same distribution, other draws
  scorer = fid.RandomFeatureFD(images, feature_seed=0, chunk=64)
  assert scorer(images) < 1e-6
  base = scorer(others)
  shifted = [scorer(np.clip(others + d, -1, 1)) for d in (0.1, 0.3, 0.6)]
  assert base < shifted[0] < shifted[1] < shifted[2]


def test_random_features_are_fixed_by_the_seed():
  k0, k0b, k1 = (fid.random_feature_params(s) for s in (0, 0, 1))
  for a, b in zip(k0, k0b):
    np.testing.assert_array_equal(a, b)
  assert not np.allclose(k0[0], k1[0])
  images = toy_dataset(8, 32).images
  feats = np.asarray(fid.extract_features(k0, images))
  assert feats.shape == (8, 2 * fid.FEATURE_CHANNELS[-1] + fid.NUM_HIST_BINS + 4)
  np.testing.assert_allclose(feats[:, -20:-4].sum(1), 1.0, rtol=1e-6)  # histograms
