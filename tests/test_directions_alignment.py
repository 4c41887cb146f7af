"""Factor alignment scores on a toy generator with known factors."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlatent.directions import (Directions, disentanglement_scores, factor_alignment,
                                  load_factor_regressor, save_factor_regressor,
                                  train_factor_regressor)
from jaxlatent.errors import DataError
from jaxlatent.directions import toy


def _blob_measure(num, size):
  """Exact 'factor regressor': the mean intensity in each blob's region."""
  bumps = toy.bump_images(num, size)
  masks = (bumps > 0.5).astype(jnp.float32)
  masks = masks / masks.sum(axis=(1, 2), keepdims=True)

  def measure(images):
    return jnp.einsum("bhw,fhw->bf", images[..., 0], masks)

  return measure


def test_planted_directions_align_with_their_factor():
  gen, planted = toy.bump_generator(jax.random.key(0), 4, 16, gain=0.5)
  names = ["rotation", "slice position", "breast size", "contrast"]
  d = Directions(planted, "planted", names=["p0", "p1", "p2", "p3"])
  res = factor_alignment(gen, d, _blob_measure(4, 16), (-2.0, -1.0, 0.0, 1.0, 2.0),
                         jax.random.key(1), num_latents=6, factor_names=names)
  np.testing.assert_array_equal(res.best_factor, [0, 1, 2, 3])
  assert np.all(res.score > 0.9)
  assert res.names == names  # named by best factor
  assert res.summary["dci_disentanglement"] > 0.6 and res.summary["mig_gap"] > 0.8
  assert np.all(res.r2[np.arange(4), res.best_factor] > 0.8)
  rows = res.rows()
  assert rows[1]["best_factor"] == "slice position" and rows[1]["alignment"] > 0.9
  named = res.apply_to(d)
  assert named.names == names and "alignment" in named.scores
  # A 45-degree mix of two planted directions is half aligned and keeps its name.
  mixed = (planted[0] + planted[1]) / np.sqrt(2)
  res2 = factor_alignment(gen, np.stack([mixed, planted[2]]), _blob_measure(4, 16),
                          (-2.0, -1.0, 0.0, 1.0, 2.0), jax.random.key(1), num_latents=6,
                          factor_names=names)
  assert 0.35 < res2.score[0] < 0.65 and res2.names[0] == "d0"
  assert res2.summary["dci_disentanglement"] < res.summary["dci_disentanglement"]


def test_disentanglement_scores_extremes():
  perfect = disentanglement_scores(np.eye(3))
  assert perfect["dci_disentanglement"] == pytest.approx(1.0)
  assert perfect["dci_completeness"] == pytest.approx(1.0)
  assert perfect["mig_gap"] == pytest.approx(1.0)
  flat = disentanglement_scores(np.ones((3, 3)))
  assert flat["dci_disentanglement"] == pytest.approx(0.0, abs=1e-9)
  assert flat["dci_completeness"] == pytest.approx(0.0, abs=1e-9)
  assert flat["mig_gap"] == pytest.approx(0.0)


def test_trained_regressor_drives_alignment(tmp_path):
  """A small CNN learns the planted coordinates from images, then scores the directions."""
  gen, planted = toy.bump_generator(jax.random.key(2), 3, 16, gain=0.5)
  z = jax.random.normal(jax.random.key(3), (768, 3))
  u = z @ gen.params["P"]  # ground-truth factors: planted coordinates
  # 100 steps reach validation R^2 ~0.99 and scores ~0.95 here, far above the bounds.
  reg = train_factor_regressor(gen(z), u, jax.random.key(4), ["a", "b", "c"], steps=100,
                               batch_size=64, width=8)
  assert np.all(np.asarray(reg.val_r2) > 0.8)
  res = factor_alignment(gen, planted, reg, (-1.0, 0.0, 1.0), jax.random.key(5), num_latents=4)
  np.testing.assert_array_equal(res.best_factor, [0, 1, 2])
  assert np.all(res.score > 0.6) and res.names == ["a", "b", "c"]
  # Saved and loaded, the regressor scores the directions identically.
  path = os.path.join(tmp_path, "factor_regressor.npz")
  save_factor_regressor(path, reg, {"seed": 4, "steps": 100})
  loaded, fingerprint = load_factor_regressor(path)
  assert fingerprint == {"seed": 4, "steps": 100} and loaded.factor_names == ("a", "b", "c")
  res_loaded = factor_alignment(gen, planted, loaded, (-1.0, 0.0, 1.0), jax.random.key(5),
                                num_latents=4)
  np.testing.assert_array_equal(res_loaded.slopes, res.slopes)
  with open(path, "wb") as f:
    f.write(b"not an npz")
  with pytest.raises(DataError, match="not a saved factor regressor"):
    load_factor_regressor(path)


def test_phantom_images_are_normalised_like_the_data_pipeline():
  from jaxlatent import phantoms
  from jaxlatent.data import intensity
  from jaxlatent.directions import phantom_images
  f = phantoms.sample_factors("thorax", jax.random.key(0), 4)
  images = phantom_images("thorax", f, 16, jax.random.key(1))
  assert images.shape == (4, 16, 16, 1)
  ref = intensity.window_ct(np.asarray(phantoms.render("thorax", f, 16, jax.random.key(1))))
  np.testing.assert_allclose(images[..., 0], ref, atol=1e-6)  # HU [-1000, 2000] -> [-1, 1]


def test_display_order_puts_the_best_aligned_direction_per_factor_first():
  from jaxlatent.directions import Directions, in_display_order  # pylint: disable=g-import-not-at-top
  rows = [{"direction": f"d{k}", "name": n, "best_factor": f, "alignment": a}
          for k, (n, f, a) in enumerate([("d0", "lung_size", 0.3), ("rotation", "rotation", 0.6),
                                         ("slice_position", "slice_position", 0.9),
                                         ("rotation", "rotation", 0.7), ("d4", "rotation", 0.2)])]
  vecs = np.eye(5, dtype=np.float32)
  d = Directions(vecs, "voynov", names=[r["name"] for r in rows], meta={"alignment_rows": rows})
  shown = in_display_order(d)
  assert shown.meta["display_order"] == [2, 3, 0, 1, 4]
  assert shown.names == ["slice_position (d2)", "rotation (d3)", "d0", "rotation (d1)", "d4"]
  np.testing.assert_array_equal(shown.vectors, vecs[[2, 3, 0, 1, 4]])
  assert [r["direction"] for r in shown.meta["alignment_rows"]] == ["d2", "d3", "d0", "d1", "d4"]
  assert d.names[1] == "rotation" and "display_order" not in d.meta  # the original is kept
  plain = Directions(vecs, "sefa")
  assert in_display_order(plain) is plain  # no alignment (real data): unchanged
