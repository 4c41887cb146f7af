"""Inverting slices of a ``SliceDataset`` while keeping their subject/slice metadata.

The inverters take arrays; this thin layer picks slices out of a dataset (NIfTI
volumes or phantoms through ``jaxlatent.data``), runs any inverter on them and
returns the result next to the metadata columns needed to group the codes by
subject, traverse them slice by slice and write maps back as NIfTI.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax.numpy as jnp
import numpy as np

from jaxlatent.errors import DataError


@dataclasses.dataclass(frozen=True)
class SliceInversion:
  """An inversion result with one metadata row per inverted slice.

  Attributes:
    result: what the inverter returned (``InversionResult`` / ``ProjectionResult``).
    indices: int64 [n] positions in the dataset.
    subject_id: str [n].
    slice_index: int64 [n] voxel index along the slicing axis.
    source_file: str [n].
  """

  result: Any
  indices: np.ndarray
  subject_id: np.ndarray
  slice_index: np.ndarray
  source_file: np.ndarray

  def rows(self) -> list[dict[str, Any]]:
    """One dict per slice: index, subject_id, slice_index, source_file, error."""
    errors = np.asarray(self.result.errors)
    return [dict(index=int(i), subject_id=str(s), slice_index=int(k), source_file=str(f),
                 error=float(e))
            for i, s, k, f, e in zip(self.indices, self.subject_id, self.slice_index,
                                     self.source_file, errors)]

  def positions(self, subject_id: str) -> np.ndarray:
    """Row positions of ``subject_id``'s slices, sorted by slice index."""
    pos = np.flatnonzero(self.subject_id == subject_id)
    if pos.size == 0:
      raise DataError(f"subject {subject_id!r} is not among the inverted slices")
    return pos[np.argsort(self.slice_index[pos], kind="stable")]


def select_indices(dataset, subjects=None, indices=None) -> np.ndarray:
  """Dataset positions of the chosen ``indices`` or of all slices of ``subjects``."""
  n = len(dataset)
  if indices is not None:
    idx = np.asarray(indices)
    if idx.dtype == bool:
      idx = np.flatnonzero(idx)
    idx = idx.astype(np.int64)
    if idx.size and (idx.min() < 0 or idx.max() >= n):
      raise DataError(f"slice indices out of range for a dataset of {n} slices")
    return idx
  if subjects is None:
    return np.arange(n, dtype=np.int64)
  sids = np.asarray(dataset.subject_id).astype(str)
  missing = sorted(set(subjects) - set(sids.tolist()))
  if missing:
    raise DataError(f"subjects {missing} are not in the dataset")
  return np.flatnonzero(np.isin(sids, list(subjects))).astype(np.int64)


def invert_slices(
    dataset,
    invert_fn: Callable[..., Any],
    *,
    indices=None,
    subjects=None,
    use_mask: bool = False,
) -> SliceInversion:
  """Runs ``invert_fn(targets, mask=...)`` on chosen slices of ``dataset``.

  Args:
    dataset: a ``jaxlatent.data.SliceDataset`` (``images`` [N, S, S, 1] in [-1, 1],
      ``masks`` [N, S, S], ``subject_id``, ``slice_index``, ``source_file``).
    invert_fn: an inverter with everything but the images bound, e.g.
      ``functools.partial(invert_z, generator, key=key, steps=300)``,
      ``functools.partial(project, generator, key=key, space="w+")`` or
      ``functools.partial(invert_vae, generator, encode_fn)``.
    indices: dataset positions (ints or a bool mask); or
    subjects: subject ids whose slices to invert (default: every slice).
    use_mask: pass the dataset's foreground masks as the loss mask.

  Returns:
    A :class:`SliceInversion` (rows in the order of ``indices``).
  """
  idx = select_indices(dataset, subjects, indices)
  if idx.size == 0:
    raise DataError("no slices selected for inversion")
  targets = jnp.asarray(np.asarray(dataset.images[idx]), jnp.float32)  # [n, S, S, 1]
  mask = jnp.asarray(np.asarray(dataset.masks[idx]), bool) if use_mask else None
  result = invert_fn(targets, mask=mask)
  return SliceInversion(result=result, indices=idx,
                        subject_id=np.asarray(dataset.subject_id)[idx].astype(str),
                        slice_index=np.asarray(dataset.slice_index)[idx].astype(np.int64),
                        source_file=np.asarray(dataset.source_file)[idx].astype(str))
