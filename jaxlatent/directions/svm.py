"""Exact linear C-SVM (the dual libsvm solves for ``SVC(kernel='linear')``), in NumPy.

InterFaceGAN fits its boundary with scikit-learn's ``SVC(kernel='linear')`` (C = 1, raw
codes).  This module solves the same problem without scikit-learn:

    min_a  0.5 a^T Q a - sum(a),   0 <= a_i <= C,   y^T a = 0,   Q_ij = y_i y_j x_i.x_j

(libsvm's formulation: the bias is unregularised, it is the multiplier of
``y^T a = 0``).  The solver is a primal-dual interior-point method with Mehrotra's
predictor-corrector: its iteration count hardly depends on how the codes are scaled or
correlated, where SMO (libsvm's method) can need millions of pair updates.  Q has rank
at most D, so each Newton system is solved through the Woodbury identity in
``O(N D^2)`` without forming the ``N x N`` kernel.
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np

from jaxlatent.errors import ConfigError, DataError


@dataclasses.dataclass
class LinearSVC:
  """A solved linear C-SVM: ``decision(x) = x . coef + intercept``.

  Attributes:
    coef: ``[D]`` primal weights (sklearn's ``coef_[0]``).
    intercept: scalar bias (sklearn's ``intercept_[0]``; libsvm's ``-rho``).
    dual: ``[N]`` dual variables ``a_i`` in ``[0, C_i]``.
    iterations: interior-point iterations taken.
    gap: final relative residual (max of the scaled KKT residuals and duality gap).
    converged: whether ``gap <= tol`` within ``max_iter``.
  """

  coef: np.ndarray
  intercept: float
  dual: np.ndarray
  iterations: int
  gap: float
  converged: bool


def _solver(z: np.ndarray, dg: np.ndarray, y: np.ndarray):
  """Returns ``solve(r, r_p) -> (da, dnu)`` for ``[[Z Z^T + diag(dg), y], [y^T, 0]]``."""
  dinv = 1.0 / dg
  zd = z * dinv[:, None]  # [N, D]
  k = np.eye(z.shape[1]) + z.T @ zd  # [D, D], SPD
  chol = np.linalg.cholesky(k)

  def minv(r):  # (Z Z^T + diag(dg))^{-1} r by Woodbury
    t = np.linalg.solve(chol.T, np.linalg.solve(chol, zd.T @ r))
    return dinv * r - zd @ t

  p = minv(y)
  ypy = y @ p

  def solve(r, r_p):
    v = minv(r)
    dnu = (y @ v + r_p) / ypy
    return v - p * dnu, dnu

  return solve


def _max_step(x, dx):
  """Largest step in (0, 1] keeping ``x + step * dx > 0`` (x > 0)."""
  neg = dx < 0
  if not np.any(neg):
    return 1.0
  return float(min(1.0, np.min(-x[neg] / dx[neg])))


def _bounds_ok(c: float, tol: float, max_iter: int) -> None:
  if not c > 0:
    raise ConfigError(f"svm C must be > 0, got {c}")
  if not tol > 0:
    raise ConfigError(f"svm tol must be > 0, got {tol}")
  if max_iter < 1:
    raise ConfigError(f"svm max_iter must be >= 1, got {max_iter}")


def fit_linear_svc(x, labels, *, c: float = 1.0, tol: float = 1e-8, max_iter: int = 200,
                   sample_weight=None) -> LinearSVC:
  """Solves the linear C-SVC dual on ``x [N, D]`` with ``labels [N]`` in {0, 1}.

  Class 1 is the positive class, so ``coef`` points from class 0 to class 1 (as
  sklearn's for labels 0/1).  ``tol`` bounds the relative KKT residuals and the
  duality gap; at the default the weights are the optimum to about float precision
  (sklearn stops earlier, at libsvm's ``tol=1e-3`` on the KKT violation).
  ``sample_weight [N]`` scales each code's C (sklearn's ``sample_weight``).
  """
  xs = np.asarray(x, np.float64)
  if xs.ndim != 2:
    raise DataError(f"svm codes must be [N, D], got shape {xs.shape}")
  y01 = np.asarray(labels).reshape(-1)
  if y01.shape[0] != xs.shape[0]:
    raise DataError(f"{xs.shape[0]} codes but {y01.shape[0]} labels")
  if not np.all(np.isin(y01, (0, 1))):
    raise DataError(f"svm labels must be 0/1, got values {np.unique(y01)[:10].tolist()}")
  if np.bincount(y01.astype(np.int64), minlength=2).min() < 1:
    raise DataError("svm needs at least one code of each class")
  _bounds_ok(float(c), float(tol), int(max_iter))
  n = xs.shape[0]
  y = np.where(y01 == 1, 1.0, -1.0)
  cap = np.full(n, float(c))
  if sample_weight is not None:
    cap = cap * np.asarray(sample_weight, np.float64).reshape(-1)
    if cap.shape != (n,) or not np.all(cap > 0):
      raise DataError(f"sample_weight must be [{n}] positive values")
  z = y[:, None] * xs  # Q = Z Z^T
  # Interior start: a in the middle of the box (y^T a = 0 is reached by the Newton steps).
  a = 0.5 * cap
  lam = np.ones(n)  # multiplier of a >= 0
  mu = np.ones(n)  # multiplier of a <= C
  nu = 0.0  # multiplier of y^T a = 0 (the bias)
  best = (np.inf, a, nu)
  stalled = 0
  it = 0
  # Near the optimum a_i / (C - a_i) may underflow; the loop then stops on the best.
  with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
    for it in range(1, int(max_iter) + 1):
      u = cap - a
      qa = z @ (z.T @ a)
      r_d = qa - 1.0 - lam + mu + nu * y
      r_p = float(y @ a)
      comp = (lam @ a + mu @ u) / (2 * n)
      err = max(np.linalg.norm(r_d) / (1.0 + np.sqrt(n) + np.linalg.norm(qa)),
                abs(r_p) / (1.0 + cap.sum()), comp / (1.0 + abs(a.sum())))
      if not np.isfinite(err):
        break
      # Keep the best iterate: on badly scaled codes rounding can stop progress short
      # of tol, and further steps then only push a towards the box edges.
      stalled = 0 if err < 0.5 * best[0] else stalled + 1
      if err < best[0]:
        best = (err, a, nu)
      if err <= tol or stalled >= 25:
        break
      dg = lam / a + mu / u
      solve = _solver(z, dg, y)

      def direction(tau, c1, c2):
        cl = tau - lam * a - c1
        cu = tau - mu * u - c2
        da, dnu = solve(-r_d + cl / a - cu / u, r_p)
        return da, (cl - lam * da) / a, (cu + mu * da) / u, dnu

      # Predictor (tau = 0), then Mehrotra's centring and second-order correction.
      da, dl, dm, _ = direction(0.0, 0.0, 0.0)
      step = min(_max_step(a, da), _max_step(u, -da), _max_step(lam, dl), _max_step(mu, dm))
      comp_aff = ((lam + step * dl) @ (a + step * da) + (mu + step * dm) @ (u - step * da)) / (
          2 * n)
      tau = (comp_aff / comp) ** 3 * comp
      da, dl, dm, dnu = direction(tau, da * dl, -da * dm)
      step = 0.995 * min(_max_step(a, da), _max_step(u, -da), _max_step(lam, dl),
                         _max_step(mu, dm))
      a = a + step * da
      lam = lam + step * dl
      mu = mu + step * dm
      nu = nu + step * dnu
  err, a, nu = best
  converged = err <= tol
  if not converged:
    warnings.warn(f"linear SVC stopped after {it} iterations at a relative residual "
                  f"{err:.2e} > tol {tol:.0e}; the boundary is approximate",
                  RuntimeWarning, stacklevel=2)
  coef = (a * y) @ xs
  # Stationarity on a free code: y_t (coef . x_t + nu) = 1, so the bias is nu.
  return LinearSVC(coef=coef, intercept=float(nu), dual=a, iterations=it, gap=float(err),
                   converged=bool(converged))


def select_by_score(latents, scores, key_rng: np.random.Generator, *,
                    chosen_num_or_ratio: float = 0.02, split_ratio: float = 0.7,
                    invalid_value=None):
  """InterFaceGAN's sample selection from continuous attribute ``scores [N]``.

  Codes are sorted by score (descending); the top ``chosen`` are positives and the
  bottom ``chosen`` negatives, ``chosen = int(N * r)`` for ``0 < r <= 1`` else
  ``int(r)``, capped at ``N // 2``.  Each side is shuffled and split ``split_ratio``
  train / rest validation.  Returns ``(train_x, train_y, val_x, val_y)``; labels 1 =
  high score.  ``key_rng`` replaces the reference's global ``np.random`` shuffle.
  """
  x = np.asarray(latents)
  s = np.asarray(scores, np.float64).reshape(-1)
  if s.shape[0] != x.shape[0]:
    raise DataError(f"{x.shape[0]} codes but {s.shape[0]} scores")
  if not chosen_num_or_ratio > 0:
    raise ConfigError(f"chosen_num_or_ratio must be > 0, got {chosen_num_or_ratio}")
  if invalid_value is not None:
    keep = s != invalid_value
    x, s = x[keep], s[keep]
  order = np.argsort(s, kind="stable")[::-1]
  x = x[order]
  n = x.shape[0]
  chosen = int(n * chosen_num_or_ratio) if chosen_num_or_ratio <= 1 else int(
      chosen_num_or_ratio)
  chosen = min(chosen, n // 2)
  train_num = int(chosen * split_ratio)
  if train_num < 1:
    raise DataError(f"{n} scored codes with chosen_num_or_ratio={chosen_num_or_ratio} and "
                    f"split_ratio={split_ratio} leave no training codes")
  pos_idx = key_rng.permutation(chosen)
  neg_idx = key_rng.permutation(chosen)
  pos, neg = x[:chosen], x[n - chosen:]
  train_x = np.concatenate([pos[pos_idx[:train_num]], neg[neg_idx[:train_num]]])
  val_x = np.concatenate([pos[pos_idx[train_num:]], neg[neg_idx[train_num:]]])
  val_num = chosen - train_num
  train_y = np.concatenate([np.ones(train_num, np.int32), np.zeros(train_num, np.int32)])
  val_y = np.concatenate([np.ones(val_num, np.int32), np.zeros(val_num, np.int32)])
  return train_x, train_y, val_x, val_y
