"""The batched inverter API: config-driven inverter choice, padding, dataset metadata."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlatent.data.dataset import SliceDataset
from jaxlatent.errors import DataError
from jaxlatent.generator import Generator, LatentSpec
from jaxlatent.inversion import (default_inversion_config, invert_batched, invert_dataset,
                                 invert_vae, invert_z, make_inverter, select_subjects)

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


def _config(**over):
  c = default_inversion_config()
  c.update(vae_refine_steps=0, batch_size=2, **over)
  return c


def test_invert_dataset_keeps_metadata_and_pads_the_last_batch():
  ds, gen, z, basis = _dataset()
  pinv = np.linalg.pinv(basis)  # [S*S, D]

  def encode_fn(images):
    h = jnp.arctanh(jnp.clip(images.reshape(images.shape[0], -1), -0.999, 0.999))
    return h @ pinv, jnp.zeros((images.shape[0], D))

  rows = select_subjects(ds, 1)  # subject "a" only: rows 0, 2, 4
  np.testing.assert_array_equal(rows, [0, 2, 4])
  out = invert_dataset(gen, ds, rows, _config(), jax.random.PRNGKey(0), encode_fn=encode_fn)
  np.testing.assert_array_equal(out.indices, [0, 2, 4])
  np.testing.assert_array_equal(out.subject_id, ["a", "a", "a"])
  np.testing.assert_array_equal(out.slice_index, [7, 5, 6])
  assert out.latents.shape == (3, D) and out.reconstructions.shape == (3, S, S, 1)
  np.testing.assert_allclose(out.latents, z[[0, 2, 4]], atol=1e-3)  # 2 + 1 padded
  assert out.error_mean < 1e-5
  np.testing.assert_array_equal(out.positions("a"), [1, 2, 0])  # by slice index 5, 6, 7
  with pytest.raises(DataError, match="not among"):
    out.positions("b")
  with pytest.raises(DataError, match="no slices"):
    invert_dataset(gen, ds, np.array([], np.int64), _config(), jax.random.PRNGKey(0))
  np.testing.assert_array_equal(select_subjects(ds, 0, candidates=[1, 2]), [1, 2])


def test_use_mask_reaches_the_inverter_only_when_asked():
  ds, gen, _, _ = _dataset()
  seen = []

  def spy(targets, mask=None):
    seen.append(mask)
    return invert_vae(gen, lambda x: (jnp.zeros((x.shape[0], D)),) * 2, targets, mask=mask,
                      refine_steps=0)

  invert_batched(spy, ds.images, ds.masks, 8)
  np.testing.assert_array_equal(np.asarray(seen[-1]), ds.masks)
  invert_batched(spy, ds.images, None, 8)
  assert seen[-1] is None


def test_make_inverter_picks_z_inversion_without_an_encoder():
  ds, gen, _, _ = _dataset()
  fn = make_inverter(gen, _config(steps=3, restarts=1), jax.random.PRNGKey(1))
  assert fn.func is invert_z and fn.keywords["steps"] == 3
  lat, rec, err = invert_batched(fn, ds.images[:3], None, 2)
  assert lat.shape == (3, D) and rec.shape == (3, S, S, 1) and np.all(np.isfinite(err))


def test_an_interrupted_inversion_resumes_after_its_finished_chunks():
  """``on_chunk`` sees every finished chunk; ``done`` skips them; the result equals the
  uninterrupted one and the resumed call inverts only the remaining rows."""
  ds, gen, _, _ = _dataset()
  fn = make_inverter(gen, _config(steps=3, restarts=1), jax.random.PRNGKey(1))
  whole = invert_batched(fn, ds.images, None, 2)
  calls, saved = [], []

  def counting(targets, mask=None):
    calls.append(len(targets))
    return fn(targets, mask=mask)

  def save_then_stop(chunk):
    saved.append(chunk)
    if len(saved) == 2:
      raise KeyboardInterrupt  # killed after its second chunk (4 of 5 rows)

  with pytest.raises(KeyboardInterrupt):
    invert_batched(counting, ds.images, None, 2, on_chunk=save_then_stop)
  assert [len(c[2]) for c in saved] == [2, 4]
  calls.clear()
  resumed = invert_batched(counting, ds.images, None, 2, done=saved[-1])
  assert calls == [2]  # the last (padded) chunk only
  for got, want in zip(resumed, whole):
    np.testing.assert_array_equal(got, want)
  with pytest.raises(DataError, match="after 3 rows: not a multiple of the batch size 2"):
    invert_batched(fn, ds.images, None, 2, done=tuple(a[:3] for a in whole))


def test_the_analysis_keeps_finished_chunks_and_resumes_its_inversion(tmp_path, monkeypatch):
  """studies.analysis.invert_or_load saves the finished chunks next to latents.npz; a
  killed analysis resumes after them and ends with what an uninterrupted run writes."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  from jaxlatent.studies import analysis  # pylint: disable=g-import-not-at-top
  from jaxlatent.studies.generators import TrainedGenerator  # pylint: disable=g-import-not-at-top
  ds, gen, _, _ = _dataset()
  config = ml_collections.ConfigDict({"images": {"max_subjects": 0}, "seed": 0,
                                      "cache_mismatch": "recompute",
                                      "inversion": _config(steps=3, restarts=1)})
  trained = lambda: TrainedGenerator("w", None, None, None, 0, gen, fingerprint={"g": 1})
  key = jax.random.PRNGKey(2)
  whole = analysis.invert_or_load(trained(), config, ds, key, str(tmp_path / "whole"))
  real, rows_inverted = analysis.invert_dataset, []

  def killed_after_one_chunk(*args, on_chunk, **kwargs):
    def save_then_stop(chunk):
      on_chunk(chunk)
      raise KeyboardInterrupt
    return real(*args, on_chunk=save_then_stop, **kwargs)

  out = tmp_path / "resumed"
  monkeypatch.setattr(analysis, "invert_dataset", killed_after_one_chunk)
  with pytest.raises(KeyboardInterrupt):
    analysis.invert_or_load(trained(), config, ds, key, str(out))
  assert (out / analysis.PARTIAL_INVERSION_FILE).exists()

  def counting(*args, done, **kwargs):
    rows_inverted.append(len(args[2]) - len(done[2]))
    return real(*args, done=done, **kwargs)

  monkeypatch.setattr(analysis, "invert_dataset", counting)
  got = analysis.invert_or_load(trained(), config, ds, key, str(out))
  assert rows_inverted == [3]  # 5 slices, the first 2 kept
  assert not (out / analysis.PARTIAL_INVERSION_FILE).exists()
  assert not (out / "latents_partial.json").exists()  # its sidecar too
  np.testing.assert_array_equal(got.latents, whole.latents)
  np.testing.assert_array_equal(got.errors, whole.errors)
