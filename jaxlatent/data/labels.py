"""Per-subject attributes from a CSV (e.g. ``group`` = HC/MS, ``age``).

The CSV has one row per subject, keyed by a ``subject_id`` column (or, when that
is absent, a ``filename`` column whose values are matched after stripping folders
and ``.nii``/``.nii.gz``; for DICOM data a ``PatientID`` or ``SeriesInstanceUID``
column).  Columns whose non-empty values all parse as numbers
become float arrays (empty -> NaN); the others stay strings.
"""

from __future__ import annotations

import csv
import dataclasses
import os
from typing import Sequence

import numpy as np

from jaxlatent.data.nifti import subject_id_from_path
from jaxlatent.errors import DataError

ID_COLUMNS = ("subject_id", "filename", "PatientID", "SeriesInstanceUID")


@dataclasses.dataclass(frozen=True)
class LabelTable:
  """A parsed labels CSV.

  Attributes:
    path: the CSV file.
    id_column: the key column used (the first of :data:`ID_COLUMNS` present).
    ids: subject ids in file order.
    columns: attribute name -> array over ``ids`` (float64 or str).
  """

  path: str
  id_column: str
  ids: tuple[str, ...]
  columns: dict[str, np.ndarray]

  def lookup(self, subject_ids: Sequence[str]) -> dict[str, np.ndarray]:
    """Per-subject attribute columns for ``subject_ids`` (repeats allowed).

    Raises DataError naming the CSV and the first id it does not list.
    """
    row = {sid: i for i, sid in enumerate(self.ids)}
    idx = []
    for sid in subject_ids:
      if sid not in row:
        raise DataError(f"labels CSV {self.path!r} has no row for subject {sid!r} "
                        f"(column {self.id_column!r}; it lists {len(self.ids)} subjects)")
      idx.append(row[sid])
    idx = np.asarray(idx, int)
    return {name: col[idx] for name, col in self.columns.items()}


def _as_column(values: list[str]) -> np.ndarray:
  nonempty = [v for v in values if v != ""]
  try:
    floats = [float(v) if v != "" else np.nan for v in values]
    if nonempty:
      return np.asarray(floats, np.float64)
  except ValueError:
    pass
  return np.asarray(values, dtype=str)


def load_labels(path: str, id_column: str | None = None,
                required_columns: Sequence[str] = ()) -> LabelTable:
  """Reads a labels CSV; raises DataError for a missing/empty file, missing columns,
  empty or duplicate ids.

  Args:
    path: the CSV file.
    id_column: key column; None picks the first of :data:`ID_COLUMNS` present.
    required_columns: attribute columns that must be present (e.g. the label column).
  """
  if not os.path.isfile(path):
    raise DataError(f"labels CSV {path!r} does not exist")
  try:
    with open(path, newline="", encoding="utf-8-sig") as f:
      rows = [r for r in csv.reader(f) if any(c.strip() for c in r)]
  except (OSError, UnicodeDecodeError, csv.Error) as e:
    raise DataError(f"cannot read labels CSV {path!r}: {e}") from None
  if not rows:
    raise DataError(f"labels CSV {path!r} is empty")
  header = [h.strip() for h in rows[0]]
  if len(set(header)) != len(header):
    dup = sorted({h for h in header if header.count(h) > 1})
    raise DataError(f"labels CSV {path!r} repeats the column(s) {dup}")
  if id_column is None:
    id_column = next((c for c in ID_COLUMNS if c in header), None)
    if id_column is None:
      raise DataError(f"labels CSV {path!r} has neither a 'subject_id' nor a 'filename' "
                      f"column (nor 'PatientID' / 'SeriesInstanceUID'; columns: {header})")
  elif id_column not in header:
    raise DataError(f"labels CSV {path!r} has no column {id_column!r} (columns: {header})")
  for col in required_columns:
    if col not in header:
      raise DataError(f"labels CSV {path!r} has no column {col!r} (columns: {header})")
  body = rows[1:]
  if not body:
    raise DataError(f"labels CSV {path!r} has a header but no rows")
  for n, r in enumerate(body, start=2):
    if len(r) != len(header):
      raise DataError(f"labels CSV {path!r} line {n} has {len(r)} fields, "
                      f"the header has {len(header)}")
  key = header.index(id_column)
  ids = []
  for n, r in enumerate(body, start=2):
    sid = r[key].strip()
    if id_column == "filename":
      sid = subject_id_from_path(sid)
    if not sid:
      raise DataError(f"labels CSV {path!r} line {n} has an empty {id_column!r}")
    ids.append(sid)
  seen = set()
  for sid in ids:
    if sid in seen:
      raise DataError(f"labels CSV {path!r} lists subject {sid!r} more than once")
    seen.add(sid)
  columns = {h: _as_column([r[i].strip() for r in body])
             for i, h in enumerate(header) if i != key}
  return LabelTable(str(path), id_column, tuple(ids), columns)


def categorical_to_ids(values, classes: Sequence | None = None
                       ) -> tuple[np.ndarray, list]:
  """Maps a categorical column to int32 class ids with a stable mapping.

  Args:
    values: [N] strings (or numbers).
    classes: the class order to use; None = sorted unique values (so the same
      label set always gives the same ids, whatever the slice order).

  Returns:
    (ids int32 [N], classes) with ``classes[ids[i]] == values[i]``.
  """
  values = np.asarray(values)
  if classes is None:
    classes = sorted(np.unique(values).tolist())
  lookup = {c: i for i, c in enumerate(classes)}
  try:
    ids = np.asarray([lookup[v] for v in values.tolist()], np.int32)
  except KeyError as e:
    raise DataError(f"value {e.args[0]!r} is not one of the classes {list(classes)}") from None
  return ids, list(classes)
