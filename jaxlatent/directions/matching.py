"""Matching direction sets by |cos| (Hungarian) and recurrence across restarts."""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment


def _unit_flat(x) -> np.ndarray:
  x = np.asarray(x, np.float64)
  x = x.reshape(x.shape[0], -1)
  return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def match_directions(found, reference) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """One-to-one matching of two direction sets maximising total |cos|.

  Args:
    found: ``[K, *shape]`` directions.
    reference: ``[M, *shape]`` directions (e.g. planted truth or another restart).

  Returns:
    ``(rows, cols, abs_cos)``: ``found[rows[i]]`` is matched with
    ``reference[cols[i]]`` at ``abs_cos[i]``; ``min(K, M)`` pairs (scipy's
    ``linear_sum_assignment``, the Hungarian algorithm).
  """
  cos = np.abs(_unit_flat(found) @ _unit_flat(reference).T)  # [K, M]
  rows, cols = linear_sum_assignment(cos, maximize=True)
  return rows, cols, cos[rows, cols]


def direction_recurrence(direction_sets, threshold: float = 0.8) -> dict:
  """Which directions recur across restarts.

  Args:
    direction_sets: ``[R, K, *shape]`` (one set per restart).
    threshold: a matched pair with ``|cos| >= threshold`` counts as "the same".

  Returns:
    dict with
      ``best_cos [R, R, K]``: for restart r, direction k, |cos| of its Hungarian match
        in restart s (1 on the diagonal);
      ``mean_best_cos [R, R]``: mean over k of the above;
      ``counts [R, K]``: in how many *other* restarts direction k of restart r recurs;
      ``recurring_fraction``: mean over r, k of ``counts / (R - 1)`` (nan for R = 1).
  """
  sets = [np.asarray(s) for s in direction_sets]
  r_count, k_count = len(sets), sets[0].shape[0]
  best = np.zeros((r_count, r_count, k_count))
  for r in range(r_count):
    for s in range(r_count):
      if r == s:
        best[r, s] = 1.0
        continue
      rows, _, cos = match_directions(sets[r], sets[s])
      best[r, s, rows] = cos
  counts = (best >= threshold).sum(axis=1) - 1  # [R, K], minus self
  frac = float(counts.mean() / (r_count - 1)) if r_count > 1 else float("nan")
  return {
      "best_cos": best,
      "mean_best_cos": best.mean(axis=-1),
      "counts": counts,
      "recurring_fraction": frac,
      "threshold": float(threshold),
  }
