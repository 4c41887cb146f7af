"""The ``Generator`` contract: the one seam between models and every analysis.

A generator is a pure function ``apply_fn(params, latents) -> images`` plus a
description of its latent space.  DCGAN, the VAE decoder, StyleGAN in z, w and
w+, and a user's own Flax module all become a :class:`Generator`, so direction
discovery, inversion and traversal analysis work on any of them.

Conventions (everywhere in jaxlatent):
  * images are float32, NHWC, values in [-1, 1] (single-channel: C = 1);
  * latents are ``[batch, *latent_spec.shape]`` float32;
  * a Generator is a pytree (params are leaves, the function and spec are static),
    so it can be passed through ``jit``/``vmap``/``grad`` as an argument.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Literal

import flax.linen as nn
from flax import struct
import jax
import jax.numpy as jnp

LatentSpace = Literal["z", "w", "w+"]


@dataclasses.dataclass(frozen=True)
class LatentSpec:
  """Shape and meaning of one sample's latent code.

  Attributes:
    shape: per-sample shape, e.g. ``(32,)`` for z or w, ``(num_ws, w_dim)`` for w+.
    space: "z" (prior N(0, I)), "w" (StyleGAN intermediate) or "w+" (one w per layer).
    prior: "normal" when codes are drawn from N(0, I); "none" when the space has no
      closed-form prior (w, w+: sample via the mapping network instead).
  """

  shape: tuple[int, ...]
  space: LatentSpace = "z"
  prior: Literal["normal", "none"] = "normal"

  @property
  def size(self) -> int:
    """Number of scalars in one latent code."""
    n = 1
    for d in self.shape:
      n *= d
    return n


class Generator(struct.PyTreeNode):
  """A frozen, pure image generator.

  Attributes:
    params: the pytree of parameters ``apply_fn`` needs.
    apply_fn: ``(params, latents[B, *shape]) -> images[B, H, W, C]`` in [-1, 1].
    latent_spec: what the latent codes are.
    image_shape: ``(H, W, C)`` of one output image.
    sample_fn: optional ``(params, key, n) -> latents[n, *shape]`` drawing typical
      codes (e.g. StyleGAN's mapped z for the w space). ``None``: N(0, I).
    name: a short model name for reports (e.g. "dcgan", "stylegan2-w+").
  """

  params: Any
  apply_fn: Callable[[Any, jax.Array], jax.Array] = struct.field(pytree_node=False)
  latent_spec: LatentSpec = struct.field(pytree_node=False)
  image_shape: tuple[int, int, int] = struct.field(pytree_node=False)
  sample_fn: Callable[[Any, jax.Array, int], jax.Array] | None = struct.field(
      pytree_node=False, default=None)
  name: str = struct.field(pytree_node=False, default="generator")

  def __call__(self, latents: jax.Array) -> jax.Array:
    """Renders ``latents[B, *shape]`` to ``images[B, H, W, C]``."""
    return _render(self, latents)

  def sample_latents(self, key: jax.Array, n: int) -> jax.Array:
    """Draws ``n`` typical latent codes, ``[n, *latent_spec.shape]``."""
    return _sample(self, key, int(n))


# Jitted so that a call outside any jit compiles one program instead of every op of
# the network separately; inside a jit (or vmap, grad) it is inlined as usual.
@jax.jit
def _render(generator: Generator, latents: jax.Array) -> jax.Array:
  return generator.apply_fn(generator.params, latents)


@functools.partial(jax.jit, static_argnames=("n",))
def _sample(generator: Generator, key: jax.Array, n: int) -> jax.Array:
  if generator.sample_fn is not None:
    return generator.sample_fn(generator.params, key, n)
  return jax.random.normal(key, (n, *generator.latent_spec.shape), jnp.float32)


def from_flax(
    module: nn.Module,
    variables: Any,
    latent_shape: tuple[int, ...],
    image_shape: tuple[int, int, int],
    *,
    method: Callable | str | None = None,
    space: LatentSpace = "z",
    name: str | None = None,
) -> Generator:
  """Wraps any Flax Linen module ``module.apply(variables, z) -> images`` as a Generator.

  This is how a user brings their own generator: every analysis in jaxlatent then
  works on it unchanged.
  """

  def apply_fn(params, latents):
    if method is None:
      return module.apply(params, latents)
    return module.apply(params, latents, method=method)

  return Generator(
      params=variables,
      apply_fn=apply_fn,
      latent_spec=LatentSpec(tuple(latent_shape), space, "normal" if space == "z" else "none"),
      image_shape=tuple(image_shape),
      name=name or type(module).__name__.lower(),
  )
