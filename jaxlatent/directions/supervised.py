"""Supervised directions (InterFaceGAN, Shen et al. 2020), as in the MS abstract.

Fit a linear classifier on labelled latent codes (e.g. inverted healthy-control
and MS codes); the unit normal of its decision boundary, oriented from class 0 to
class 1, is the direction.  The default classifier is the reference's
``sklearn.svm.SVC(kernel='linear')`` (C = 1, raw codes), solved exactly by
:mod:`jaxlatent.directions.svm`; :func:`train_boundary` adds InterFaceGAN's selection
of the extreme-score codes.  Conditional editing removes the components along the
normals of other attributes, so moving along the result leaves them unchanged.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxlatent.directions import svm as _svm
from jaxlatent.directions.io import Directions
from jaxlatent.errors import ConfigError, DataError

# "svm": exact linear C-SVM (the reference); "hinge_adam" / "logistic": full-batch Adam
# on a hinge / logistic loss with an L2 penalty; "mean_difference": the class-mean
# difference (the attribute vector of Radford et al. 2016 and White 2016), the limit of
# the SVM's normal as C -> 0.  With few labelled subjects and a latent space of more
# dimensions than codes, the C = 1 SVM separates the codes by what tells the subjects
# apart and its normal is mostly noise (docs/VALIDATION.md, claim 2).
CLASSIFIERS = ("svm", "hinge_adam", "logistic", "mean_difference")


@dataclasses.dataclass
class Boundary:
  """A fitted linear boundary ``{x : normal . x = offset}`` in latent coordinates.

  Attributes:
    normal: ``[*latent_shape]`` unit normal pointing from class 0 to class 1.
    offset: signed distance of the boundary from the origin along ``normal``.
    train_accuracy, val_accuracy, val_balanced_accuracy: fractions in [0, 1]
      (val_*: on the held-out split, nan when there is none).
    num_train, num_val: split sizes.
    config: the fitting settings.
  """

  normal: np.ndarray
  offset: float
  train_accuracy: float
  val_accuracy: float
  val_balanced_accuracy: float
  num_train: int
  num_val: int
  config: dict

  def decision(self, latents) -> np.ndarray:
    """Signed distance of ``latents [N, *shape]`` to the boundary (> 0: class 1 side)."""
    x = np.asarray(latents, np.float32).reshape(len(latents), -1)
    return x @ self.normal.reshape(-1) - self.offset

  def to_directions(self, model: str = "generator", space: str = "z",
                    name: str = "class0->class1") -> Directions:
    return Directions(
        vectors=self.normal[None], method="interfacegan", model=model, space=space,
        scores={"train_accuracy": self.train_accuracy, "val_accuracy": self.val_accuracy,
                "val_balanced_accuracy": self.val_balanced_accuracy},
        names=[name], meta={"offset": self.offset, "config": self.config,
                            "num_train": self.num_train, "num_val": self.num_val})


def _held_out_count(n, val_fraction):
  """How many of ``n`` units of one class are held out (at least 1, never all)."""
  if val_fraction > 0 and n >= 2:
    return min(max(int(round(val_fraction * n)), 1), n - 1)
  return 0


def _split(key, y, val_fraction, groups=None):
  """Stratified random split -> (train_idx, val_idx).

  With ``groups`` (e.g. subject ids) whole groups go to one side, stratified by each
  group's majority class: the slices of one subject are near-duplicates, so a split
  over slices puts the same subject on both sides and overstates held-out accuracy.
  Without, every code is its own group.
  """
  if groups is None:
    group_of, group_class = np.arange(len(y)), y
  else:
    names, group_of = np.unique(np.asarray(groups), return_inverse=True)
    group_of = group_of.reshape(-1)
    sizes = np.bincount(group_of, minlength=len(names))
    group_class = 2 * np.bincount(group_of, weights=y, minlength=len(names)) >= sizes
  held = []
  for c in (0, 1):
    idx = np.flatnonzero(group_class == c)
    idx = idx[np.asarray(jax.random.permutation(jax.random.fold_in(key, c), len(idx)))]
    held.append(idx[:_held_out_count(len(idx), val_fraction)])
  in_val = np.isin(group_of, np.concatenate(held))
  return np.flatnonzero(~in_val), np.flatnonzero(in_val)


@functools.partial(jax.jit, static_argnames=("method", "steps"))
def _fit_linear(x, s, weights, l2, learning_rate, *, method: str, steps: int):
  """Full-batch Adam on a weighted hinge (SVM) or logistic loss + (l2/2)||w||^2.

  x: [N, D] standardised; s: [N] labels in {-1, +1}; weights: [N] sample weights.
  """
  tx = optax.adam(learning_rate)
  params = (jnp.zeros(x.shape[1]), jnp.zeros(()))

  def loss_fn(p):
    w, b = p
    margin = s * (x @ w + b)
    if method == "hinge_adam":
      per = jnp.maximum(0.0, 1.0 - margin)
    else:
      per = jax.nn.softplus(-margin)
    return (weights * per).sum() / weights.sum() + 0.5 * l2 * (w @ w)

  def body(carry, _):
    p, opt = carry
    g = jax.grad(loss_fn)(p)
    upd, opt = tx.update(g, opt, p)
    return (optax.apply_updates(p, upd), opt), None

  (params, _), _ = jax.lax.scan(body, (params, tx.init(params)), None, length=steps)
  return params


def fit_boundary(latents, labels, key: jax.Array, *, method: str = "svm", l2: float = 1e-3,
                 steps: int = 500, learning_rate: float = 0.05, val_fraction: float = 0.2,
                 balanced: bool | None = None, standardize: bool | None = None,
                 c: float = 1.0, tol: float = 1e-8, groups=None) -> Boundary:
  """Fits an InterFaceGAN boundary on ``latents [N, *shape]`` with binary ``labels [N]``.

  Args:
    latents: codes (any latent shape; w+ codes are flattened).
    labels: 0/1 (or bool) per code; class 1 is the target (e.g. MS).
    key: split key.
    method: "svm" (exact linear C-SVM as ``SVC(kernel='linear')``, the reference),
      "hinge_adam" or "logistic" (Adam on a hinge / logistic loss), or
      "mean_difference" (normal along mean(class 1) - mean(class 0), boundary at the
      midpoint of the two means).
    l2: L2 penalty on the (standardised) weights ("hinge_adam", "logistic").
    steps, learning_rate: full-batch Adam settings ("hinge_adam", "logistic").
    val_fraction: held-out fraction per class (stratified); 0: no held-out split.
    balanced: weight samples by inverse class frequency (unequal MS/HC counts);
      None: False for "svm" (as the reference), True otherwise ("mean_difference"
      weighs the classes equally either way).
    standardize: z-score features with train statistics before fitting; None: False
      for "svm" (the reference fits raw codes) and "mean_difference", True otherwise.
    c: the SVM's C ("svm"; per-sample C scaled by the class weight when balanced).
    tol: the SVM solver's tolerance on its relative KKT residuals ("svm").
    groups: optional ``[N]`` group ids (subject ids): the held-out split then holds
      out whole groups (stratified by each group's majority class), so the held-out
      accuracy is measured on subjects the boundary never saw; None splits the codes.

  Returns:
    Boundary with the unit normal in the original latent coordinates.
  """
  if method not in CLASSIFIERS:
    raise ConfigError(f"method {method!r} is not one of {', '.join(CLASSIFIERS)}")
  if not 0.0 <= val_fraction < 1.0:
    raise ConfigError(f"val_fraction must be in [0, 1), got {val_fraction}")
  x = np.asarray(latents, np.float32)
  shape = x.shape[1:]
  x = x.reshape(x.shape[0], -1)  # [N, D]
  y = np.asarray(labels).reshape(-1)
  if y.shape[0] != x.shape[0]:
    raise DataError(f"{x.shape[0]} latents but {y.shape[0]} labels")
  if not np.all(np.isin(y, (0, 1))):
    raise DataError(f"labels must be 0/1, got values {np.unique(y)[:10].tolist()}")
  y = y.astype(np.int32)
  if not np.all(np.isfinite(x)):
    raise DataError("latents contain non-finite values")
  counts = np.bincount(y, minlength=2)
  if counts.min() < 2:
    raise DataError(f"need at least 2 codes of each class, got {counts.tolist()}")
  if balanced is None:
    balanced = method != "svm"
  if standardize is None:
    standardize = method not in ("svm", "mean_difference")
  if groups is not None:
    groups = np.asarray(groups).reshape(-1)
    if groups.shape[0] != x.shape[0]:
      raise DataError(f"{x.shape[0]} latents but {groups.shape[0]} group ids")
  tr, va = _split(key, y, val_fraction, groups)
  xt, yt = x[tr], y[tr]
  mu = xt.mean(0) if standardize else np.zeros(x.shape[1], np.float32)
  sigma = np.maximum(xt.std(0), 1e-6) if standardize else np.ones(x.shape[1], np.float32)
  s = 2.0 * yt - 1.0
  ct = np.bincount(yt, minlength=2).astype(np.float32)
  weights = (len(yt) / (2.0 * ct))[yt] if balanced else np.ones(len(yt), np.float32)
  if method == "svm":
    solved = _svm.fit_linear_svc((xt - mu) / sigma, yt, c=float(c), tol=float(tol),
                                 sample_weight=weights if balanced else None)
    w, b = solved.coef, float(solved.intercept)
  elif method == "mean_difference":
    xs = (xt - mu) / sigma
    m0, m1 = xs[yt == 0].mean(0), xs[yt == 1].mean(0)
    w = (m1 - m0).astype(np.float64)
    b = -float(w @ (m0 + m1)) / 2.0
  else:
    w, b = _fit_linear(jnp.asarray((xt - mu) / sigma), jnp.asarray(s, jnp.float32),
                       jnp.asarray(weights, jnp.float32), float(l2), float(learning_rate),
                       method=method, steps=int(steps))
    w, b = np.asarray(w, np.float64), float(b)
  v = w / sigma  # normal in original coordinates: f(x) = v.x - (mu.v - b)
  norm = np.linalg.norm(v)
  # Relative to the codes' scale: the SVM's optimum is w = 0 (to rounding) when no
  # direction beats predicting the larger class everywhere.
  if not np.isfinite(norm) or norm * max(float(np.abs(xt).max()), 1e-30) < 1e-7:
    raise DataError("the classifier found no separating direction (all weights zero)")
  normal = v / norm
  offset = float((mu @ v - b) / norm)

  def acc(idx):
    if len(idx) == 0:
      return float("nan"), float("nan")
    pred = (x[idx] @ normal - offset > 0).astype(np.int32)
    correct = pred == y[idx]
    per_class = [correct[y[idx] == c].mean() for c in (0, 1) if np.any(y[idx] == c)]
    return float(correct.mean()), float(np.mean(per_class))

  train_acc, _ = acc(tr)
  val_acc, val_bacc = acc(va)
  return Boundary(
      normal=normal.reshape(shape).astype(np.float32), offset=offset,
      train_accuracy=train_acc, val_accuracy=val_acc, val_balanced_accuracy=val_bacc,
      num_train=int(len(tr)), num_val=int(len(va)),
      config={"method": method, "l2": l2, "steps": steps, "learning_rate": learning_rate,
              "val_fraction": val_fraction, "balanced": balanced,
              "standardize": standardize, "c": c, "tol": tol,
              "held_out": "codes" if groups is None else "groups"})


def train_boundary(latents, scores, seed: int = 0, *, chosen_num_or_ratio: float = 0.02,
                   split_ratio: float = 0.7, invalid_value=None, c: float = 1.0,
                   tol: float = 1e-8) -> Boundary:
  """InterFaceGAN's ``train_boundary``: extreme-score codes, linear SVC, unit normal.

  The top / bottom ``chosen_num_or_ratio`` codes by ``scores [N]`` are the positives /
  negatives, split ``split_ratio`` train / rest validation after a shuffle seeded by
  ``seed``; the normal is the SVC's ``coef_`` over its norm (raw codes, C = ``c``).
  """
  x = np.asarray(latents, np.float32)
  shape = x.shape[1:]
  x = x.reshape(x.shape[0], -1)
  if not np.all(np.isfinite(x)):
    raise DataError("latents contain non-finite values")
  tx, ty, vx, vy = _svm.select_by_score(
      x, scores, np.random.default_rng(seed), chosen_num_or_ratio=chosen_num_or_ratio,
      split_ratio=split_ratio, invalid_value=invalid_value)
  solved = _svm.fit_linear_svc(tx, ty, c=float(c), tol=float(tol))
  norm = np.linalg.norm(solved.coef)
  if not norm * max(float(np.abs(tx).max()), 1e-30) > 1e-7:
    raise DataError("the SVM found no separating direction (all weights zero)")
  normal = solved.coef / norm
  offset = float(-solved.intercept / norm)

  def acc(xx, yy):
    if len(yy) == 0:
      return float("nan"), float("nan")
    correct = (xx @ normal - offset > 0).astype(np.int32) == yy
    return float(correct.mean()), float(np.mean([correct[yy == k].mean() for k in (0, 1)]))

  val_acc, val_bacc = acc(vx, vy)
  return Boundary(
      normal=normal.reshape(shape).astype(np.float32), offset=offset,
      train_accuracy=acc(tx, ty)[0], val_accuracy=val_acc, val_balanced_accuracy=val_bacc,
      num_train=int(len(ty)), num_val=int(len(vy)),
      config={"method": "svm", "chosen_num_or_ratio": chosen_num_or_ratio,
              "split_ratio": split_ratio, "seed": seed, "c": c, "tol": tol})


def condition_direction(primal, conditions, tol: float = 1e-6) -> np.ndarray:
  """Conditional editing: ``primal`` with the span of ``conditions`` projected out.

  Args:
    primal: ``[*shape]`` direction to edit along (e.g. the HC -> MS normal).
    conditions: ``[M, *shape]`` normals of attributes to keep fixed (e.g. age, sex).
    tol: relative singular-value cut for (near) linearly dependent conditions.

  Returns:
    ``[*shape]`` unit vector, ``(I - Q Q^T) primal`` normalised, with Q an orthonormal
    basis of the conditions (so it is orthogonal to every condition normal).
  """
  p = np.asarray(primal, np.float64)
  shape = p.shape
  p = p.reshape(-1)
  c = np.asarray(conditions, np.float64).reshape(-1, p.shape[0])  # [M, D]
  u, sv, _ = np.linalg.svd(c.T, full_matrices=False)  # u: [D, M]
  q = u[:, sv > tol * max(sv.max(), 1e-30)]
  d = p - q @ (q.T @ p)
  norm = np.linalg.norm(d)
  if norm < tol * max(np.linalg.norm(p), 1e-30):
    raise DataError("the primal direction lies in the span of the conditions: nothing left "
                    "to edit after projecting them out")
  return (d / norm).reshape(shape).astype(np.float32)
