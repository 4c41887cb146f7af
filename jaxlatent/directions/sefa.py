"""SeFa: closed-form factorization of latent semantics (Shen & Zhou, CVPR 2021).

The first layer that consumes the latent, ``y = z @ W`` (Flax kernel ``W [D, F]``),
moves the most along the top eigenvectors of ``W W^T`` (= ``A^T A`` with the PyTorch
weight ``A = W^T``).  As in the reference implementation each output unit's weight
vector (column of W) is normalised first, and for StyleGAN the per-layer style
affine kernels of the chosen layers are concatenated along the output axis.
"""

from __future__ import annotations

import functools
import re
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxlatent.directions import vector_ops
from jaxlatent.directions.io import Directions
from jaxlatent.errors import ConfigError


def sefa(weight, num_components: int | None = None, *, normalize: bool = True
         ) -> tuple[jax.Array, jax.Array]:
  """Top eigenvectors of ``W W^T`` for a latent-consuming kernel ``W [D, F]``.

  Args:
    weight: ``[D, F]`` kernel (``y = z @ W``), or a sequence of such kernels that are
      concatenated along F (StyleGAN style affines of several layers).
    num_components: how many directions (default: all D).
    normalize: divide each column of W by its norm first (reference SeFa behaviour).

  Returns:
    ``(directions [C, D], eigenvalues [C])``: unit rows, eigenvalues descending,
    signs fixed (largest entry positive).
  """
  if isinstance(weight, (list, tuple)):
    weight = jnp.concatenate([jnp.asarray(w, jnp.float32) for w in weight], axis=1)
  w = jnp.asarray(weight, jnp.float32)
  if w.ndim != 2:
    raise ConfigError(f"SeFa needs a [D, F] kernel, got shape {tuple(w.shape)}")
  d = w.shape[0]
  c = d if num_components is None else int(num_components)
  if not 1 <= c <= d:
    raise ConfigError(f"num_components must be in 1..{d}, got {num_components}")
  return _sefa(w, c, bool(normalize))


@functools.partial(jax.jit, static_argnames=("c", "normalize"))
def _sefa(w, c, normalize):
  if normalize:
    w = w / jnp.maximum(jnp.linalg.norm(w, axis=0, keepdims=True), 1e-12)
  evals, evecs = jnp.linalg.eigh(w @ w.T)  # ascending, [D], [D, D] columns
  order = jnp.argsort(-evals)[:c]
  directions = vector_ops.fix_signs(evecs[:, order].T)  # [C, D]
  return directions, evals[order]


def _walk(tree, prefix=()):
  """Yields (path tuple, leaf) in insertion (= module definition) order."""
  if isinstance(tree, dict) or hasattr(tree, "items"):
    for k, v in tree.items():
      yield from _walk(v, prefix + (str(k),))
  else:
    yield prefix, tree


def find_kernels(params: Any, *, name_contains: str = "", in_dim: int | None = None
                 ) -> list[tuple[str, jax.Array]]:
  """All 2-D ``kernel`` leaves of a Flax param tree (path "a/b/kernel", array), in order.

  Filters: ``name_contains`` must appear in the path; ``in_dim`` = kernel rows.
  """
  if hasattr(params, "keys") and "params" in params.keys():
    params = {"params": params["params"]}  # skip batch_stats, noise buffers, ...
  out = []
  for path, leaf in _walk(params):
    if not path or path[-1] not in ("kernel", "weight", "w"):
      continue
    if getattr(leaf, "ndim", 0) != 2:
      continue
    joined = "/".join(path)
    if name_contains and name_contains not in joined:
      continue
    if in_dim is not None and leaf.shape[0] != in_dim:
      continue
    out.append((joined, leaf))
  return out


def first_dense_kernel(params: Any, latent_size: int) -> jax.Array:
  """The first 2-D kernel whose input dim is the latent size (DCGAN's projection layer,
  a VAE decoder's first Dense, a user's module) -> ``[D, F]``."""
  found = find_kernels(params, in_dim=latent_size)
  if not found:
    raise ConfigError(
        f"no Dense kernel with input size {latent_size} in the generator's params; "
        "pass the weight matrix to sefa() directly")
  return jnp.asarray(found[0][1])


def _natural_key(path: str):
  """"b16/conv0" sorts after "b8/torgb": numbers compare as numbers (synthesis order
  survives a checkpoint that stored the dict sorted alphabetically)."""
  return [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", path)]


def style_kernels(params: Any, w_dim: int, layers: Sequence[int] | None = None,
                  name_contains: str = "affine", include_torgb: bool = False
                  ) -> list[jax.Array]:
  """StyleGAN per-layer style affine kernels ``[w_dim, C_l]`` in synthesis order.

  Args:
    params: generator variables (``jaxlatent.models.stylegan2``: the ``affine`` layers
      under ``params/synthesis/b{res}/conv{0,1}``).
    w_dim: rows of each kernel.
    layers: indices into the conv layers (= the w+ indices they consume), default all.
    name_contains: path fragment of the style affines.
    include_torgb: also use the ToRGB affines (reference SeFa uses the convs only).
  """
  found = find_kernels(params, name_contains=name_contains, in_dim=w_dim)
  if not include_torgb:
    found = [(p, k) for p, k in found if "torgb" not in p.lower()]
  found.sort(key=lambda pk: _natural_key(pk[0]))
  if not found:
    raise ConfigError(
        f"no style affine kernels (path containing {name_contains!r}, input {w_dim}) "
        "in the generator's params")
  if layers is not None:
    bad = [i for i in layers if not -len(found) <= i < len(found)]
    if bad:
      raise ConfigError(f"style layers {bad} out of range: {len(found)} affine layers")
    found = [found[i] for i in layers]
  return [jnp.asarray(k) for _, k in found]


def sefa_directions(generator, weight=None, num_components: int | None = None, *,
                    layers: Sequence[int] | None = None, normalize: bool = True
                    ) -> Directions:
  """SeFa on a Generator: ``weight`` given, or pulled from its params.

  z space: the first Dense kernel taking the latent.  w / w+: the style affine
  kernels of the conv ``layers`` (default all), concatenated.  In w+ a direction is
  placed on the w's of those layers (conv layer i consumes ``w+[i]``, the
  stylegan2-ada layout), as SeFa edits only the chosen layers' codes.

  The reference edits w+ by adding ``distance * boundary`` to each chosen layer's code
  (:func:`sefa_edit`).  The stored direction is that edit normalised over the whole
  w+ code, so ``meta["distance_scale"]`` (sqrt of the number of edited layers; 1 in z
  and w) converts: a reference distance d is a shift of ``d * distance_scale`` along
  the stored unit vector.
  """
  spec = generator.latent_spec
  w_dim = spec.shape[-1]
  if weight is None:
    if spec.space == "z":
      weight = first_dense_kernel(generator.params, spec.size)
    else:
      weight = style_kernels(generator.params, w_dim, layers)
  dirs, evals = sefa(weight, num_components, normalize=normalize)  # [C, d]
  distance_scale = 1.0
  if dirs.shape[1] != spec.size:
    if spec.space == "w+" and dirs.shape[1] == w_dim:
      num_ws = spec.shape[0]
      idx = list(range(num_ws - 1)) if layers is None else [i % num_ws for i in layers]
      mask = jnp.zeros((num_ws,)).at[jnp.asarray(idx)].set(1.0)
      dirs = dirs[:, None, :] * mask[None, :, None]  # [C, num_ws, w]: the per-layer edit
      distance_scale = float(np.sqrt(len(set(idx))))
    else:
      raise ConfigError(
          f"SeFa kernel has input size {dirs.shape[1]}, latent size is {spec.size}")
  dirs = np.asarray(dirs).reshape((dirs.shape[0], *spec.shape))
  evals = np.asarray(evals)
  return Directions(
      vectors=dirs, method="sefa", model=generator.name, space=spec.space,
      scores={"eigenvalues": evals, "eigenvalue_ratio": evals / evals.sum()},
      meta={"layers": None if layers is None else list(layers), "normalize": normalize,
            "distance_scale": distance_scale})


def sefa_edit(latents, boundary, distance, layers: Sequence[int]) -> jax.Array:
  """The reference's w+ edit: ``latents[:, l] += distance * boundary`` for l in layers.

  Args:
    latents: ``[B, num_ws, w_dim]`` w+ codes.
    boundary: ``[w_dim]`` a SeFa direction of :func:`sefa` (one row).
    distance: the edit distance (a scalar, or ``[B]`` per code).
    layers: the w+ indices to edit (the layers whose kernels were factorised).
  """
  latents = jnp.asarray(latents, jnp.float32)
  num_ws = latents.shape[1]
  mask = jnp.zeros((num_ws,)).at[jnp.asarray([i % num_ws for i in layers])].set(1.0)
  step = jnp.reshape(jnp.asarray(distance, jnp.float32), (-1, 1, 1))
  return latents + step * mask[None, :, None] * jnp.asarray(boundary, jnp.float32)[None, None]
