"""Ground-truth checks on phantoms: does a component map show the true change?

On the brain phantom population the true disease-related change of a subject is
known: render the subject healthy (HC factors) and with MS factors, same key
(same anatomy and noise draw), and subtract.  A traversal's component-2 map should
correlate with that difference map over the foreground, better than the simple
subtraction map (Güllmar's claim, checked with known truth).
"""

from __future__ import annotations

from typing import Mapping

import jax
import jax.numpy as jnp

from jaxlatent.errors import ConfigError


def difference_map_correlation(
    component_map: jax.Array,
    true_difference_map: jax.Array,
    mask: jax.Array,
) -> jax.Array:
  """Pearson correlation of two maps over the foreground.

  Args:
    component_map: [H, W] or [H, W, 1] (e.g. ``EigenResult.component_maps[1]``).
    true_difference_map: same grid.
    mask: [H, W] foreground (bool or 0/1), multiplied in (jit/vmap-safe).

  Returns:
    [] float32 correlation in [-1, 1] (0 if a map is constant on the mask).
    Works under ``vmap`` for batches of maps.
  """
  a = jnp.asarray(component_map, jnp.float32).reshape(mask.shape[:2] + (-1,))[..., 0]
  b = jnp.asarray(true_difference_map, jnp.float32).reshape(mask.shape[:2] + (-1,))[..., 0]
  m = jnp.asarray(mask, jnp.float32)
  n = jnp.maximum(m.sum(), 1.0)
  da = (a - (a * m).sum() / n) * m
  db = (b - (b * m).sum() / n) * m
  den = jnp.sqrt((da * da).sum() * (db * db).sum())
  return jnp.where(den > 0, (da * db).sum() / jnp.where(den > 0, den, 1.0), 0.0)


def phantom_difference_map(
    kind: str,
    factors: Mapping[str, jax.Array],
    changed: Mapping[str, jax.Array | float],
    size: int,
    key: jax.Array,
    *,
    noise_free: bool = True,
) -> jax.Array:
  """True difference map ``render(changed factors) - render(factors)``, same key.

  Args:
    kind: phantom kind for ``jaxlatent.phantoms.render`` (e.g. "brain").
    factors: the healthy subject's factors, name -> [n].
    changed: factors to override for the "disease" version (name -> [n] or scalar;
      names are checked by the phantom renderer),
      e.g. ``{"ventricle_size": ..., "atrophy": ..., "lesion_load": ...}``.
    size: image size.
    key: the same key renders both versions: image i uses the subject and noise
      keys that ``phantoms.render(kind, ..., key)`` gives image i (same anatomy).
    noise_free: render both with ``noise = 0`` (the phantom's Rician noise is not
      additive, so it would not cancel exactly); False keeps the given noise.

  Returns:
    [n, size, size] difference in the phantom's physical units.
  """
  from jaxlatent import phantoms  # local: keeps analysis importable on its own

  if not factors:
    raise ConfigError("factors is empty: give at least one factor as an array [n]")
  n = int(jnp.asarray(next(iter(factors.values()))).reshape(-1).shape[0])
  healthy = {k: jnp.asarray(v, jnp.float32) for k, v in factors.items()}
  if noise_free:
    healthy["noise"] = jnp.zeros((n,), jnp.float32)
  disease = dict(healthy)
  for name, value in changed.items():
    disease[name] = jnp.broadcast_to(jnp.asarray(value, jnp.float32), (n,))
  hc = phantoms.render(kind, healthy, size, key)
  ms = phantoms.render(kind, disease, size, key)
  return ms - hc


def phantom_traversal(
    kind: str,
    factors: Mapping[str, float],
    changed: Mapping[str, float],
    alphas: jax.Array,
    size: int,
    key: jax.Array,
    *,
    alpha_max: float | None = None,
    noise_free: bool = True,
) -> jax.Array:
  """The ideal traversal of one phantom subject: factors moved linearly to ``changed``.

  Step t renders ``factors + (alphas[t] / alpha_max) * (changed - factors)`` for the
  same subject (image 0's keys of ``phantoms.render(kind, ..., key)``), so with
  ``alphas[-1] == alpha_max`` the last minus the first image is exactly
  ``phantom_difference_map(kind, factors, changed, size, key)[0]``.  It is what a
  perfectly disentangled generator would render along the HC -> MS direction.

  Args:
    kind, size, key, noise_free: as :func:`phantom_difference_map`.
    factors: the subject's factor values (name -> scalar); missing ones: defaults.
    changed: the end point of the changed factors (name -> scalar).
    alphas: [T] the schedule (e.g. ``default_alphas()``).
    alpha_max: the alpha that reaches ``changed`` (default ``max(alphas)``).

  Returns:
    images [T, size, size] in the phantom's physical units.
  """
  from jaxlatent import phantoms

  alphas = jnp.asarray(alphas, jnp.float32)
  top = float(jnp.max(alphas)) if alpha_max is None else float(alpha_max)
  if top == 0:
    raise ConfigError("alpha_max must be non-zero")
  base = {k: float(v) for k, v in factors.items()}
  if noise_free:
    base["noise"] = 0.0
  frames = []
  for a in (alphas / top).tolist():  # one render call per step: the same subject keys
    f = dict(base)
    for name, end in changed.items():
      start = base.get(name, float(phantoms.factor_table(kind)[name][2]))
      f[name] = start + a * (float(end) - start)
    frames.append(phantoms.render(kind, {k: jnp.asarray([v], jnp.float32)
                                         for k, v in f.items()}, size, key)[0])
  return jnp.stack(frames)  # [T, size, size]
