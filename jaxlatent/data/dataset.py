"""``SliceDataset``: the preprocessed 2D slices plus everything needed to map back."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from jaxlatent.data.labels import categorical_to_ids
from jaxlatent.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class SliceDataset:
  """N preprocessed slices of size S x S.

  Attributes:
    images: float32 [N, S, S, 1] in [-1, 1] (a read-only memmap when loaded from cache).
    masks: uint8 or bool [N, S, S] foreground masks on the same grid.
    subject_id: str [N].
    source_file: str [N] the NIfTI file (or 'phantom_<kind>') of each slice.
    slice_index: int64 [N] voxel index along the slicing axis (canonical RAS).
    slice_position: float32 [N] ``slice_index / (extent - 1)`` in [0, 1].
    labels: attribute name -> [N] per-slice column (float64 or str).
    factors: factor name -> float [N] ground-truth factors (phantoms; empty for real data).
    subjects: subject id -> dict(affine, spacing, shape, axis, source_file, ...),
      enough to write an analysis result back as NIfTI in the source space.
    settings: the preprocessing settings the slices were made with.
    label_column: default label column for :func:`iterate_batches` ('' = none).
  """

  images: np.ndarray
  masks: np.ndarray
  subject_id: np.ndarray
  source_file: np.ndarray
  slice_index: np.ndarray
  slice_position: np.ndarray
  labels: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
  factors: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
  subjects: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
  settings: dict[str, Any] = dataclasses.field(default_factory=dict)
  label_column: str = ""

  def __len__(self) -> int:
    return int(self.images.shape[0])

  @property
  def image_size(self) -> int:
    return int(self.images.shape[1])

  def subset(self, indices) -> "SliceDataset":
    """A new dataset with the slices at ``indices`` (int array or bool mask), in memory."""
    idx = np.asarray(indices)
    if idx.dtype == bool:
      idx = np.flatnonzero(idx)
    idx = idx.astype(np.int64)
    sub = lambda a: np.asarray(a[idx])
    sids = sub(self.subject_id)
    keep = set(sids.tolist())
    return dataclasses.replace(
        self, images=sub(self.images), masks=sub(self.masks), subject_id=sids,
        source_file=sub(self.source_file), slice_index=sub(self.slice_index),
        slice_position=sub(self.slice_position),
        labels={k: sub(v) for k, v in self.labels.items()},
        factors={k: sub(v) for k, v in self.factors.items()},
        subjects={k: v for k, v in self.subjects.items() if k in keep})

  def label_ids(self, column: str | None = None, classes=None) -> tuple[np.ndarray, list]:
    """int32 [N] class ids of a label column, and the class list (stable, sorted).

    A numeric column whose values are all integers is used as is (classes are
    the sorted distinct values); strings are mapped via :func:`categorical_to_ids`.
    """
    column = self.label_column if column is None else column
    if not column:
      raise ConfigError("no label column chosen (set data.label_column)")
    if column not in self.labels:
      raise ConfigError(f"label column {column!r} is not in the dataset's labels "
                        f"{sorted(self.labels)}")
    values = np.asarray(self.labels[column])
    if values.dtype.kind == "f":
      if not np.all(np.isfinite(values)) or not np.all(values == np.round(values)):
        raise ConfigError(f"label column {column!r} holds non-integer numbers; a class "
                          "label must be categorical or integer")
      values = values.astype(np.int64)
      if classes is None:
        return values.astype(np.int32), sorted(np.unique(values).tolist())
    return categorical_to_ids(values, classes)
