"""Saving and loading latent directions: ``<stem>.npz`` (arrays) + ``<stem>.json`` (metadata).

No pickle: the ``.npz`` is read with ``allow_pickle=False`` and holds plain float32
arrays; everything else (method, model, latent space, config, scores, names) is JSON.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Any

import numpy as np

from jaxlatent import atomic_io
from jaxlatent.errors import DataError, TrainingError

FORMAT_VERSION = 1


def _vectors_sha256(vectors: np.ndarray) -> str:
  """Checksum of the saved vectors (a corrupt ``.npz`` that still unzips is caught too)."""
  v = np.ascontiguousarray(vectors, np.float32)
  return hashlib.sha256(f"{v.shape}".encode() + v.tobytes()).hexdigest()


@dataclasses.dataclass
class Directions:
  """A set of latent directions and where they came from.

  Attributes:
    vectors: ``[K, *latent_shape]`` float32, each direction unit-norm over the
      flattened latent.
    method: "voynov", "ganspace", "sefa", "interfacegan", ...
    model: the generator's name (``Generator.name``).
    space: latent space, "z", "w" or "w+".
    scores: per-method numbers (e.g. ``rca``, ``explained_variance_ratio``,
      ``val_accuracy``); JSON-serialisable (arrays become lists on save).
    names: one label per direction (e.g. "d0", or "rotation" after factor alignment).
    meta: everything else: config, collapse flag, norms before normalising, ...
  """

  vectors: np.ndarray
  method: str
  model: str = "generator"
  space: str = "z"
  scores: dict = dataclasses.field(default_factory=dict)
  names: list = dataclasses.field(default_factory=list)
  meta: dict = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    v = np.asarray(self.vectors, np.float32)
    if v.ndim < 2:
      v = v.reshape(1, -1)
    norm = np.linalg.norm(v.reshape(v.shape[0], -1), axis=1)
    norm = norm.reshape((-1,) + (1,) * (v.ndim - 1))
    if np.any(np.abs(norm - 1.0) > 1e-6):  # keep already-unit vectors bit-exact
      v = v / np.maximum(norm, 1e-12)
    self.vectors = v.astype(np.float32)
    if not self.names:
      self.names = [f"d{k}" for k in range(v.shape[0])]
    if len(self.names) != v.shape[0]:
      raise DataError(f"{len(self.names)} names for {v.shape[0]} directions")
    self.names = [str(n) for n in self.names]

  @property
  def num_directions(self) -> int:
    return int(self.vectors.shape[0])

  @property
  def latent_shape(self) -> tuple[int, ...]:
    return tuple(self.vectors.shape[1:])

  @property
  def collapsed(self) -> bool:
    """True when the producing run was flagged as collapsed (e.g. RCA near 1/K)."""
    return bool(self.meta.get("collapsed", False))

  def flat(self) -> np.ndarray:
    """``[K, D]`` view of the vectors."""
    return self.vectors.reshape(self.num_directions, -1)


def _stem(path: str | os.PathLike) -> str:
  path = os.fspath(path)
  for suffix in (".npz", ".json"):
    if path.endswith(suffix):
      return path[: -len(suffix)]
  return path


def to_jsonable(x: Any) -> Any:
  """Converts numpy/jax arrays and scalars, tuples and ConfigDicts to JSON-able values."""
  if hasattr(x, "to_dict") and callable(x.to_dict):  # ml_collections.ConfigDict
    x = x.to_dict()
  if dataclasses.is_dataclass(x) and not isinstance(x, type):
    x = dataclasses.asdict(x)
  if isinstance(x, dict):
    return {str(k): to_jsonable(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [to_jsonable(v) for v in x]
  if isinstance(x, (str, bool)) or x is None:
    return x
  if isinstance(x, (int, np.integer)):
    return int(x)
  if isinstance(x, (float, np.floating)):
    return float(x)
  if hasattr(x, "shape") and hasattr(x, "dtype"):
    arr = np.asarray(x)
    if arr.dtype == bool:
      return arr.tolist()
    return arr.astype(np.float64 if arr.dtype.kind == "f" else arr.dtype).tolist()
  return str(x)


def save_directions(path: str | os.PathLike, directions: Directions, *,
                    force: bool = False) -> tuple[str, str]:
  """Writes ``<stem>.npz`` and ``<stem>.json``; returns both paths.

  Refuses (TrainingError) to save a set flagged as collapsed unless ``force``:
  collapsed Voynov runs (RCA near chance) carry no information and must not end up
  in an analysis by accident.
  """
  if directions.collapsed and not force:
    rca = directions.scores.get("rca")
    raise TrainingError(
        f"refusing to save collapsed directions to {os.fspath(path)!r} "
        f"(final RCA {rca}, chance {directions.meta.get('chance')}); "
        "pass force=True to save anyway")
  stem = _stem(path)
  parent = os.path.dirname(stem)
  if parent:
    os.makedirs(parent, exist_ok=True)
  npz_path, json_path = stem + ".npz", stem + ".json"
  if os.path.exists(json_path):
    os.remove(json_path)  # the json is written last: a pair is complete only with it.
  atomic_io.atomic_save_npz(npz_path, vectors=np.asarray(directions.vectors, np.float32))
  record = {
      "format_version": FORMAT_VERSION,
      "method": directions.method,
      "model": directions.model,
      "space": directions.space,
      "latent_shape": list(directions.latent_shape),
      "num_directions": directions.num_directions,
      "names": list(directions.names),
      "vectors_sha256": _vectors_sha256(directions.vectors),
      "scores": to_jsonable(directions.scores),
      "meta": to_jsonable(directions.meta),
  }
  atomic_io.atomic_write_json(json_path, record, allow_nan=True)
  return npz_path, json_path


def load_directions(path: str | os.PathLike) -> Directions:
  """Reads a set written by :func:`save_directions` (path: stem, ``.npz`` or ``.json``).

  Raises:
    DataError: a file is missing, unreadable, or the two files disagree.
  """
  stem = _stem(path)
  npz_path, json_path = stem + ".npz", stem + ".json"
  for p in (npz_path, json_path):
    if not os.path.isfile(p):
      raise DataError(f"directions file {p!r} does not exist")
  try:
    with np.load(npz_path, allow_pickle=False) as data:
      if "vectors" not in data.files:
        raise DataError(f"{npz_path!r} has no 'vectors' array")
      vectors = np.asarray(data["vectors"], np.float32)
  except DataError:
    raise
  except Exception as e:  # zipfile.BadZipFile, ValueError, OSError, ...
    raise DataError(f"cannot read directions file {npz_path!r}: {e}") from None
  try:
    with open(json_path) as f:
      record = json.load(f)
  except (OSError, ValueError) as e:
    raise DataError(f"cannot read directions metadata {json_path!r}: {e}") from None
  if not isinstance(record, dict) or "method" not in record:
    raise DataError(f"{json_path!r} is not a directions metadata file (no 'method')")
  if vectors.ndim < 2 or not np.all(np.isfinite(vectors)):
    raise DataError(f"{npz_path!r}: 'vectors' must be a finite [K, *latent_shape] array")
  shape = record.get("latent_shape")
  if shape is not None and list(vectors.shape[1:]) != list(shape):
    raise DataError(
        f"{npz_path!r} holds vectors of shape {vectors.shape} but {json_path!r} says "
        f"latent_shape {shape}")
  digest = record.get("vectors_sha256")
  if digest is not None and digest != _vectors_sha256(vectors):
    raise DataError(f"{npz_path!r} does not match the checksum in {json_path!r} "
                    "(corrupt or replaced)")
  names = record.get("names") or []
  if names and len(names) != vectors.shape[0]:
    raise DataError(f"{json_path!r}: {len(names)} names for {vectors.shape[0]} directions")
  return Directions(
      vectors=vectors,
      method=record["method"],
      model=record.get("model", "generator"),
      space=record.get("space", "z"),
      scores=record.get("scores", {}),
      names=names,
      meta=record.get("meta", {}),
  )
