"""Latent traversals: render ``G(latent + alpha_t * direction)`` for every step.

Güllmar's schedule is alpha = 0 .. 50 in 15 steps from the inverted code of a
healthy subject along the HC -> MS direction; the CT paper shows +-6 and +-18.
Any schedule (any spacing, negative values) works.  Works on every
:class:`~jaxlatent.generator.Generator` (z, w, w+ or a user's module): the
direction has the latent's per-sample shape, e.g. [num_ws, w_dim] in w+.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxlatent.analysis.eigen import eigen_analysis_batched
from jaxlatent.errors import ConfigError
from jaxlatent.generator import Generator


def default_alphas(start: float = 0.0, stop: float = 50.0, num: int = 15) -> jax.Array:
  """Güllmar's schedule: ``jnp.linspace(0, 50, 15)`` (configurable)."""
  return jnp.linspace(start, stop, num, dtype=jnp.float32)


def shifted_latents(latents: jax.Array, direction: jax.Array, alphas: jax.Array) -> jax.Array:
  """``latents [B, *shape]``, ``direction [*shape]``, ``alphas [T]`` -> ``[B, T, *shape]``."""
  shift = jax.vmap(lambda a: a * direction)(alphas)  # [T, *shape]
  return jax.vmap(lambda z: z[None] + shift)(latents)  # [B, T, *shape]


def _render(generator: Generator, codes: jax.Array, batch_size: int | None) -> jax.Array:
  """codes [N, *shape] -> images [N, H, W, C], optionally ``batch_size`` at a time."""
  n = codes.shape[0]
  if batch_size is None or batch_size >= n:
    return generator(codes)
  n_chunks = -(-n // batch_size)
  pad = n_chunks * batch_size - n
  padded = jnp.concatenate([codes, jnp.repeat(codes[:1], pad, axis=0)], 0) if pad else codes
  chunks = padded.reshape((n_chunks, batch_size) + codes.shape[1:])
  images = jax.lax.map(generator, chunks)  # [n_chunks, batch_size, H, W, C]
  return images.reshape((n_chunks * batch_size,) + images.shape[2:])[:n]


def _check(generator: Generator, latents: jax.Array, directions: jax.Array, ndir: int):
  shape = tuple(generator.latent_spec.shape)
  if tuple(latents.shape[1:]) != shape:
    raise ConfigError(f"latents have per-sample shape {tuple(latents.shape[1:])}, the "
                      f"generator {generator.name!r} expects {shape}")
  if tuple(directions.shape[ndir:]) != shape:
    raise ConfigError(f"direction has shape {tuple(directions.shape[ndir:])}, the "
                      f"generator {generator.name!r} expects {shape}")


@functools.partial(jax.jit, static_argnames=("batch_size", "normalize"))
def traverse(
    generator: Generator,
    latents: jax.Array,
    direction: jax.Array,
    alphas: jax.Array,
    *,
    normalize: bool = False,
    batch_size: int | None = None,
) -> jax.Array:
  """Renders a traversal from every latent along one direction.

  Args:
    generator: any Generator.
    latents: [B, *shape] start codes (e.g. inverted real images).
    direction: [*shape] the direction (used as given unless ``normalize``).
    alphas: [T] step sizes, e.g. :func:`default_alphas`.
    normalize: scale the direction to unit L2 norm first.
    batch_size: render at most this many images per generator call (``lax.map``)
      to bound memory; default: all B*T in one call.

  Returns:
    images [B, T, H, W, C].
  """
  _check(generator, latents, direction, 0)
  if normalize:
    direction = direction / jnp.maximum(jnp.linalg.norm(direction), 1e-12)
  codes = shifted_latents(latents, direction, alphas)  # [B, T, *shape]
  b, t = codes.shape[:2]
  images = _render(generator, codes.reshape((b * t,) + codes.shape[2:]), batch_size)
  return images.reshape((b, t) + images.shape[1:])


@functools.partial(jax.jit, static_argnames=("batch_size", "normalize"))
def traverse_many(
    generator: Generator,
    latents: jax.Array,
    directions: jax.Array,
    alphas: jax.Array,
    *,
    normalize: bool = False,
    batch_size: int | None = None,
) -> jax.Array:
  """:func:`traverse` for many directions at once (vmapped over directions).

  Args:
    latents: [B, *shape]; directions: [K, *shape]; alphas: [T].

  Returns:
    images [K, B, T, H, W, C]; feed ``jnp.moveaxis(images, 0, 1)`` ([B, K, T, ...])
    to :func:`jaxlatent.analysis.eigen_analysis_batched`.
  """
  _check(generator, latents, directions, 1)
  if normalize:
    axes = tuple(range(1, directions.ndim))
    directions = directions / jnp.maximum(
        jnp.sqrt(jnp.sum(directions ** 2, axis=axes, keepdims=True)), 1e-12)
  codes = jax.vmap(shifted_latents, in_axes=(None, 0, None))(
      latents, directions, alphas)  # [K, B, T, *shape]
  k, b, t = codes.shape[:3]
  images = _render(generator, codes.reshape((k * b * t,) + codes.shape[3:]), batch_size)
  return images.reshape((k, b, t) + images.shape[1:])


@functools.partial(jax.jit, static_argnames=("normalize", "batch_size", "center", "project",
                                             "n_components"))
def traverse_and_analyze(
    generator: Generator,
    latents: jax.Array,
    directions: jax.Array,
    masks: jax.Array,
    alphas: jax.Array,
    *,
    normalize: bool = False,
    batch_size: int | None = None,
    center: str = "voxels",
    project: str = "raw",
    n_components: int | None = None,
):
  """Traversal + eigen-analysis over subjects x slices x directions, one jitted program.

  Args:
    latents: [*batch, *shape] start codes, e.g. [subjects, slices, *shape].
    directions: [K, *shape].
    masks: [*batch, H, W] foreground of each start image.
    alphas: [T].
    normalize, batch_size: as :func:`traverse`; center, project, n_components: as
      :func:`jaxlatent.analysis.eigen_analysis`.

  Returns:
    An ``EigenResult`` with leading dims ``[*batch, K]``.
  """

  shape = tuple(generator.latent_spec.shape)
  batch = tuple(latents.shape[:latents.ndim - len(shape)])
  if tuple(latents.shape[len(batch):]) != shape:
    raise ConfigError(f"latents end in {tuple(latents.shape[len(batch):])}, the generator "
                      f"{generator.name!r} expects {shape}")
  if tuple(masks.shape[:-2]) != batch:
    raise ConfigError(f"masks have batch dims {tuple(masks.shape[:-2])}, latents {batch}")
  flat = latents.reshape((-1,) + shape)  # [N, *shape]
  images = traverse_many(generator, flat, directions, alphas, normalize=normalize,
                         batch_size=batch_size)  # [K, N, T, H, W, C]
  k = images.shape[0]
  images = jnp.moveaxis(images, 0, 1).reshape(batch + (k,) + images.shape[2:])
  return eigen_analysis_batched(images, masks[..., None, :, :], alphas, center=center,
                                project=project, n_components=n_components)
