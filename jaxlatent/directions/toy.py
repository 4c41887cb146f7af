"""Toy generators with planted directions, for tests and for checking a method on known truth.

``bump_generator``: latent z [D] -> u = P^T z (P a planted orthonormal basis) ->
image = tanh(gain * sum_i u_i * bump_i + offset), where bump_i are well separated
Gaussian blobs (``response="tanh"``), or blob i showing the even response
``1 - exp(-(gain u_i)^2 / 2)`` (``response="even"``).  Moving z along column i of P
changes only blob i: the planted directions are the columns of P (returned as rows).

Why "even" for Voynov & Babenko: with a linear (or tanh) response every rotated basis
is as distinguishable as the planted one, so the objective cannot prefer it.  With the
even response the sign of each u_i is invisible, so a mixed direction (a_1, a_2) is
confusable with (a_1, -a_2): axis-aligned directions are the only perfectly
distinguishable set and the planted basis is the clear optimum.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxlatent.generator import Generator, LatentSpec


def random_orthonormal(key: jax.Array, n: int) -> jax.Array:
  """A random ``[n, n]`` orthonormal matrix (QR of a Gaussian, signs fixed)."""
  q, r = jnp.linalg.qr(jax.random.normal(key, (n, n)))
  return q * jnp.sign(jnp.diag(r))[None, :]


def bump_images(num: int, size: int, sigma: float | None = None) -> jax.Array:
  """``[num, size, size]`` unit-peak Gaussian blobs on a grid, one per latent axis."""
  cols = math.ceil(math.sqrt(num))
  rows = math.ceil(num / cols)
  sigma = sigma or size / (3.0 * max(rows, cols))
  yy, xx = jnp.meshgrid(jnp.arange(size), jnp.arange(size), indexing="ij")
  bumps = []
  for i in range(num):
    cy = (i // cols + 0.5) * size / rows
    cx = (i % cols + 0.5) * size / cols
    bumps.append(jnp.exp(-((yy - cy + 0.5)**2 + (xx - cx + 0.5)**2) / (2 * sigma**2)))
  return jnp.stack(bumps).astype(jnp.float32)


def bump_generator(key: jax.Array, latent_dim: int = 6, size: int = 16, gain: float = 1.0,
                   offset: float = 0.0, planted: jax.Array | None = None,
                   response: str = "tanh",
                   latent_shape: tuple[int, ...] | None = None,
                   ) -> tuple[Generator, np.ndarray]:
  """A Generator whose planted directions move one blob each.

  Args:
    key: draws the planted basis P (unless ``planted`` is given).
    latent_dim: D (= number of blobs).
    size: image side.
    gain: tanh gain (larger = more saturating, more nonlinear).
    offset: constant added before tanh.
    planted: optional ``[D, D]`` rows = planted directions (orthonormal).
    latent_shape: per-sample latent shape (prod must be D), e.g. ``(2, 3)`` to mimic w+.

  Returns:
    ``(generator, planted [D, *latent_shape])``: rows are the planted unit directions.
  """
  rows = random_orthonormal(key, latent_dim) if planted is None else jnp.asarray(planted)
  p = rows.reshape(latent_dim, latent_dim).T  # [D, D], columns = planted directions
  bumps = bump_images(latent_dim, size)  # [D, H, W]
  shape = tuple(latent_shape or (latent_dim,))
  params = {"P": p, "bumps": bumps}

  def apply_fn(params, z):
    u = z.reshape(z.shape[0], -1) @ params["P"]  # [B, D] planted coordinates
    if response == "even":  # blob i shows g(u_i), even in u_i: the sign of u_i is hidden
      g = 1.0 - jnp.exp(-0.5 * (gain * u)**2)  # [B, D] in [0, 1)
      x = jnp.einsum("bd,dhw->bhw", g, params["bumps"])
      return jnp.tanh(2.0 * x - 1.0 + offset)[..., None]  # [B, H, W, 1]
    x = jnp.einsum("bd,dhw->bhw", u, params["bumps"])
    return jnp.tanh(gain * x + offset)[..., None]  # [B, H, W, 1]

  gen = Generator(params=params, apply_fn=apply_fn, latent_spec=LatentSpec(shape),
                  image_shape=(size, size, 1), name="bump-toy")
  return gen, np.asarray(p.T).reshape((latent_dim, *shape))


def constant_generator(latent_dim: int = 6, size: int = 16) -> Generator:
  """A Generator that ignores its input (every latent gives the same image)."""
  img = jnp.tile(jnp.linspace(-0.5, 0.5, size)[None, :], (size, 1))[..., None]

  def apply_fn(params, z):
    return jnp.broadcast_to(params["img"], (z.shape[0], size, size, 1))

  return Generator(params={"img": img}, apply_fn=apply_fn, latent_spec=LatentSpec((latent_dim,)),
                   image_shape=(size, size, 1), name="constant-toy")
