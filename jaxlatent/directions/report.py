"""Outputs of direction discovery: traversal grids, RCA curves, summary tables.

Arrays are computed by pure functions; files (PNG via matplotlib, CSV, Markdown) are
written only by the ``save_*`` / ``write_*`` functions at the edge.
"""

from __future__ import annotations

import csv
import math
import os
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxlatent import atomic_io
from jaxlatent.directions import vector_ops
from jaxlatent.directions.io import Directions
from jaxlatent.viz.grids import save_image_grid
from jaxlatent.viz.report import table_markdown

PAPER_SHIFTS = (-18.0, -6.0, 0.0, 6.0, 18.0)  # Schön et al. 2022 show +-6 and +-18


@jax.jit
def _grid(generator, vecs, z, s):
  spec = generator.latent_spec
  zs = z[None, None, :] + s[None, :, None] * vecs[:, None, :]  # [K, S, D]
  k, n = zs.shape[:2]
  images = generator(zs.reshape((k * n, *spec.shape)))  # [K*S, H, W, C]
  return images.reshape((k, n, *images.shape[1:]))


def traversal_grid(generator, directions, latent, shifts: Sequence[float] = PAPER_SHIFTS
                   ) -> np.ndarray:
  """Images ``G(latent + s * d_k)``: rows = directions, cols = shifts.

  Args:
    generator: a Generator.
    directions: Directions or ``[K, *latent_shape]`` (each normalised to unit norm).
    latent: one code ``[*latent_shape]`` (or ``[1, *latent_shape]``).
    shifts: offsets along each unit direction (default +-6, +-18 and 0).

  Returns:
    ``[K, S, H, W, C]`` float32 in [-1, 1].
  """
  vecs = directions.flat() if isinstance(directions, Directions) else directions
  vecs = vector_ops.unit_rows(vector_ops.flatten_directions(vecs, generator.latent_spec.shape))
  z = jnp.asarray(latent, jnp.float32).reshape(-1)
  return np.asarray(_grid(generator, vecs, z, jnp.asarray(shifts, jnp.float32)))


def save_traversal_grid(path: str | os.PathLike, grid, row_labels: Sequence[str] | None = None,
                        col_labels: Sequence[str] | None = None, title: str | None = None
                        ) -> str:
  """Writes a ``[K, S, H, W, C]`` grid in [-1, 1] as a PNG.

  Without labels: pixel-exact tiles via ``jaxlatent.viz.grids.save_image_grid`` (rows =
  directions, columns = shifts).  With row/column labels or a title: a labelled
  matplotlib figure.
  """
  grid = np.asarray(grid)
  if row_labels is None and col_labels is None and title is None:
    k, s = grid.shape[:2]
    save_image_grid(grid.reshape((k * s, *grid.shape[2:])), path, nrow=s)
    return os.fspath(path)
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  k, s = grid.shape[:2]
  fig, axes = plt.subplots(k, s, figsize=(1.2 * s + 1.0, 1.2 * k + 0.5), squeeze=False)
  for i in range(k):
    for j in range(s):
      ax = axes[i, j]
      img = np.clip((grid[i, j] + 1.0) / 2.0, 0.0, 1.0)
      ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=1)
      ax.set_xticks([])
      ax.set_yticks([])
      if i == 0 and col_labels is not None:
        ax.set_title(str(col_labels[j]), fontsize=8)
      if j == 0 and row_labels is not None:
        ax.set_ylabel(str(row_labels[i]), fontsize=8)
  if title:
    fig.suptitle(title, fontsize=9)
  fig.tight_layout()
  path = os.fspath(path)
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  with atomic_io.atomic_path(path) as tmp:
    fig.savefig(tmp, dpi=100)
  plt.close(fig)
  return path


def save_rca_curve(path_stem: str | os.PathLike, curve: dict, chance: float | None = None
                   ) -> tuple[str, str]:
  """Writes the RCA curve (``curve["step"]``, ``curve["rca"]``, ``[C]`` or ``[R, C]`` for
  restarts) as ``<stem>.csv`` and ``<stem>.png``."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  stem = os.fspath(path_stem)
  os.makedirs(os.path.dirname(stem) or ".", exist_ok=True)
  steps = np.asarray(curve["step"])
  rca = np.asarray(curve["rca"])
  steps = steps if steps.ndim == 1 else steps[0]
  rca = rca[None] if rca.ndim == 1 else rca  # [R, C]
  with atomic_io.atomic_path(stem + ".csv") as tmp, open(tmp, "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["step"] + [f"rca_restart{r}" for r in range(rca.shape[0])])
    for c in range(len(steps)):
      w.writerow([int(steps[c])] + [f"{float(x):.6f}" for x in rca[:, c]])
  fig, ax = plt.subplots(figsize=(5, 3.2))
  for r in range(rca.shape[0]):
    ax.plot(steps, rca[r], label=f"restart {r}" if rca.shape[0] > 1 else "RCA")
  if chance is not None:
    ax.axhline(chance, color="gray", ls="--", label="chance 1/K")
  ax.set_xlabel("step")
  ax.set_ylabel("held-out RCA")
  ax.set_ylim(0, 1.02)
  ax.legend(fontsize=7)
  fig.tight_layout()
  with atomic_io.atomic_path(stem + ".png") as tmp:
    fig.savefig(tmp, dpi=100)
  plt.close(fig)
  return stem + ".csv", stem + ".png"


def summary_rows(directions: Directions, alignment=None) -> list[dict]:
  """The direction summary table: one row per direction, with method scores and, if
  given, factor alignment (an ``alignment.AlignmentResult``)."""
  rows = []
  per_dir = {k: np.asarray(v) for k, v in directions.scores.items()
             if isinstance(v, (list, tuple, np.ndarray)) and np.ndim(v) == 1
             and len(v) == directions.num_directions}
  align_rows = alignment.rows() if alignment is not None else None
  for k in range(directions.num_directions):
    row = {"index": k, "name": directions.names[k], "method": directions.method,
           "model": directions.model, "space": directions.space}
    for name, v in per_dir.items():
      row[name] = float(v[k])
    for name in ("rca", "val_accuracy"):
      if name in directions.scores and np.ndim(directions.scores[name]) == 0:
        row[name] = float(directions.scores[name])
    if align_rows is not None:
      row.update({kk: vv for kk, vv in align_rows[k].items() if kk != "direction"})
    rows.append(row)
  return rows


def _fmt(v) -> str:
  if isinstance(v, float):
    return "nan" if math.isnan(v) else f"{v:.4g}"
  return str(v)


def write_table(path_stem: str | os.PathLike, rows: Sequence[dict]) -> tuple[str, str]:
  """Writes ``rows`` as ``<stem>.csv`` and ``<stem>.md``; returns both paths."""
  stem = os.fspath(path_stem)
  for suffix in (".csv", ".md"):
    if stem.endswith(suffix):
      stem = stem[: -len(suffix)]
  os.makedirs(os.path.dirname(stem) or ".", exist_ok=True)
  cols = []
  for r in rows:
    cols += [c for c in r if c not in cols]
  with atomic_io.atomic_path(stem + ".csv") as tmp, open(tmp, "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=cols)
    w.writeheader()
    for r in rows:
      w.writerow({c: _fmt(r[c]) if isinstance(r.get(c), float) else r.get(c, "") for c in cols})
  atomic_io.atomic_write_text(stem + ".md", table_markdown(rows))
  return stem + ".csv", stem + ".md"
