"""InterFaceGAN boundaries and conditional editing on planted truth."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from jaxlatent import DataError
from jaxlatent.directions import condition_direction, fit_boundary


def _planted(seed, n=600, shape=(8,)):
  rng = np.random.default_rng(seed)
  d = int(np.prod(shape))
  scales = np.linspace(0.5, 3.0, d)  # anisotropic codes: tests the de-standardisation
  x = rng.normal(size=(n, d)) * scales
  normal = rng.normal(size=d)
  normal /= np.linalg.norm(normal)
  margin = x @ normal + 0.3
  y = (margin > 0).astype(np.int32)
  flip = rng.random(n) < 0.03  # a little label noise
  y[flip] = 1 - y[flip]
  return x.reshape((n, *shape)).astype(np.float32), y, normal.reshape(shape)


@pytest.mark.parametrize("method", ["svm", "hinge_adam", "logistic"])
def test_boundary_recovers_planted_normal(method):
  x, y, normal = _planted(0, shape=(2, 4))  # w+-shaped codes
  b = fit_boundary(x, y, jax.random.key(0), method=method, steps=400)
  assert b.normal.shape == (2, 4)
  cos = float((b.normal * normal).sum())
  assert cos > 0.95  # oriented class 0 -> class 1, not just |cos|
  assert b.num_val == pytest.approx(0.2 * 600, abs=2) and b.num_train + b.num_val == 600
  assert b.val_accuracy > 0.85 and b.train_accuracy > 0.85
  pred = (b.decision(x) > 0).astype(int)
  assert (pred == y).mean() > 0.85
  d = b.to_directions(name="HC->MS")
  assert d.names == ["HC->MS"] and d.scores["val_accuracy"] == b.val_accuracy


def test_boundary_orientation_flips_with_labels():
  x, y, normal = _planted(1)
  b0 = fit_boundary(x, y, jax.random.key(1), steps=300)
  b1 = fit_boundary(x, 1 - y, jax.random.key(1), steps=300)
  assert float(b0.normal @ normal) > 0.95 and float(b1.normal @ normal) < -0.95


def test_boundary_bad_labels():
  x, y, _ = _planted(2, n=40)
  with pytest.raises(DataError):
    fit_boundary(x, np.zeros(40), jax.random.key(0))
  with pytest.raises(DataError):
    fit_boundary(x, y + 1, jax.random.key(0))
  with pytest.raises(DataError):
    fit_boundary(x, y[:30], jax.random.key(0))


def _subjects_without_signal(seed, subjects=24, slices=6, dim=128):
  """Codes of subjects whose label has no linear signal; a subject's slices are
  near-duplicates (its own random code plus small noise)."""
  rng = np.random.default_rng(seed)
  centres = rng.normal(size=(subjects, dim))
  x = np.repeat(centres, slices, 0) + 0.05 * rng.normal(size=(subjects * slices, dim))
  subject_y = np.arange(subjects) % 2
  y = np.repeat(subject_y, slices)
  ids = np.repeat(np.array([f"sub{i:02d}" for i in range(subjects)]), slices)
  return x.astype(np.float32), y, ids


def test_group_split_holds_out_whole_subjects_of_both_classes():
  x, y, ids = _subjects_without_signal(0)
  b = fit_boundary(x, y, jax.random.key(3), method="mean_difference", groups=ids)
  from jaxlatent.directions.supervised import _split
  tr, va = _split(jax.random.key(3), y, 0.2, ids)
  assert len(tr) + len(va) == len(y) and not set(tr) & set(va)
  assert not set(ids[tr]) & set(ids[va])  # no subject on both sides
  held = sorted(set(ids[va]))
  assert len(held) == 2 * round(0.2 * 12)  # 20% of each class's 12 subjects
  assert set(y[va]) == {0, 1}
  assert b.num_val == len(va) and b.config["held_out"] == "groups"
  with pytest.raises(DataError, match="group ids"):
    fit_boundary(x, y, jax.random.key(3), groups=ids[:-1])


def test_code_split_overstates_held_out_accuracy_of_near_duplicate_slices():
  """The reason for ``groups``: an exact SVM memorises the subjects, and a split over
  slices scores it on slices of subjects it has seen; over subjects it is at chance."""
  x, y, ids = _subjects_without_signal(1)
  by_code = fit_boundary(x, y, jax.random.key(0), method="svm")
  by_subject = fit_boundary(x, y, jax.random.key(0), method="svm", groups=ids)
  assert by_code.train_accuracy == by_subject.train_accuracy == 1.0
  assert by_code.val_balanced_accuracy > 0.95
  assert 0.2 < by_subject.val_balanced_accuracy < 0.8


def test_condition_direction_is_orthogonal_to_removed_normals():
  rng = np.random.default_rng(3)
  primal = rng.normal(size=(2, 5))
  conds = rng.normal(size=(3, 2, 5))
  d = condition_direction(primal, conds)
  assert d.shape == (2, 5)
  np.testing.assert_allclose(np.linalg.norm(d), 1.0, atol=1e-6)
  np.testing.assert_allclose(conds.reshape(3, -1) @ d.reshape(-1), 0.0, atol=1e-5)
  # NumPy reference: (I - C^T (C C^T)^-1 C) p, normalised.
  c = conds.reshape(3, -1)
  p = primal.reshape(-1)
  ref = p - c.T @ np.linalg.solve(c @ c.T, c @ p)
  np.testing.assert_allclose(d.reshape(-1), ref / np.linalg.norm(ref), atol=1e-5)
  # The edit keeps moving toward the primal attribute.
  assert float(d.reshape(-1) @ p) > 0
  with pytest.raises(DataError):
    condition_direction(conds[0] + 2 * conds[1], conds)


def test_svm_without_a_useful_direction_is_a_data_error():
  """Random labels, 15 % positive: the C-SVM's optimum is w = 0 (all codes class 0)."""
  rng = np.random.default_rng(4)
  x = rng.normal(size=(200, 8)).astype(np.float32)
  y = (rng.random(200) < 0.15).astype(np.int32)
  with pytest.raises(DataError, match="no separating direction"):
    fit_boundary(x, y, jax.random.key(0), val_fraction=0.0)


def test_mean_difference_is_the_midpoint_boundary_of_the_class_means():
  x, y, _ = _planted(5, n=300, shape=(2, 4))
  b = fit_boundary(x, y, jax.random.key(0), method="mean_difference", val_fraction=0.0)
  flat = x.reshape(len(x), -1).astype(np.float64)
  m0, m1 = flat[y == 0].mean(0), flat[y == 1].mean(0)  # NumPy reference
  ref = (m1 - m0) / np.linalg.norm(m1 - m0)
  np.testing.assert_allclose(b.normal.reshape(-1), ref, atol=1e-6)
  np.testing.assert_allclose(b.offset, ref @ (m0 + m1) / 2, rtol=1e-5, atol=1e-6)
  assert b.config["standardize"] is False  # raw codes: the direction is the mean shift
  np.testing.assert_allclose(b.decision((m0 + m1)[None] / 2), 0.0, atol=1e-5)
  assert b.decision(m1[None])[0] > 0 > b.decision(m0[None])[0]
  flipped = fit_boundary(x, 1 - y, jax.random.key(0), method="mean_difference",
                         val_fraction=0.0)
  np.testing.assert_allclose(flipped.normal, -b.normal, atol=1e-6)


def test_mean_difference_is_the_svm_normal_as_c_goes_to_zero():
  """Balanced classes: with C -> 0 every code is a bound support vector, so the
  reference SVM's normal is the class-mean difference."""
  x, y, _ = _planted(6, n=200)
  keep = np.concatenate([np.flatnonzero(y == 0)[:60], np.flatnonzero(y == 1)[:60]])
  x, y = x[keep], y[keep]
  md = fit_boundary(x, y, jax.random.key(0), method="mean_difference", val_fraction=0.0)
  tiny = fit_boundary(x, y, jax.random.key(0), method="svm", val_fraction=0.0, c=1e-6)
  big = fit_boundary(x, y, jax.random.key(0), method="svm", val_fraction=0.0, c=1.0)
  assert float(tiny.normal @ md.normal) > 0.999
  assert float(big.normal @ md.normal) < 0.99  # C matters on these codes
