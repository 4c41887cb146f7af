"""Writing phantom subjects as NIfTI volumes + labels CSV, and preview grids.

Array / affine convention
-------------------------
:func:`jaxlatent.phantoms.render_volume` returns ``vol[row, col, k]`` in *display
orientation*: ``vol[:, :, k]`` is exactly the 2D image :func:`render` makes for
``slice_position = k / (n_slices - 1)`` (rows anterior -> posterior, i.e. anterior
up; columns subject right -> left, i.e. radiological convention).  The NIfTI files
store this array unchanged with an affine whose voxel axes point

  * axis 0 (rows)    -> Posterior,
  * axis 1 (columns) -> Left,
  * axis 2 (slices)  -> Superior for the brain (slice_position 0 = inferior) and
    Inferior for the thorax (slice_position 0 = lung apex),

i.e. ``nib.aff2axcodes(affine) == ('P', 'L', 'S')`` (brain) or ``('P', 'L', 'I')``
(thorax), with the volume centred on the world origin.  In-plane spacing is
``FOV_MM / size`` (brain 220 mm, thorax 400 mm field of view; e.g. 3.44 / 6.25 mm
at 64 px) and the slice spacing ``Z_EXTENT_MM / (n_slices - 1)`` (brain 120 mm,
thorax 250 mm).  After ``nib.as_closest_canonical`` (RAS+), axis 2 is z
(superior), and the data pipeline's axial display ``img[r, c] = v[X-1-c, Y-1-r]``
(:mod:`jaxlatent.data.slicing`) of canonical slice ``v = canon[:, :, j]`` gives
back ``vol[:, :, j]`` (brain) or ``vol[:, :, n_slices-1-j]`` (thorax, whose
canonical z runs base -> apex).  :func:`canonical_to_display` implements that
display transform.
"""

from __future__ import annotations

import csv
import io
import numbers
import os
import shutil

import jax
import jax.numpy as jnp
import nibabel as nib
import numpy as np

from jaxlatent import atomic_io
from jaxlatent.errors import ConfigError
from jaxlatent.phantoms import population as P
from jaxlatent.phantoms import rendering as R

FOV_MM = {"brain": 220.0, "thorax": 400.0}
Z_EXTENT_MM = {"brain": 120.0, "thorax": 250.0}


def volume_affine(kind: str, size: int, n_slices: int) -> np.ndarray:
  """Voxel -> world (RAS mm) affine float64 [4, 4] of a ``render_volume`` array."""
  kind = R.check_kind(kind)
  dx = FOV_MM[kind] / size
  dz = Z_EXTENT_MM[kind] / max(n_slices - 1, 1)
  sz = 1.0 if kind == "brain" else -1.0
  c, cz = (size - 1) / 2.0, (n_slices - 1) / 2.0
  return np.array([
      [0.0, -dx, 0.0, c * dx],  # x (R) decreases along columns (-> Left)
      [-dx, 0.0, 0.0, c * dx],  # y (A) decreases along rows (-> Posterior)
      [0.0, 0.0, sz * dz, -sz * cz * dz],
      [0.0, 0.0, 0.0, 1.0],
  ])


def canonical_to_display(v: np.ndarray) -> np.ndarray:
  """Canonical RAS axial slice(s) ``v[X, Y, ...]`` -> display ``img[row, col, ...]``.

  ``img[r, c] = v[X-1-c, Y-1-r]``: anterior up, subject right on the image left.
  """
  return np.swapaxes(np.flip(np.asarray(v), axis=(0, 1)), 0, 1)


def _prepare_out_dir(out_dir) -> str:
  out_dir = os.fspath(out_dir)
  try:
    os.makedirs(out_dir, exist_ok=True)
  except OSError as e:
    raise ConfigError(f"output folder {out_dir!r} cannot be created: {e.strerror or e}")
  if not os.path.isdir(out_dir) or not os.access(out_dir, os.W_OK | os.X_OK):
    raise ConfigError(f"output folder {out_dir!r} is not a writable folder")
  return out_dir


def check_out_dir(out_dir, overwrite: bool = False) -> str:
  """Validates a data set folder before anything is rendered; creates nothing.

  Refuses a regular file, an unwritable place, and an existing non-empty folder
  unless ``overwrite`` (mixing two populations in one folder would silently give a
  data set that no seed describes).  Returns the absolute path.
  """
  try:
    out_dir = atomic_io.check_writable_dir(out_dir, "output folder")
  except atomic_io.OutputError as e:
    raise ConfigError(str(e)) from None
  if os.path.isdir(out_dir) and os.listdir(out_dir) and not overwrite:
    raise ConfigError(f"output folder {out_dir} already exists and is not empty; choose "
                      "a new folder or pass --overwrite to replace it")
  return out_dir


def csv_columns(kind: str) -> list[str]:
  """Columns of ``labels.csv``: subject_id, group, subject-level factors, extras."""
  extra = ["age"] if R.check_kind(kind) == "brain" else ["large_breast"]
  return ["subject_id", "group"] + P.subject_factor_names(kind) + extra


def write_dataset(kind: str, n_subjects: int, out_dir, size: int = 64, n_slices: int = 32,
                  seed: int = 0, ms_fraction: float = 0.5, overwrite: bool = False) -> list[str]:
  """Writes a population as NIfTI volumes and a labels CSV.

  Files: ``<out>/sub-XXX.nii.gz`` (float32 volume in HU / T1 units, see the module
  doc for the orientation), ``<out>/sub-XXX_mask.nii.gz`` (uint8 foreground) and
  ``<out>/labels.csv`` (columns :func:`csv_columns`; one row per subject).  The
  population is ``draw_population(kind, PRNGKey(seed), n_subjects, ms_fraction)``
  (thorax: ms_fraction is the female fraction) and subject ``i`` is rendered with
  ``render_volume(kind, factors_i, size, n_slices, subject_key_i)``.

  The folder is built in a temporary sibling and swapped in whole at the end, so
  an interrupted run leaves the previous folder (or none) as it was; a ``kill -9``
  may leave that hidden ``.<name>.tmp-*`` sibling, which is safe to delete.  An existing
  non-empty ``out_dir`` is refused (ConfigError) unless ``overwrite``, which then
  replaces it entirely.

  Returns the volume paths (masks and CSV sit next to them).
  """
  kind, size = R.check_kind(kind), R.check_size(size)
  n = P._check_count(n_subjects, "n_subjects")
  n_slices = P._check_count(n_slices, "n_slices")
  if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
    raise ConfigError(f"seed={seed!r} must be an integer")
  out_dir = check_out_dir(out_dir, overwrite)
  _prepare_out_dir(os.path.dirname(out_dir))
  build = atomic_io.temp_dir_beside(out_dir)
  try:
    names = _write_files(kind, n, build, size, n_slices, seed, ms_fraction, out_dir)
    atomic_io.atomic_replace_dir(build, out_dir)
  except BaseException:
    shutil.rmtree(build, ignore_errors=True)
    raise
  return [os.path.join(out_dir, name) for name in names]


def _write_files(kind, n, out_dir, size, n_slices, seed, ms_fraction, shown_dir) -> list[str]:
  """Renders and writes every file of :func:`write_dataset` into ``out_dir``.

  Errors name the file under ``shown_dir``, the folder the user asked for.
  """
  pop = P.draw_population(kind, jax.random.PRNGKey(seed), n, ms_fraction)
  affine = volume_affine(kind, size, n_slices)
  names = P.subject_factor_names(kind)
  files = []
  for i, sid in enumerate(pop["subject_id"]):
    key = jnp.asarray(pop["subject_key"][i])  # raw uint32 [2] key
    vol, mask = R.render_volume(kind, {k: pop[k][i] for k in names}, size, n_slices, key,
                                return_mask=True)
    for data, name in ((vol, f"{sid}.nii.gz"), (mask.astype(np.uint8), f"{sid}_mask.nii.gz")):
      img = nib.Nifti1Image(data, affine)
      img.header.set_xyzt_units("mm")
      img.set_qform(affine, code=1)
      img.set_sform(affine, code=1)
      path = os.path.join(out_dir, name)
      try:
        nib.save(img, path)
      except OSError as e:
        raise atomic_io.output_error(e, os.path.join(shown_dir, name)) from None
    files.append(f"{sid}.nii.gz")
  buf = io.StringIO()
  w = csv.writer(buf)
  cols = csv_columns(kind)
  w.writerow(cols)
  for i in range(n):
    row = []
    for c in cols:
      v = pop[c][i]
      row.append(f"{float(v):.6g}" if isinstance(v, np.floating) else
                 str(int(v)) if isinstance(v, np.bool_) else str(v))
    w.writerow(row)
  try:
    with open(os.path.join(out_dir, "labels.csv"), "w", newline="") as fh:
      fh.write(buf.getvalue())
  except OSError as e:
    raise atomic_io.output_error(e, os.path.join(shown_dir, "labels.csv")) from None
  return files


DISPLAY_WINDOW = {"thorax": (-1000.0, 400.0), "brain": (0.0, 1.0)}


def write_preview(kind: str, path, size: int = 64, seed: int = 0, n: int = 16,
                  ms_fraction: float = 0.5) -> str:
  """Writes a grid PNG of ``n`` sample slices (from :func:`render_dataset`)."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  kind = R.check_kind(kind)
  path = os.fspath(path)
  parent = os.path.dirname(os.path.abspath(path))
  _prepare_out_dir(parent)
  d = P.render_dataset(kind, n, size, seed, slices_per_subject=4, ms_fraction=ms_fraction)
  cols = int(np.ceil(np.sqrt(n)))
  rows = int(np.ceil(n / cols))
  fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 2.4 * rows), squeeze=False)
  lo, hi = DISPLAY_WINDOW[kind]
  for i, ax in enumerate(axes.ravel()):
    ax.axis("off")
    if i < n:
      ax.imshow(d["images"][i], cmap="gray", vmin=lo, vmax=hi)
      ax.set_title(f"{d['subject_id'][i]} {d['labels']['group'][i]} "
                   f"z={d['slice_position'][i]:.2f}", fontsize=7)
  fig.tight_layout()
  try:
    with atomic_io.atomic_path(path) as tmp:
      fig.savefig(tmp, dpi=80)
  except OSError as e:
    raise ConfigError(f"preview {path!r} cannot be written: {e.strerror or e}") from None
  finally:
    plt.close(fig)
  return path
