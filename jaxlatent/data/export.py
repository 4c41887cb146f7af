"""Writing per-slice results (maps, masks, reconstructions) back as NIfTI volumes.

Inverts the slice pipeline for one subject: crop the square padding, resize the
content back to the slice's native [H, W], undo the display orientation and put
each slice at its ``slice_index`` along the subject's axis, in the canonical
RAS voxel grid whose affine is stored in ``dataset.subjects``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import nibabel as nib
import numpy as np

from jaxlatent import atomic_io
from jaxlatent.data.dataset import SliceDataset
from jaxlatent.data.resize import SquareGeometry
from jaxlatent.data.slicing import axis_index
from jaxlatent.errors import DataError


def slices_to_volume(dataset: SliceDataset, subject_id: str, values: np.ndarray,
                     fill: float = 0.0, method: str = "linear") -> tuple[np.ndarray, np.ndarray]:
  """Places per-slice maps of one subject back into its voxel grid.

  Args:
    dataset: the dataset the slices came from (a NIfTI source).
    subject_id: the subject.
    values: [n, S, S] or [n, S, S, 1], one map per dataset row of that subject,
      in dataset order (``dataset.subject_id == subject_id``).
    fill: value of voxels in slices that were not in the dataset.
    method: 'linear' for continuous maps, 'nearest' for masks and labels.

  Returns:
    (volume float32 [X, Y, Z] in canonical RAS, affine [4, 4]).
  """
  info = dataset.subjects.get(subject_id)
  if info is None or info.get("affine") is None:
    raise DataError(f"subject {subject_id!r} has no source volume geometry "
                    "(not a NIfTI subject of this dataset)")
  rows = np.flatnonzero(np.asarray(dataset.subject_id) == subject_id)
  values = np.asarray(values, np.float32)
  if values.ndim == 4:
    values = values[..., 0]
  size = dataset.image_size
  if values.shape != (len(rows), size, size):
    raise DataError(f"subject {subject_id!r}: expected values of shape "
                    f"{(len(rows), size, size)}, got {values.shape}")
  g = info["geometry"]
  geom = SquareGeometry(tuple(g["slice_shape"]), tuple(g["content_shape"]),
                        tuple(g["offset"]), int(g["size"]))
  (t, l), (ch, cw) = geom.offset, geom.content_shape
  content = values[:, t:t + ch, l:l + cw]  # [n, h, w]
  h, w = geom.slice_shape
  if (ch, cw) != (h, w):
    content = np.asarray(jax.image.resize(jnp.asarray(content), (len(rows), h, w), method))
  slab = np.flip(content.transpose(0, 2, 1), axis=(1, 2))  # [n, A, B] RAS order.
  vol = np.full(info["shape"], fill, np.float32)
  moved = np.moveaxis(vol, axis_index(info["axis"]), 0)  # a view into vol.
  moved[np.asarray(dataset.slice_index)[rows]] = slab
  return vol, np.asarray(info["affine"], np.float64)


def save_slices_as_nifti(dataset: SliceDataset, subject_id: str, values: np.ndarray,
                         path: str, fill: float = 0.0, method: str = "linear") -> None:
  """:func:`slices_to_volume` + ``nib.save`` with the subject's (canonical) affine."""
  vol, affine = slices_to_volume(dataset, subject_id, values, fill, method)
  with atomic_io.atomic_path(path) as tmp:
    nib.save(nib.Nifti1Image(vol, affine), tmp)
