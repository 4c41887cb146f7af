"""Inverting dataset slices keeps their subject / slice metadata."""

from __future__ import annotations

import functools

import jax.numpy as jnp
import numpy as np
import pytest

from jaxlatent.data.dataset import SliceDataset
from jaxlatent.errors import DataError
from jaxlatent.generator import Generator, LatentSpec
from jaxlatent.inversion import invert_slices, invert_vae

S, D = 8, 4


def _dataset():
  rng = np.random.default_rng(0)
  n = 5
  z = rng.normal(size=(n, D)).astype(np.float32)
  basis = rng.normal(size=(D, S * S)).astype(np.float32) * 0.2
  images = np.tanh(z @ basis).reshape(n, S, S, 1).astype(np.float32)
  masks = np.ones((n, S, S), bool)
  masks[:, :2] = False
  ds = SliceDataset(images=images, masks=masks,
                    subject_id=np.array(["a", "b", "a", "b", "a"]),
                    source_file=np.array(["a.nii.gz", "b.nii.gz", "a.nii.gz", "b.nii.gz",
                                          "a.nii.gz"]),
                    slice_index=np.array([7, 3, 5, 4, 6]),
                    slice_position=np.linspace(0, 1, n).astype(np.float32))
  gen = Generator({"B": jnp.asarray(basis)},
                  lambda p, zz: jnp.tanh(zz @ p["B"]).reshape(-1, S, S, 1), LatentSpec((D,)),
                  (S, S, 1), name="lin")
  return ds, gen, z, basis


def test_invert_slices_metadata_and_mask():
  ds, gen, z, basis = _dataset()
  pinv = np.linalg.pinv(basis)  # [S*S, D]

  def encode_fn(images):
    h = jnp.arctanh(jnp.clip(images.reshape(images.shape[0], -1), -0.999, 0.999))
    return h @ pinv, jnp.zeros((images.shape[0], D))

  seen = {}

  def spy(targets, mask=None):
    seen["mask"] = mask
    return invert_vae(gen, encode_fn, targets, mask=mask)

  out = invert_slices(ds, spy, subjects=["a"], use_mask=True)
  np.testing.assert_array_equal(out.indices, [0, 2, 4])
  np.testing.assert_array_equal(out.subject_id, ["a", "a", "a"])
  np.testing.assert_array_equal(out.slice_index, [7, 5, 6])
  np.testing.assert_array_equal(np.asarray(seen["mask"]), ds.masks[[0, 2, 4]])
  np.testing.assert_allclose(np.asarray(out.result.latents), z[[0, 2, 4]], atol=1e-3)
  np.testing.assert_array_equal(out.positions("a"), [1, 2, 0])  # by slice index 5, 6, 7
  rows = out.rows()
  assert [r["slice_index"] for r in rows] == [7, 5, 6] and rows[0]["source_file"] == "a.nii.gz"
  assert all(r["error"] < 1e-5 for r in rows)
  # Explicit indices (bool mask) and no mask.
  out2 = invert_slices(ds, functools.partial(invert_vae, gen, encode_fn),
                       indices=np.array([False, True, False, True, False]))
  np.testing.assert_array_equal(out2.subject_id, ["b", "b"])
  with pytest.raises(DataError, match="not in the dataset"):
    invert_slices(ds, spy, subjects=["zz"])
  with pytest.raises(DataError, match="not among"):
    out2.positions("a")
