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

from jaxlatent import phantoms
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
