"""Re-usable ``.npz`` artifacts of a study with a JSON sidecar: fingerprint + checksum.

``<stem>.npz`` holds the arrays (no pickle) and ``<stem>.json`` the fingerprint of
what produced them (:mod:`jaxlatent.studies.fingerprint`) and the sha256 of the
``.npz`` bytes.  Both are written atomically, the sidecar last (and removed first), so
a pair is complete only with its sidecar and a killed run leaves either the old pair,
or an ``.npz`` without sidecar, which is recomputed.  A truncated or otherwise
corrupt ``.npz`` fails its checksum and is recomputed, with one log line.

:func:`locked_output_dir` creates a study's output folder and holds its lock, so two
runs never write into one folder.
"""

from __future__ import annotations

import contextlib
import json
import os
from typing import Any, Callable, Iterator

import numpy as np

from jaxlatent import atomic_io
from jaxlatent.directions.io import to_jsonable
from jaxlatent.errors import DataError
from jaxlatent.studies import fingerprint as fp_lib
from jaxlatent.workdir_lock import hold_workdir_lock

FORMAT_VERSION = 1


def sidecar_path(npz_path: str) -> str:
  """``x/latents.npz`` -> ``x/latents.json``."""
  return os.path.splitext(npz_path)[0] + ".json"


def save_artifact(npz_path: str, fingerprint: dict[str, Any], **arrays) -> str:
  """Writes ``arrays`` to ``npz_path`` and its sidecar (fingerprint, checksum) atomically."""
  side = sidecar_path(npz_path)
  folder = os.path.dirname(os.path.abspath(npz_path))
  try:
    os.makedirs(folder, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
      os.remove(side)  # the sidecar is written last: a pair is complete only with it
  except OSError as e:
    raise atomic_io.output_error(e, npz_path) from None
  atomic_io.atomic_save_npz(npz_path, **{k: np.asarray(v) for k, v in arrays.items()})
  atomic_io.atomic_write_json(side, {
      "format_version": FORMAT_VERSION, "arrays": sorted(arrays),
      "sha256": fp_lib.file_sha256(npz_path), "fingerprint": to_jsonable(fingerprint)})
  return npz_path


def remove_artifact(npz_path: str) -> None:
  """Deletes an artifact (sidecar first, so a half-removed pair is never re-used)."""
  for path in (sidecar_path(npz_path), npz_path):
    try:
      os.remove(path)
    except FileNotFoundError:
      pass
    except OSError as e:
      raise atomic_io.output_error(e, path) from None


def load_artifact(npz_path: str) -> tuple[dict[str, np.ndarray], Any]:
  """The arrays and stored fingerprint of a saved artifact.

  Raises:
    DataError: the sidecar is missing or unreadable, the ``.npz`` does not match its
      checksum (truncated, corrupt) or cannot be read.
  """
  side = sidecar_path(npz_path)
  if not os.path.isfile(side):
    raise DataError(f"{side} is missing (the run that wrote {npz_path} did not finish, or "
                    "an older version wrote it)")
  try:
    with open(side) as f:
      record = json.load(f)
    if not isinstance(record, dict) or "sha256" not in record:
      raise ValueError("no checksum")
  except (OSError, ValueError) as e:
    raise DataError(f"cannot read {side}: {e}") from None
  try:
    digest = fp_lib.file_sha256(npz_path)
  except OSError as e:
    raise DataError(f"cannot read {npz_path}: {e}") from None
  if digest != record["sha256"]:
    raise DataError(f"{npz_path} does not match the checksum in {side} (truncated or corrupt)")
  try:
    with np.load(npz_path, allow_pickle=False) as f:
      arrays = {k: np.asarray(f[k]) for k in f.files}
  except Exception as e:  # zipfile.BadZipFile, ValueError, OSError, ...
    raise DataError(f"cannot read {npz_path}: {e}") from None
  missing = [k for k in record.get("arrays", []) if k not in arrays]
  if missing:
    raise DataError(f"{npz_path} lacks the array(s) {missing}")
  return arrays, record.get("fingerprint")


def reuse_artifact(what: str, npz_path: str, expected: dict[str, Any], mode: str,
                   log: Callable[[str], None]) -> dict[str, np.ndarray] | None:
  """The arrays of ``npz_path`` when it exists, is intact and matches ``expected``; else None.

  Every reason not to re-use an existing file is logged in one line; with
  ``mode='error'`` a fingerprint mismatch raises ConfigError instead (a missing or
  corrupt file is always recomputed).
  """
  if not os.path.exists(npz_path):
    return None
  try:
    arrays, stored = load_artifact(npz_path)
  except DataError as e:
    log(f"{what}: not re-using {npz_path}: {e}; recomputing")
    return None
  if not fp_lib.reuse_decision(what, npz_path, stored, expected, mode, log):
    return None
  return arrays


@contextlib.contextmanager
def locked_output_dir(path: str, what: str) -> Iterator[str]:
  """Creates the output folder ``path`` and holds its lock for the ``with`` block.

  Call :func:`jaxlatent.atomic_io.check_writable_dir` (creates nothing) and every
  other check before this, so that a refused run leaves no folder behind.  Yields
  the absolute path.

  Raises:
    OutputError: ``path`` is a regular file or cannot be created.
    WorkdirBusyError: another process writes into ``path`` (its pid and host named).
  """
  path = atomic_io.check_writable_dir(path, what)
  try:
    os.makedirs(path, exist_ok=True)
  except OSError as e:
    raise atomic_io.output_error(e, path) from None
  with hold_workdir_lock(path, what):
    yield path
