"""Ground truth on the brain phantom: the true HC -> MS difference map, and the
eigen-analysis of the ideal (factor-space) traversal against it."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import scipy.ndimage as ndi

from jaxlatent import phantoms
from jaxlatent.analysis import (default_alphas, difference_map_correlation, eigen_analysis,
                                phantom_difference_map)

SIZE = 32
HC = dict(ventricle_size=0.9, atrophy=0.1, lesion_load=0.0, slice_position=0.5, rotation=0.0)
MS = dict(ventricle_size=1.5, atrophy=0.5)


def _one(f):
  return {k: jnp.asarray([v], jnp.float32) for k, v in f.items()}


def _ideal_traversal(kind, factors, changed, alphas, size, key):
  """What a perfectly disentangled generator renders: factors moved linearly to ``changed``
  for the same subject, noise-free ([T, size, size])."""
  base = {**{k: float(v) for k, v in factors.items()}, "noise": 0.0}
  top = float(np.max(alphas))
  frames = []
  for a in (np.asarray(alphas) / top).tolist():
    f = {**base, **{n: base.get(n, float(phantoms.factor_table(kind)[n][2]))
                    + a * (float(end) - base.get(n, float(phantoms.factor_table(kind)[n][2])))
                    for n, end in changed.items()}}
    frames.append(phantoms.render(kind, _one(f), size, key)[0])
  return jnp.stack(frames)


def test_difference_map_and_ideal_traversal():
  key = jax.random.PRNGKey(3)
  alphas = default_alphas()
  truth = phantom_difference_map("brain", _one(HC), _one(MS), SIZE, key)[0]  # [S, S]
  # The truth sits where the tissue labels change (ventricles, GM ribbon, sulci).
  lab_hc = phantoms.render_labels("brain", _one(HC), SIZE, key)[0]
  lab_ms = phantoms.render_labels("brain", _one({**HC, **MS}), SIZE, key)[0]
  changed = ndi.binary_dilation(np.asarray(lab_hc != lab_ms))
  energy = np.asarray(truth) ** 2
  assert energy[changed].sum() > 0.85 * energy.sum()
  # Ventricles grow: CSF replaces brighter tissue, so the change there is negative.
  grown = np.asarray((lab_ms == 4) & (lab_hc != 4))
  assert grown.any() and np.all(np.asarray(truth)[grown] < 0)
  # The ideal traversal of the same subject ends exactly at the true difference.
  imgs = _ideal_traversal("brain", HC, MS, alphas, SIZE, key)  # [T, S, S]
  np.testing.assert_allclose(np.asarray(imgs[-1] - imgs[0]), np.asarray(truth), atol=1e-6)
  # Eigen-analysis of the traversal (intensities mapped to [-1, 1] as the data pipeline
  # would): component 2 is ~linear in alpha and shows the true change, better than a
  # subtraction map from a middle step (the final one is the truth by construction).
  mask = phantoms.render_masks("brain", _one(HC), SIZE, key)[0]
  res = eigen_analysis((imgs / 0.4 - 1.0)[..., None], mask, alphas)
  assert float(res.corr_alpha[1]) > 0.99
  c2 = float(difference_map_correlation(res.component_maps[1], truth, mask))
  mid = float(difference_map_correlation(res.subtraction_maps[7], truth, mask))
  assert c2 > 0.85 and c2 > mid
