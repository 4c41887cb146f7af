"""One batched inverter for every model, driven by the ``config.inversion`` block alone.

:func:`make_inverter` picks the paper's inverter for a generator (StyleGAN W / W+:
the projector; VAE: encoder mean + refinement, when an ``encode_fn`` is given;
otherwise Creswell & Bharath's z inversion) from the ``inversion`` sub-config;
:func:`invert_batched` runs it on fixed-size chunks (one compilation);
:func:`invert_dataset` inverts rows of a ``SliceDataset`` and keeps their subject /
slice metadata, so codes can be grouped by subject and maps written back as NIfTI.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxlatent.errors import DataError
from jaxlatent.inversion.gan import invert_z
from jaxlatent.inversion.stylegan import project, w_statistics
from jaxlatent.inversion.vae import invert_vae


def default_inversion_config() -> ml_collections.ConfigDict:
  """The ``inversion`` block: optimizer settings of every inverter (studies adjust it).

  Fields: steps, restarts (z), optimizer ('rmsprop' | 'adam' ...), learning_rate,
  prior_weight (< 0: the inverter's default, 1e-3 for z, 0 for w), ssim_weight
  (MSE + ssim_weight * MS-SSIM), use_mask (foreground-only loss), w_avg_samples
  (StyleGAN projector's W statistics), vae_refine_steps, batch_size (images per call).
  """
  c = ml_collections.ConfigDict()
  c.steps = 500
  c.restarts = 4
  c.optimizer = "rmsprop"
  c.learning_rate = 0.01
  c.prior_weight = -1.0
  c.ssim_weight = 0.0
  c.use_mask = False
  c.w_avg_samples = 10_000
  c.vae_refine_steps = 100
  c.batch_size = 64
  return c


def make_inverter(generator, inversion_config: ml_collections.ConfigDict, key: jax.Array,
                  encode_fn: Callable[..., Any] | None = None) -> Callable[..., Any]:
  """``(targets [B, H, W, 1], mask=None) -> result`` with ``.latents/.reconstructions/.errors``.

  Args:
    generator: a ``jaxlatent.Generator`` (its ``latent_spec.space`` picks the inverter).
    inversion_config: the ``inversion`` block (:func:`default_inversion_config` fields).
    key: PRNG key of the inversion.
    encode_fn: a VAE's ``images -> (mean, logvar)``: encoder mean + refinement.
  """
  ic = inversion_config
  prior = None if float(ic.prior_weight) < 0 else float(ic.prior_weight)
  space = generator.latent_spec.space
  if space in ("w", "w+"):
    w_avg, w_std = w_statistics(generator, jax.random.fold_in(key, 7), int(ic.w_avg_samples),
                                space)
    return functools.partial(
        project, generator, key=key, space=space, steps=int(ic.steps),
        learning_rate=float(ic.learning_rate), ssim_weight=float(ic.ssim_weight),
        w_avg=w_avg, w_std=w_std)
  if encode_fn is not None:
    return functools.partial(
        invert_vae, generator, encode_fn, refine_steps=int(ic.vae_refine_steps), key=key,
        prior_weight=prior, ssim_weight=float(ic.ssim_weight))
  return functools.partial(
      invert_z, generator, key=key, steps=int(ic.steps), restarts=int(ic.restarts),
      optimizer=str(ic.optimizer), learning_rate=float(ic.learning_rate),
      prior_weight=prior, ssim_weight=float(ic.ssim_weight))


Chunk = tuple[np.ndarray, np.ndarray, np.ndarray]  # (latents, reconstructions, errors)


def invert_batched(invert_fn, targets, masks, batch_size: int, *, done: Chunk | None = None,
                   on_chunk: Callable[[Chunk], None] | None = None) -> Chunk:
  """Runs ``invert_fn`` on fixed-size chunks (the last padded: one compilation).

  Every chunk is inverted with the same function and key, so a chunk's result does not
  depend on the others: ``done`` (the results of the first rows, from an interrupted
  call with the same arguments) skips those rows, and ``on_chunk`` receives the
  results of every row so far after each chunk (to save them), so a long inversion
  resumes where it stopped and gives what an uninterrupted run gives.

  Returns (latents [N, ...], reconstructions [N, H, W, 1], errors [N]).
  """
  n = len(targets)
  bs = min(int(batch_size), n)
  lat, rec, err = ([], [], []) if done is None else ([done[0]], [done[1]], [done[2]])
  first = 0 if done is None else len(done[2])
  if first % bs and first != n:
    raise DataError(f"cannot resume an inversion after {first} rows: not a multiple of "
                    f"the batch size {bs}")
  for start in range(first, n, bs):
    idx = np.arange(start, start + bs).clip(max=n - 1)  # pad by repeating the last image
    keep = min(bs, n - start)
    t = jnp.asarray(np.asarray(targets)[idx], jnp.float32)
    m = None if masks is None else jnp.asarray(np.asarray(masks)[idx], bool)
    r = invert_fn(t, mask=m)
    lat.append(np.asarray(r.latents)[:keep])
    rec.append(np.asarray(r.reconstructions)[:keep])
    err.append(np.asarray(r.errors)[:keep])
    if on_chunk is not None and start + bs < n:
      on_chunk((np.concatenate(lat), np.concatenate(rec), np.concatenate(err)))
  return np.concatenate(lat), np.concatenate(rec), np.concatenate(err)


def invert_images(generator, images, inversion_config: ml_collections.ConfigDict,
                  key: jax.Array, *, masks=None, encode_fn=None, done: Chunk | None = None,
                  on_chunk: Callable[[Chunk], None] | None = None) -> Chunk:
  """:func:`make_inverter` + :func:`invert_batched` (``done`` / ``on_chunk``: resume);
  ``masks`` used iff ``use_mask``."""
  invert_fn = make_inverter(generator, inversion_config, key, encode_fn)
  masks = masks if bool(inversion_config.use_mask) else None
  return invert_batched(invert_fn, images, masks, int(inversion_config.batch_size),
                        done=done, on_chunk=on_chunk)


@dataclasses.dataclass
class InvertedSlices:
  """Inverted dataset slices: codes, reconstructions, errors and one metadata row each."""

  latents: np.ndarray  # [N, *latent_shape]
  reconstructions: np.ndarray  # [N, H, W, 1]
  errors: np.ndarray  # [N]
  indices: np.ndarray  # [N] dataset rows
  subject_id: np.ndarray  # [N] str
  slice_index: np.ndarray  # [N]

  @property
  def error_mean(self) -> float:
    return float(np.mean(self.errors))

  @property
  def error_std(self) -> float:
    return float(np.std(self.errors))

  def positions(self, subject_id: str) -> np.ndarray:
    """Row positions of ``subject_id``'s slices, sorted by slice index."""
    pos = np.flatnonzero(self.subject_id == subject_id)
    if pos.size == 0:
      raise DataError(f"subject {subject_id!r} is not among the inverted slices")
    return pos[np.argsort(self.slice_index[pos], kind="stable")]


def select_subjects(dataset, max_subjects: int = 0, candidates=None) -> np.ndarray:
  """Rows of the first ``max_subjects`` subjects (0: all) among ``candidates`` rows."""
  rows = np.arange(len(dataset)) if candidates is None else np.asarray(candidates)
  sids = np.asarray(dataset.subject_id).astype(str)[rows]
  order = list(dict.fromkeys(sids.tolist()))
  if max_subjects and max_subjects > 0:
    order = order[:int(max_subjects)]
  return rows[np.isin(sids, order)]


def invert_dataset(generator, dataset, rows, inversion_config: ml_collections.ConfigDict,
                   key: jax.Array, encode_fn=None, *, done: Chunk | None = None,
                   on_chunk: Callable[[Chunk], None] | None = None) -> InvertedSlices:
  """Inverts ``dataset`` rows (``images``/``masks``/``subject_id``/``slice_index`` columns);
  ``done`` / ``on_chunk`` resume an interrupted call (:func:`invert_batched`)."""
  rows = np.asarray(rows, np.int64)
  if rows.size == 0:
    raise DataError("no slices selected for inversion")
  lat, rec, err = invert_images(generator, np.asarray(dataset.images[rows], np.float32),
                                inversion_config, key,
                                masks=np.asarray(dataset.masks[rows], bool), encode_fn=encode_fn,
                                done=done, on_chunk=on_chunk)
  return InvertedSlices(lat, rec, err, rows, np.asarray(dataset.subject_id)[rows].astype(str),
                        np.asarray(dataset.slice_index)[rows].astype(np.int64))
