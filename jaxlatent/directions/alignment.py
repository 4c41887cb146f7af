"""Scoring directions against ground-truth factors (phantoms with known factors).

For each direction d and a few latents z_j, render ``G(z_j + s d)`` over shifts s,
predict every factor with a regressor (a small CNN trained on phantom images, or any
callable ``images -> [B, F]``), and fit the slope ``d(factor)/d(shift)`` per latent.
The mean slopes form an importance matrix R ``[K, F]`` (|slope|); a direction's best
factor is ``argmax_f R[k, f]`` and its alignment score is ``R[k, best] / sum_f R[k, f]``
in [0, 1].  Set-level summaries: DCI disentanglement / completeness (Eastwood &
Williams 2018, with R as the importance matrix) and a MIG-style gap.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from typing import Any, Callable, Sequence

import flax
import flax.linen as nn
from flax import struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxlatent import atomic_io, phantoms
from jaxlatent.data import intensity
from jaxlatent.directions import vector_ops
from jaxlatent.directions.io import Directions, to_jsonable
from jaxlatent.errors import ConfigError, DataError


class FactorCNN(nn.Module):
  """Small conv net ``images [B, H, W, C] -> standardised factors [B, F]``."""

  num_factors: int
  width: int = 16

  @nn.compact
  def __call__(self, x):
    for i in range(3):
      x = nn.Conv(self.width * 2**i, (3, 3), strides=2, padding="SAME")(x)
      x = nn.gelu(x)
    x = x.reshape(x.shape[0], -1)  # keep position information (no global pooling)
    x = nn.gelu(nn.Dense(4 * self.width)(x))
    return nn.Dense(self.num_factors)(x)


class FactorRegressor(struct.PyTreeNode):
  """A trained factor regressor: ``regressor(images) -> standardised factors [B, F]``.

  ``factor_mean``/``factor_std`` convert back to factor units; ``val_r2`` is the
  held-out R^2 per factor (how far each factor can be trusted).
  """

  params: Any
  factor_mean: jax.Array
  factor_std: jax.Array
  val_r2: jax.Array
  module: nn.Module = struct.field(pytree_node=False)
  factor_names: tuple = struct.field(pytree_node=False)

  def __call__(self, images: jax.Array) -> jax.Array:
    return self.module.apply(self.params, images)

  def predict_factors(self, images: jax.Array) -> jax.Array:
    """Predictions in the factors' own units."""
    return self(images) * self.factor_std + self.factor_mean


def train_factor_regressor(images, factors, key: jax.Array, factor_names: Sequence[str], *,
                           steps: int = 1000, batch_size: int = 64, learning_rate: float = 1e-3,
                           width: int = 16, val_fraction: float = 0.1) -> FactorRegressor:
  """Trains a :class:`FactorCNN` on ``images [N, H, W, C]`` (in [-1, 1], normalised like
  the generator's data) and ``factors [N, F]`` (standardised with train statistics)."""
  images = jnp.asarray(images, jnp.float32)
  factors = jnp.asarray(factors, jnp.float32).reshape(images.shape[0], -1)
  n, f = factors.shape
  if len(factor_names) != f:
    raise ConfigError(f"{len(factor_names)} factor names for {f} factors")
  n_val = max(1, int(val_fraction * n)) if val_fraction > 0 else 0
  module = FactorCNN(f, width)
  x_tr, t_tr, x_va, t_va, mean, std, params = _prepare_regressor(module, images, factors, key,
                                                                  n_val)
  params = _fit_regressor(module, params, x_tr, t_tr, jax.random.fold_in(key, 3),
                          steps=int(steps), batch_size=int(min(batch_size, n - n_val)),
                          learning_rate=float(learning_rate))
  r2 = _held_out_r2(module, params, x_va, t_va) if n_val else jnp.full((f,), jnp.nan)
  return FactorRegressor(params=params, factor_mean=mean, factor_std=std, val_r2=r2,
                         module=module, factor_names=tuple(str(x) for x in factor_names))


# One program each (not dozens of eagerly dispatched, separately compiled ops).
@functools.partial(jax.jit, static_argnames=("module", "n_val"))
def _prepare_regressor(module, images, factors, key, n_val):
  """Train / held-out split, targets standardised with train statistics, initial params."""
  perm = jax.random.permutation(jax.random.fold_in(key, 1), images.shape[0])
  tr, va = perm[n_val:], perm[:n_val]
  mean, std = factors[tr].mean(0), jnp.maximum(factors[tr].std(0), 1e-6)
  targets = (factors - mean) / std
  params = module.init(jax.random.fold_in(key, 2), images[:1])
  return images[tr], targets[tr], images[va], targets[va], mean, std, params


@functools.partial(jax.jit, static_argnames=("module",))
def _held_out_r2(module, params, x, t):
  resid = ((module.apply(params, x) - t)**2).sum(0)
  total = jnp.maximum(((t - t.mean(0))**2).sum(0), 1e-12)
  return 1.0 - resid / total


@functools.partial(jax.jit, static_argnames=("module", "batch_size", "learning_rate"))
def _regressor_step(module, params, opt_state, x, y, step_key, *, batch_size, learning_rate):
  """One Adam step of the regressor on a random minibatch of ``(x, y)``."""
  tx = optax.adam(learning_rate)
  idx = jax.random.randint(step_key, (batch_size,), 0, x.shape[0])

  def loss_fn(p):
    return ((module.apply(p, x[idx]) - y[idx])**2).mean()

  grads = jax.grad(loss_fn)(params)
  updates, opt_state = tx.update(grads, opt_state, params)
  return optax.apply_updates(params, updates), opt_state


def _fit_regressor(module, params, x, y, key, *, steps, batch_size, learning_rate):
  # A Python loop over one jitted step, not a lax.scan: XLA:CPU compiles the weight-
  # gradient convolutions of a while-loop body with layouts it runs without its fast
  # convolution kernels (jax-ml/jax#12868), many times slower than the same step alone.
  opt_state = optax.adam(learning_rate).init(params)
  for step_key in jax.random.split(key, steps):
    params, opt_state = _regressor_step(module, params, opt_state, x, y, step_key,
                                        batch_size=batch_size, learning_rate=learning_rate)
  return params


@dataclasses.dataclass
class AlignmentResult:
  """Factor alignment of K directions against F factors.

  Attributes:
    slopes: ``[K, F]`` mean d(standardised factor)/d(shift) over latents.
    slope_std: ``[K, F]`` spread of that slope over latents.
    r2: ``[K, F]`` mean R^2 of the per-latent linear fits.
    best_factor: ``[K]`` index of the best factor.
    score: ``[K]`` alignment ``|slope_best| / sum_f |slope_f|`` in [0, 1].
    total_change: ``[K]`` |slope_best| * shift range: change of the best factor (in
      factor standard deviations) over the traversal.
    names: ``[K]`` best factor's name when score >= threshold and total_change >=
      min_change, else the input name.
    factor_names, direction_names: labels.
    summary: ``dci_disentanglement``, ``dci_completeness``, ``mig_gap``, ``mean_score``.
  """

  slopes: np.ndarray
  slope_std: np.ndarray
  r2: np.ndarray
  best_factor: np.ndarray
  score: np.ndarray
  total_change: np.ndarray
  names: list
  factor_names: list
  direction_names: list
  summary: dict

  def rows(self) -> list[dict]:
    """One dict per direction: the direction summary table."""
    out = []
    for k in range(len(self.score)):
      b = int(self.best_factor[k])
      row = {"direction": self.direction_names[k], "name": self.names[k],
             "best_factor": self.factor_names[b], "alignment": float(self.score[k]),
             "r2": float(self.r2[k, b]), "total_change": float(self.total_change[k])}
      for f, fname in enumerate(self.factor_names):
        row[f"slope[{fname}]"] = float(self.slopes[k, f])
      out.append(row)
    return out

  def apply_to(self, directions: Directions) -> Directions:
    """A copy of ``directions`` named by best factor, with alignment scores added."""
    scores = dict(directions.scores)
    scores["alignment"] = {"score": self.score, "best_factor": [self.factor_names[int(b)]
                                                                for b in self.best_factor],
                           "total_change": self.total_change, **self.summary}
    return dataclasses.replace(directions, names=list(self.names), scores=scores)


def in_display_order(directions: Directions) -> Directions:
  """A view of ``directions`` for reports: the best-aligned direction of each named
  factor first (highest alignment first), then the others in saved order.

  A direction named by its factor is labelled ``"<factor> (d<k>)"`` (k: its saved
  index), so several directions of one factor stay distinct.  ``meta["display_order"]``
  maps each position to the saved index; the alignment rows follow the new order.
  Without factor alignment (real data) the directions come back unchanged.  Never save
  the view: the saved files keep the discovery's order.
  """
  rows = directions.meta.get("alignment_rows")
  if not rows or len(rows) != directions.num_directions:
    return directions
  best: dict[str, int] = {}
  for i, r in enumerate(rows):
    if r["name"] == r["best_factor"]:
      f = r["best_factor"]
      if f not in best or r["alignment"] > rows[best[f]]["alignment"]:
        best[f] = i
  first = sorted(best.values(), key=lambda i: -rows[i]["alignment"])
  order = first + [i for i in range(len(rows)) if i not in best.values()]
  names = [f"{directions.names[i]} (d{i})" if directions.names[i] != f"d{i}"
           else directions.names[i] for i in order]
  meta = dict(directions.meta, alignment_rows=[rows[i] for i in order], display_order=order)
  return dataclasses.replace(directions, vectors=directions.vectors[order], names=names,
                             meta=meta)


def _entropy(p, axis, base):
  p = np.clip(p, 1e-12, 1.0)
  return -(p * np.log(p)).sum(axis) / np.log(base)


def disentanglement_scores(importance) -> dict:
  """DCI disentanglement / completeness and a MIG-style gap from ``R [K, F] >= 0``.

  * ``dci_disentanglement``: sum_k rho_k (1 - H_F(R[k] / sum R[k])), rho_k = share of
    total importance;
  * ``dci_completeness``: mean_f (1 - H_K(R[:, f] / sum R[:, f]));
  * ``mig_gap``: mean_f (top1_f - top2_f) / top1_f over directions (1: one direction
    alone moves the factor).
  """
  r = np.abs(np.asarray(importance, np.float64))
  k, f = r.shape
  total = max(r.sum(), 1e-30)
  p_rows = r / np.maximum(r.sum(1, keepdims=True), 1e-30)
  d_k = 1.0 - _entropy(p_rows, 1, f) if f > 1 else np.ones(k)
  rho = r.sum(1) / total
  p_cols = r / np.maximum(r.sum(0, keepdims=True), 1e-30)
  c_f = 1.0 - _entropy(p_cols, 0, k) if k > 1 else np.ones(f)
  top = -np.sort(-r, axis=0)
  gap = (top[0] - (top[1] if k > 1 else 0.0)) / np.maximum(top[0], 1e-30)
  return {"dci_disentanglement": float((rho * d_k).sum()),
          "dci_completeness": float(c_f.mean()), "mig_gap": float(gap.mean())}


# A direction is named after a factor only if it moves it by at least this many of the
# factor's standard deviations over the traversal (a tiny but pure effect is no finding).
NAMING_MIN_CHANGE = 0.5


def factor_alignment(generator, directions, regressor: Callable[[jax.Array], jax.Array],
                     shifts: Sequence[float] = (-6.0, -4.0, -2.0, 0.0, 2.0, 4.0, 6.0),
                     key: jax.Array | None = None, *, num_latents: int = 8,
                     factor_names: Sequence[str] | None = None,
                     latents: jax.Array | None = None, threshold: float = 0.5,
                     min_change: float = NAMING_MIN_CHANGE) -> AlignmentResult:
  """How each direction moves each ground-truth factor.

  Args:
    generator: the Generator the directions belong to.
    directions: a Directions, or ``[K, *latent_shape]`` vectors (normalised here).
    regressor: ``images [B, H, W, C] -> [B, F]`` (standardised) factor predictions,
      e.g. a FactorRegressor, or an exact measurement on the images.
    shifts: traversal offsets along each unit direction.
    key: draws ``num_latents`` start codes (unless ``latents`` is given).
    factor_names: F names (default: ``regressor.factor_names``).
    latents: optional ``[J, *shape]`` start codes.
    threshold, min_change: name a direction by its best factor when its score is at
      least ``threshold`` and the factor changes by at least ``min_change`` std over
      the traversal.

  Returns:
    AlignmentResult (``.rows()`` is the summary table).
  """
  if isinstance(directions, Directions):
    vecs, dir_names = directions.flat(), list(directions.names)
  else:
    vecs = np.asarray(vector_ops.flatten_directions(directions))
    dir_names = [f"d{k}" for k in range(vecs.shape[0])]
  vecs = np.asarray(vector_ops.unit_rows(jnp.asarray(vecs)))
  spec = generator.latent_spec
  if vecs.shape[1] != spec.size:
    raise DataError(f"directions have size {vecs.shape[1]}, the generator's latent "
                    f"size is {spec.size}")
  s = jnp.asarray(shifts, jnp.float32)  # [S]
  if s.shape[0] < 2 or float(s.max() - s.min()) <= 0:
    raise ConfigError("factor_alignment needs at least two distinct shifts")
  if latents is None:
    if key is None:
      raise ConfigError("factor_alignment needs a key or latents")
    latents = generator.sample_latents(key, num_latents)
  z = jnp.asarray(latents, jnp.float32).reshape(latents.shape[0], -1)  # [J, D]
  j = z.shape[0]
  preds = _traverse_predict(generator, regressor, jnp.asarray(vecs), z, s)  # [K, J, S, F]
  preds = np.asarray(preds, np.float64)
  f = preds.shape[-1]
  names_f = list(factor_names or getattr(regressor, "factor_names", None)
                 or [f"f{i}" for i in range(f)])
  if len(names_f) != f:
    raise ConfigError(f"{len(names_f)} factor names for {f} predicted factors")
  sc = np.asarray(s, np.float64) - float(np.mean(s))
  pc = preds - preds.mean(axis=2, keepdims=True)
  slope_kj = np.einsum("s,kjsf->kjf", sc, pc) / (sc @ sc)  # [K, J, F]
  ss_tot = (pc**2).sum(2)
  ss_res = ((pc - slope_kj[:, :, None, :] * sc[None, None, :, None])**2).sum(2)
  r2_kj = np.where(ss_tot > 1e-12, 1.0 - ss_res / np.maximum(ss_tot, 1e-12), 0.0)
  slopes = slope_kj.mean(1)
  slope_std = slope_kj.std(1)
  r2 = r2_kj.mean(1)
  imp = np.abs(slopes)
  best = imp.argmax(1)
  score = imp.max(1) / np.maximum(imp.sum(1), 1e-12)
  change = imp.max(1) * float(s.max() - s.min())
  names = [names_f[b] if (score[i] >= threshold and change[i] >= min_change) else dir_names[i]
           for i, b in enumerate(best)]
  summary = disentanglement_scores(imp)
  summary["mean_score"] = float(score.mean())
  summary["num_latents"] = j
  summary["shifts"] = [float(x) for x in np.asarray(s)]
  return AlignmentResult(slopes, slope_std, r2, best, score, change, names, names_f,
                         dir_names, summary)


@functools.partial(jax.jit, static_argnames=("regressor_fn",))
def _traverse_predict_jit(generator, regressor_fn, reg_state, vecs, z, s):
  spec = generator.latent_spec

  def one(d):  # d [D] -> [J, S, F]
    zs = z[:, None, :] + s[None, :, None] * d  # [J, S, D]
    images = generator(zs.reshape((-1, *spec.shape)))  # [J*S, H, W, C]
    p = regressor_fn(reg_state, images)
    return p.reshape(z.shape[0], s.shape[0], -1)

  return jax.lax.map(one, vecs)  # [K, J, S, F]


def _traverse_predict(generator, regressor, vecs, z, s):
  if isinstance(regressor, struct.PyTreeNode):  # pytree regressor: pass as an argument
    return _traverse_predict_jit(generator, _call_pytree, regressor, vecs, z, s)
  return _traverse_predict_jit(generator, _CallPlain(regressor), None, vecs, z, s)


def _call_pytree(reg, images):
  return reg(images)


@dataclasses.dataclass(frozen=True)
class _CallPlain:
  fn: Callable

  def __call__(self, _, images):
    return self.fn(images)


def save_factor_regressor(path: str, regressor: FactorRegressor, fingerprint: dict) -> str:
  """Writes ``regressor`` (and the ``fingerprint`` of what trained it) as one ``.npz``.

  Keeps an analysis' factor alignment checkable later: the same generator, directions
  and regressor give the same alignment rows (tests/test_pretrained.py).  No pickle:
  arrays, plus names and the fingerprint as strings.
  """
  arrays = {f"params/{k}": np.asarray(v) for k, v in
            flax.traverse_util.flatten_dict(regressor.params, sep="/").items()}
  arrays.update(factor_mean=np.asarray(regressor.factor_mean),
                factor_std=np.asarray(regressor.factor_std),
                val_r2=np.asarray(regressor.val_r2),
                factor_names=np.asarray(list(regressor.factor_names)),
                width=np.asarray(regressor.module.width),
                fingerprint=np.asarray(json.dumps(to_jsonable(fingerprint), sort_keys=True)))
  atomic_io.atomic_save_npz(path, **arrays)
  return path


def load_factor_regressor(path: str) -> tuple[FactorRegressor, dict]:
  """``(regressor, fingerprint)`` from :func:`save_factor_regressor`'s file.

  Raises:
    DataError: the file is missing or is not a saved factor regressor.
  """
  try:
    with np.load(path, allow_pickle=False) as z:
      data = {k: z[k] for k in z.files}
    names = tuple(str(n) for n in data["factor_names"])
    params = flax.traverse_util.unflatten_dict(
        {k[len("params/"):]: jnp.asarray(v) for k, v in data.items()
         if k.startswith("params/")}, sep="/")
    reg = FactorRegressor(params=params, factor_mean=jnp.asarray(data["factor_mean"]),
                          factor_std=jnp.asarray(data["factor_std"]),
                          val_r2=jnp.asarray(data["val_r2"]),
                          module=FactorCNN(len(names), int(data["width"])), factor_names=names)
    return reg, json.loads(str(data["fingerprint"]))
  except (OSError, KeyError, ValueError) as e:
    raise DataError(f"{path}: not a saved factor regressor ({e})") from e


def phantom_images(kind: str, factors: dict, size: int, key) -> jax.Array:
  """Renders phantoms and normalises them like the data pipeline -> ``[n, S, S, 1]``.

  Thorax (CT): HU window [-1000, 2000] -> [-1, 1].  Brain (MR): per-image clip to the
  0.5 / 99.5 foreground percentiles -> [-1, 1] (the pipeline uses whole-volume
  percentiles; per slice is the closest a single rendered slice allows).
  """

  images = np.asarray(phantoms.render(kind, factors, size, key))  # [n, S, S] physical units
  if kind == "thorax":
    out = intensity.window_ct(images)
  else:
    masks = np.asarray(phantoms.render_masks(kind, factors, size, key))
    out = np.stack([intensity.normalize_mr(im, mask=m if m.any() else None)
                    for im, m in zip(images, masks)])
  return jnp.asarray(out[..., None], jnp.float32)


def train_phantom_regressor(kind: str, key: jax.Array, *, size: int, num_images: int = 2048,
                            factor_names: Sequence[str] | None = None, steps: int = 1000,
                            batch_size: int = 64, width: int = 16, **fixed) -> FactorRegressor:
  """A factor regressor for ``jaxlatent.phantoms`` images of ``kind`` ("thorax"/"brain").

  Factors are drawn uniformly over their ranges (``fixed`` pins some, e.g. noise=0);
  ``factor_names`` defaults to every factor but ``noise``.
  """
  f_key, r_key, t_key = jax.random.split(key, 3)
  factors = phantoms.sample_factors(kind, f_key, num_images, **fixed)
  names = list(factor_names or [k for k in factors if k != "noise" and k not in fixed])
  unknown = [n for n in names if n not in factors]
  if unknown:
    raise ConfigError(f"unknown {kind} factor(s) {unknown}; known: {sorted(factors)}")
  images = phantom_images(kind, factors, size, r_key)
  targets = jnp.stack([jnp.asarray(factors[n], jnp.float32) for n in names], axis=1)  # [N, F]
  return train_factor_regressor(images, targets, t_key, names, steps=steps,
                                batch_size=batch_size, width=width)
