"""Direction-vector helpers shared by the methods: flatten latents, unit-normalise, fix signs."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from jaxlatent.errors import ConfigError, DataError


def flatten_directions(vectors, latent_shape: tuple[int, ...] | None = None):
  """``[K, *latent_shape] -> [K, D]`` (D = prod(latent_shape)); 1-D input is one direction."""
  vectors = jnp.asarray(vectors, jnp.float32)
  if vectors.ndim == 1:
    vectors = vectors[None]
  if latent_shape is not None:
    size = int(np.prod(latent_shape))
    if vectors.size % size or vectors.shape[1:] not in (tuple(latent_shape), (size,)):
      raise DataError(
          f"directions of shape {tuple(vectors.shape)} do not fit latents of shape "
          f"{tuple(latent_shape)}")
  return vectors.reshape(vectors.shape[0], -1)  # [K, D]


def unit_rows(x, eps: float = 1e-12):
  """Rows of ``x [K, D]`` scaled to unit L2 norm (zero rows stay zero)."""
  norm = jnp.linalg.norm(x, axis=-1, keepdims=True)
  return x / jnp.maximum(norm, eps)


def fix_signs(x):
  """Flips rows of ``x [K, D]`` so each row's largest-magnitude entry is positive.

  Eigen/singular vectors are defined up to sign; fixing it makes results
  reproducible across runs and backends.
  """
  idx = jnp.argmax(jnp.abs(x), axis=-1)
  sign = jnp.sign(jnp.take_along_axis(x, idx[:, None], axis=-1))
  return x * jnp.where(sign == 0, 1.0, sign)


def check_positive_int(name: str, value, minimum: int = 1) -> int:
  """Returns ``value`` as int or raises ConfigError naming ``name``."""
  if isinstance(value, bool) or int(value) != value or int(value) < minimum:
    raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
  return int(value)
