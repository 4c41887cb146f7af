"""The exact phantom edit as a path (attribute_edit.phantom_edit_path) and the MS ceiling
of validation/ceiling.py: what component 2 and subtraction reach on a known edit."""

from __future__ import annotations

import os
import sys

import numpy as np

from jaxlatent.analysis import attribute_edit as ae

S, N, T = 32, 3, 5


def test_path_starts_at_the_subjects_and_ends_at_their_edit():
  subj = ae.phantom_edit_subjects("brain", N, S, seed=7)
  path = ae.phantom_edit_path("brain", N, S, seed=7, steps=T)
  assert path.shape == (N, T, S, S, 1) and path.dtype == np.float32
  np.testing.assert_allclose(path[:, 0], subj.images, atol=1e-6)
  # The last frame is the changed subject: its change (noise cancels: same keys) is the
  # true difference map up to the per-frame intensity scaling, and it grows with t.
  for b in range(N):
    m = subj.masks[b]
    r = np.corrcoef((path[b, -1, ..., 0] - path[b, 0, ..., 0])[m], subj.true_difference[b][m])
    assert r[0, 1] > 0.99
  steps = np.abs(path[:, 1:] - path[:, :1]).mean(axis=(0, 2, 3, 4))
  assert np.all(np.diff(steps) > 0)
  fresh = ae.phantom_edit_path("brain", N, S, seed=7, steps=T, fresh_noise=True)
  np.testing.assert_allclose(fresh[:, 0], path[:, 0], atol=1e-6)  # frame 0 keeps its noise
  assert np.abs(fresh[:, 1:] - path[:, 1:]).max() > 0.05


def test_ms_ceiling_component2_maps_the_exact_edit_and_subtraction_is_exact():
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  from validation import ceiling  # pylint: disable=g-import-not-at-top
  exact = ceiling.ms_ceiling(S, N, T, seed=4321, slice_position=0.5)
  fresh = ceiling.ms_ceiling(S, N, T, seed=4321, slice_position=0.5, fresh_noise=True)
  # On an edit that is the only change, subtraction is the true map itself ...
  assert exact["subtraction_corr"]["mean"] > 0.99
  # ... component 2 maps it well and is ~linear in alpha ...
  assert exact["component2_corr"]["mean"] > 0.8
  assert exact["abs_corr_v2_alpha"]["mean"] > 0.98
  # Component 1 is the constant anatomy, component 2 the linear change.
  assert exact["polynomial_match_mean"][0] > 0.99 and exact["polynomial_match_mean"][1] > 0.98
  # ... and noise that changes along the path costs subtraction more than component 2.
  assert fresh["subtraction_corr"]["mean"] < exact["subtraction_corr"]["mean"] - 0.01
  drop = lambda k: exact[k]["mean"] - fresh[k]["mean"]
  assert drop("component2_corr") < drop("subtraction_corr")
