"""Eigen-analysis of a latent traversal (Güllmar, Hsu, Reichenbach; ISMRM abstract).

One traversal renders T images ``x_t = G(w + alpha_t * d)``.  The foreground voxels
of every step are stacked into ``M`` (voxels x steps, ``[V, T]``).  The steps x steps
covariance ``C`` of ``M`` is eigen-decomposed; its eigenvectors ``v_c`` (length T)
look like a polynomial series in alpha (component 1 ~ constant offset, component 2
~ linear in alpha, ...), and the spatial map of component c is ``M @ v_c`` put back
on the image grid.  Component 2 isolates the change along the direction more
cleanly than a subtraction map ``x_t - x_0``.

Conventions (fixed here, used everywhere in jaxlatent):
  * Components are named 1-based in docs/reports as in the abstract, but stored
    0-based: ``eigenvectors[:, 0]`` is component 1, ``[:, 1]`` is component 2.
  * ``center='voxels'`` (default, the abstract's covariance): the voxels are the
    observations and the steps the variables, ``C = (M - mu)^T (M - mu) / (V - 1)``
    with ``mu_t`` the mean over foreground voxels of step t (``np.cov(M, rowvar=False)``).
    ``center='steps'`` removes each voxel's mean over the steps instead (the
    constant component then has eigenvalue ~0); ``center='none'`` uses the raw second
    moment ``M^T M / (V - 1)``.
  * Component maps follow the abstract, ``M @ v_c`` on the raw (uncentred)
    foreground values (``project='raw'``); ``project='centered'`` projects the
    centred matrix instead (then ``sum(map_c**2) == (V - 1) * lambda_c``).  Maps are
    zero outside the mask.  Centring only shifts a map by a constant inside the mask.
  * Sign: eigenvectors have no intrinsic sign.  The eigenvectors look like a
    polynomial series in alpha, so component c is flipped to correlate positively
    with the degree-(c-1) orthonormal polynomial of the schedule: ``sum(v_1) >= 0``,
    ``cov(v_2, alpha) >= 0`` (a positive component-2 map means "increases with
    alpha"), component 3 positive on the quadratic, and so on; a component orthogonal
    to its own polynomial (numerically) takes the lowest degree it projects on (if
    none, ``sum(v_c) >= 0``).  ``corr_alpha[c]`` is the Pearson correlation of
    ``v_c`` with alpha after the flip, so ``corr_alpha[1] = |corr(v_2, alpha)|``.
  * Masks are fixed-size arrays multiplied in (no boolean indexing), so everything
    jits and vmaps; ``V = mask.sum()`` (times the number of channels).

Three ways to run it: :func:`eigen_analysis` (one traversal), :func:`eigen_analysis_batched`
(one jitted program over any leading batch dims: subjects x slices x directions), and the
streaming pair :func:`eigen_analysis_chunked` (``lax.scan`` over voxel chunks of an
in-memory array) / :func:`eigen_analysis_stream` (a re-iterable source of chunks,
e.g. a 3D volume read from a memmap), whose device memory is O(T^2 + chunk).
"""

from __future__ import annotations

import functools
from typing import Callable, Iterable, Literal

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from jaxlatent.errors import ConfigError, DataError

Center = Literal["voxels", "steps", "none"]
Project = Literal["raw", "centered"]
_CENTERS = ("voxels", "steps", "none")
_PROJECTS = ("raw", "centered")


class EigenResult(struct.PyTreeNode):
  """Eigen-analysis of one traversal (or a batch of them: every field gets the
  batch dims in front).  K = number of components kept (<= T).

  Attributes:
    eigenvalues: [T] covariance eigenvalues, descending.
    explained_variance_ratio: [T] ``max(lambda, 0) / sum(max(lambda, 0))``.
    eigenvectors: [T, T] column c is component c+1 (sign-fixed, see module doc).
    corr_alpha: [T] Pearson correlation of each eigenvector with alpha.
    component_maps: [K, H, W, C] ``M @ v_c`` on the image grid, 0 outside the mask.
    subtraction_maps: [T, H, W, C] ``(x_t - x_0) * mask`` (step 0 is all zeros).
    step_means: [T] mean foreground value of each step.
    n_voxels: [] number of foreground voxels V.
  """

  eigenvalues: jax.Array
  explained_variance_ratio: jax.Array
  eigenvectors: jax.Array
  corr_alpha: jax.Array
  component_maps: jax.Array
  subtraction_maps: jax.Array
  step_means: jax.Array
  n_voxels: jax.Array


def _check_options(center: str, project: str) -> None:
  if center not in _CENTERS:
    raise ConfigError(f"center={center!r} is unknown; choose one of {', '.join(_CENTERS)}")
  if project not in _PROJECTS:
    raise ConfigError(f"project={project!r} is unknown; choose one of {', '.join(_PROJECTS)}")


def _mm(a: jax.Array, b: jax.Array) -> jax.Array:
  """float32 matmul at full precision (GPUs/TPUs default to TF32/bf16 passes)."""
  return jnp.matmul(a, b, precision=jax.lax.Precision.HIGHEST)


def _pearson(a: jax.Array, b: jax.Array) -> jax.Array:
  """Pearson correlation of two vectors (0 when either is constant)."""
  a = a - a.mean()
  b = b - b.mean()
  den = jnp.sqrt(jnp.sum(a * a) * jnp.sum(b * b))
  return jnp.where(den > 0, jnp.sum(a * b) / jnp.where(den > 0, den, 1.0), 0.0)


def schedule_polynomials(alphas: jax.Array, degree: int) -> jax.Array:
  """Orthonormal polynomials of the schedule, ``[T, degree + 1]``; column d has degree d.

  Gram-Schmidt (QR) of the Vandermonde matrix of alpha rescaled to [-1, 1], with each
  column's sign chosen so that its leading coefficient is positive.
  """
  a = jnp.asarray(alphas)
  span = jnp.maximum(a.max() - a.min(), jnp.finfo(a.dtype).tiny)
  x = 2.0 * (a - a.min()) / span - 1.0
  vander = x[:, None] ** jnp.arange(degree + 1)[None, :]  # [T, degree + 1]
  q, r = jnp.linalg.qr(vander)
  return q * jnp.where(jnp.diag(r) < 0, -1.0, 1.0)[None, :]


def sign_fix(eigenvectors: jax.Array, alphas: jax.Array) -> jax.Array:
  """Applies the sign convention (module doc) to eigenvector columns ``[T, K]``.

  Column c is flipped to project positively on the degree-(c-1) polynomial; where that
  projection is numerically zero (e.g. with ``center='steps'`` every component is
  orthogonal to the constant), on the lowest-degree polynomial it does project on;
  failing all, ``sum(v_c) >= 0``.
  """
  t, k = eigenvectors.shape
  alphas = jnp.asarray(alphas, eigenvectors.dtype)
  poly = schedule_polynomials(alphas, t - 1)  # [T, T], column d has degree d
  proj = poly.T @ eigenvectors  # [T (degree), K]
  scale = jnp.sqrt(jnp.finfo(eigenvectors.dtype).eps)
  live = jnp.abs(proj) > scale
  lowest = jnp.take_along_axis(proj, jnp.argmax(live, axis=0)[None, :], axis=0)[0]  # [K]
  own = proj[jnp.minimum(jnp.arange(k), t - 1), jnp.arange(k)]  # degree c - 1
  own_live = (jnp.arange(k) < t) & (jnp.abs(own) > scale)
  key = jnp.where(own_live, own, jnp.where(live.any(axis=0), lowest,
                                           jnp.sum(eigenvectors, axis=0)))
  sign = jnp.where(key < 0, -1.0, 1.0).astype(eigenvectors.dtype)
  return eigenvectors * sign[None, :]


@functools.partial(jax.jit, static_argnames="num_components")
def polynomial_match(eigenvectors: jax.Array, alphas: jax.Array,
                     num_components: int = 4) -> jax.Array:
  """How well components 1..n follow the polynomial series in alpha: ``|<v_c, p_(c-1)>|``.

  ``eigenvectors`` is ``[..., T, K]`` (columns are unit eigenvectors) and ``p_d`` the
  degree-d orthonormal polynomial of the schedule (:func:`schedule_polynomials`), so
  each entry is the cosine between component c and its polynomial: 1 when component 1
  is constant over the steps, component 2 linear in alpha, component 3 quadratic, and
  so on.  Returns ``[..., min(n, K, T)]``.
  """
  t, k = eigenvectors.shape[-2:]
  n = min(int(num_components), k, t)
  poly = schedule_polynomials(jnp.asarray(alphas, jnp.float32), n - 1)  # [T, n]
  v = jnp.asarray(eigenvectors, jnp.float32)[..., :n]
  return jnp.abs(jnp.einsum("td,...td->...d", poly, v))


def _decompose(cov: jax.Array, alphas: jax.Array):
  """Sorted (descending), sign-fixed eigen-decomposition of a [T, T] covariance."""
  cov = 0.5 * (cov + cov.T)
  evals, evecs = jnp.linalg.eigh(cov)
  evals, evecs = evals[::-1], evecs[:, ::-1]
  evecs = sign_fix(evecs, alphas)
  pos = jnp.maximum(evals, 0.0)
  ratio = pos / jnp.maximum(pos.sum(), jnp.finfo(pos.dtype).tiny)
  corr = jax.vmap(_pearson, in_axes=(1, None))(evecs, jnp.asarray(alphas, evecs.dtype))
  return evals, ratio, evecs, corr


def _traversal_matrix(images: jax.Array, mask: jax.Array):
  """images [T, *vox], mask [*vox-ish] -> x [T, V_all] (a view, no copy) and m [V_all] (0/1).

  The natural layout: every step is a contiguous row, so no transposed copy is made.
  """
  t = images.shape[0]
  vshape = images.shape[1:]
  m = jnp.broadcast_to(_expand_mask(mask, vshape), vshape)
  return images.reshape(t, -1), m.reshape(-1).astype(images.dtype)


def _analyse(x: jax.Array, m: jax.Array, alphas: jax.Array, center: str, project: str,
             k: int):
  """Eigen-analysis of one traversal in the [T, V] layout (x [T, V], m [V]).

  Returns (eigenvalues, ratio, eigenvectors, corr_alpha, maps [K, V], step_means, n).
  The covariance is the Gram of the explicitly centred, masked matrix (exact mean
  first, then centring: stable in float32 for data with a large offset).  The mask
  is per voxel, so ``V_k^T (x * m) == (V_k^T x) * m``: raw maps need no masked copy.
  """
  n = m.sum()
  mu = _mm(x, m) / jnp.maximum(n, 1.0)  # [T]
  y = _centred(x, mu, center, step_axis=0) * m[None]
  cov = _mm(y, y.T) / jnp.maximum(n - 1.0, 1.0)  # [T, T], contracts the contiguous axis
  evals, ratio, evecs, corr = _decompose(cov, alphas)
  vk = evecs[:, :k].T  # [K, T]
  maps = _mm(vk, y) if project == "centered" else _mm(vk, x) * m[None]  # [K, V]
  return evals, ratio, evecs, corr, maps, mu, n


def _expand_mask(mask: jax.Array, voxel_shape: tuple[int, ...]) -> jax.Array:
  """Appends trailing axes so that ``mask`` [H, W] broadcasts against [H, W, C]."""
  mask = jnp.asarray(mask)
  while mask.ndim < len(voxel_shape):
    mask = mask[..., None]
  return mask


def _centred(mat: jax.Array, mu: jax.Array, center: str, step_axis: int = 1) -> jax.Array:
  """The matrix whose Gram is the covariance: ``mat`` minus the chosen mean.

  ``mat`` is [V, T] (``step_axis=1``, the streaming chunks) or [T, V] (``step_axis=0``).
  """
  if center == "voxels":
    return mat - jnp.expand_dims(mu, 1 - step_axis)
  if center == "steps":
    return mat - mat.mean(axis=step_axis, keepdims=True)
  return mat


@functools.partial(jax.jit, static_argnames=("center", "project", "n_components"))
def eigen_analysis(
    images: jax.Array,
    mask: jax.Array,
    alphas: jax.Array,
    *,
    center: Center = "voxels",
    project: Project = "raw",
    n_components: int | None = None,
) -> EigenResult:
  """Eigen-analysis of one traversal.

  Args:
    images: [T, H, W, C] the rendered traversal (step t at ``alphas[t]``).
    mask: [H, W] (or [H, W, C]) foreground; bool or 0/1 float.  Multiplied in.
    alphas: [T] the traversal's step sizes (any spacing); used for the sign
      convention and ``corr_alpha``.
    center: "voxels" (default; abstract), "steps" or "none" (module doc).
    project: "raw" (default; ``M @ v_c``) or "centered" maps.
    n_components: how many component maps to keep (default: all T).

  Returns:
    An :class:`EigenResult`.
  """
  _check_options(center, project)
  t = images.shape[0]
  k = t if n_components is None else min(int(n_components), t)
  images = images.astype(jnp.float32)
  x, m = _traversal_matrix(images, mask)  # [T, V_all], [V_all]
  evals, ratio, evecs, corr, maps, mu, n = _analyse(x, m, alphas, center, project, k)
  mfull = _expand_mask(mask, images.shape[1:]).astype(images.dtype)
  sub = (images - images[:1]) * mfull[None]  # [T, H, W, C]
  return EigenResult(evals, ratio, evecs, corr, maps.reshape((k,) + images.shape[1:]), sub,
                     mu, n)


@functools.partial(jax.jit, static_argnames=("center", "project", "n_components"))
def eigen_analysis_batched(
    images: jax.Array,
    masks: jax.Array,
    alphas: jax.Array,
    *,
    center: Center = "voxels",
    project: Project = "raw",
    n_components: int | None = None,
) -> EigenResult:
  """:func:`eigen_analysis` of every traversal in a batch, as one jit-compiled program.

  Same results as a loop of :func:`eigen_analysis`.  On XLA:CPU it runs a ``lax.scan``
  over the traversals (each one's [T, V] working set stays in cache; a vmap's
  batched dots and [B, ...] temporaries were ~2x slower); on other platforms a vmap.

  Args:
    images: [*batch, T, H, W, C], e.g. subjects x slices x directions x T x H x W x 1.
    masks: [*mbatch, H, W]; ``mbatch`` must broadcast against ``batch`` (numpy rules,
      right-aligned), e.g. masks [S, P, 1, H, W] for images [S, P, K, T, H, W, 1].
    alphas: [T] shared by every traversal.

  Returns:
    An :class:`EigenResult` whose fields have ``batch`` in front.
  """
  batch = tuple(images.shape[:-4])
  grid = tuple(images.shape[-3:-1])  # (H, W)
  if tuple(masks.shape[-2:]) != grid:
    raise ConfigError(f"masks end in {tuple(masks.shape[-2:])}, the images grid is {grid}")
  mbatch = tuple(masks.shape[:-2])
  try:
    bshape = np.broadcast_shapes(batch, mbatch)
  except ValueError as e:
    raise ConfigError(f"masks batch dims {mbatch} do not broadcast against the "
                      f"images batch dims {batch}") from e
  if tuple(bshape) != batch:
    raise ConfigError(f"masks batch dims {mbatch} would enlarge the images batch dims {batch}")
  t = images.shape[-4]
  k = t if n_components is None else min(int(n_components), t)
  vshape = tuple(images.shape[-3:])  # (H, W, C)
  images = images.astype(jnp.float32)
  masks = jnp.broadcast_to(masks, batch + grid)
  # Subtraction maps straight in the output shape: one fused pass, no reshape copies.
  sub = (images - images[..., :1, :, :, :]) * masks[..., None, :, :, None].astype(jnp.float32)
  n_flat, v_all = int(np.prod(batch)), int(np.prod(vshape))
  flat_x = images.reshape((n_flat, t, v_all))  # [B, T, V_all], a view
  flat_m = jnp.broadcast_to(masks[..., None], batch + vshape).reshape(n_flat, v_all)
  flat_m = flat_m.astype(jnp.float32)
  analyse = functools.partial(_analyse, center=center, project=project, k=k)
  vmapped = functools.partial(_analyse_vmap, analyse=analyse, batch=batch, vshape=vshape)
  if n_flat == 0:  # empty batch: nothing to loop over
    maps, evals, ratio, evecs, corr, mu, n = vmapped(flat_x, flat_m, alphas)
  else:
    # XLA:CPU: a loop over traversals keeps each one's working set in cache and writes
    # each map straight into its output slot; accelerators: one vmap.
    looped = functools.partial(_analyse_loop, analyse=analyse, batch=batch, k=k,
                               vshape=vshape)
    maps, evals, ratio, evecs, corr, mu, n = jax.lax.platform_dependent(
        flat_x, flat_m, alphas, cpu=looped, default=vmapped)
  return EigenResult(evals, ratio, evecs, corr, maps, sub, mu, n)


def _analyse_vmap(x, m, alphas, *, analyse, batch, vshape):
  """``vmap`` of ``analyse`` over the flat batch ``x`` [B, T, V], ``m`` [B, V].

  Returns (maps ``batch + (K, *vshape)``, eigenvalues, ratio, eigenvectors, corr,
  step_means, n), each with ``batch`` in front.  The default (non-CPU) path.
  """
  evals, ratio, evecs, corr, maps, mu, n = jax.vmap(analyse, in_axes=(0, 0, None))(
      x, m, alphas)
  small = [a.reshape(batch + a.shape[1:]) for a in (evals, ratio, evecs, corr, mu, n)]
  return maps.reshape(batch + maps.shape[1:2] + vshape), *small


def _analyse_loop(x, m, alphas, *, analyse, batch, k, vshape):
  """``lax.scan`` of ``analyse`` over the flat batch; same returns as :func:`_analyse_vmap`.

  The component maps are written with ``dynamic_update_slice`` into a carry that
  already has the output shape ``batch + (K, *vshape)``: reshaping a stacked
  [B, K, V] result afterwards makes XLA:CPU copy it (layout change).
  """
  lead = batch if batch else (1,)
  tail = (0,) * (1 + len(vshape))

  def step(maps, i):
    evals, ratio, evecs, corr, mp, mu, n = analyse(x[i], m[i], alphas)
    where = tuple(jnp.unravel_index(i, lead)) if batch else (i,)
    mp = mp.reshape((1,) * len(lead) + (k,) + vshape)
    maps = jax.lax.dynamic_update_slice(maps, mp, where + tail)
    return maps, (evals, ratio, evecs, corr, mu, n)

  init = jnp.zeros(lead + (k,) + vshape, jnp.float32)
  maps, small = jax.lax.scan(step, init, jnp.arange(x.shape[0]))
  small = [a.reshape(batch + a.shape[1:]) for a in small]
  return (maps if batch else maps[0]), *small


# --------------------------------------------------------------------------------------
# Streaming: accumulate (n, mean, centred second moment) over voxel chunks.


class _Moments(struct.PyTreeNode):
  """Running moments of the rows of M: count n, mean [T], scatter S [T, T].

  For center='voxels' S is the scatter about the running mean (combined with the
  parallel update of Chan, Golub & LeVeque, stable in float32); otherwise S is the
  raw second moment of the (row-centred for 'steps') voxel vectors.
  """

  n: jax.Array
  mean: jax.Array
  scatter: jax.Array


def _chunk_moments(x: jax.Array, m: jax.Array, center: str) -> _Moments:
  """Moments of one chunk: x [n, T] voxel rows, m [n] 0/1 weights."""
  x = x.astype(jnp.float32)
  m = m.astype(jnp.float32)
  n = m.sum()
  mean = (m[:, None] * x).sum(0) / jnp.maximum(n, 1.0)
  if center == "voxels":
    xc = (x - mean[None]) * m[:, None]
  elif center == "steps":
    xc = (x - x.mean(1, keepdims=True)) * m[:, None]
  else:
    xc = x * m[:, None]
  return _Moments(n, mean, _mm(xc.T, xc))


def _combine(a: _Moments, b: _Moments, center: str) -> _Moments:
  n = a.n + b.n
  safe = jnp.maximum(n, 1.0)
  delta = b.mean - a.mean
  mean = a.mean + delta * (b.n / safe)
  scatter = a.scatter + b.scatter
  if center == "voxels":
    scatter = scatter + jnp.outer(delta, delta) * (a.n * b.n / safe)
  return _Moments(n, mean, scatter)


def _zero_moments(t: int) -> _Moments:
  return _Moments(jnp.zeros((), jnp.float32), jnp.zeros((t,), jnp.float32),
                  jnp.zeros((t, t), jnp.float32))


def _project_chunk(x, m, mean, evecs, center: str, project: str):
  """Component values of one chunk of voxel rows: [n, T] -> [n, K] (0 off-mask)."""
  x = x.astype(jnp.float32)
  src = _centred(x, mean, center) if project == "centered" else x
  return _mm(src * m[:, None].astype(jnp.float32), evecs)


@functools.partial(jax.jit, static_argnames=("chunk_size", "center", "project",
                                             "n_components"))
def eigen_analysis_chunked(
    images: jax.Array,
    mask: jax.Array,
    alphas: jax.Array,
    *,
    chunk_size: int = 4096,
    center: Center = "voxels",
    project: Project = "raw",
    n_components: int | None = None,
) -> EigenResult:
  """:func:`eigen_analysis` with ``lax.scan`` over chunks of the flattened voxel axis.

  The working set per scan step is O(T^2 + chunk_size * T) and no transposed or
  padded copy of the input is made (the last chunk is shifted back to fit and its
  overlap masked); the inputs and the returned maps are of course full size.  Works for any voxel grid: images
  [T, *voxel_dims] (e.g. [T, H, W, C] or a 3D traversal [T, X, Y, Z]) with a mask
  broadcastable to ``voxel_dims``.  Same result as :func:`eigen_analysis`.
  """
  _check_options(center, project)
  t = images.shape[0]
  k = t if n_components is None else min(int(n_components), t)
  vshape = images.shape[1:]
  m_full = jnp.broadcast_to(_expand_mask(mask, vshape), vshape).astype(jnp.float32)
  flat = images.reshape(t, -1)  # [T, V_all], a view: no transposed or padded copy
  m = m_full.reshape(-1)
  v_all = flat.shape[1]
  chunk = min(int(chunk_size), v_all)
  n_chunks = -(-v_all // chunk)

  def chunk_at(i):
    """Chunk i as [chunk, T]; the last one is shifted back to fit, its overlap masked."""
    start = jnp.minimum(i * chunk, v_all - chunk)
    x = jax.lax.dynamic_slice_in_dim(flat, start, chunk, axis=1).T
    mm = jax.lax.dynamic_slice_in_dim(m, start, chunk)
    fresh = (start + jnp.arange(chunk)) >= i * chunk  # voxels no earlier chunk counted
    return start, x, mm * fresh

  def acc(mom, i):
    _, x, mm = chunk_at(i)
    return _combine(mom, _chunk_moments(x, mm, center), center), None

  mom, _ = jax.lax.scan(acc, _zero_moments(t), jnp.arange(n_chunks))
  cov = mom.scatter / jnp.maximum(mom.n - 1.0, 1.0)
  evals, ratio, evecs, corr = _decompose(cov, alphas)
  vk = evecs[:, :k]

  def write(i, maps):
    start, x, _ = chunk_at(i)
    mm = jax.lax.dynamic_slice_in_dim(m, start, chunk)  # overlap rewrites equal values
    part = _project_chunk(x, mm, mom.mean, vk, center, project)  # [chunk, K]
    return jax.lax.dynamic_update_slice_in_dim(maps, part.T, start, axis=1)

  maps = jax.lax.fori_loop(0, n_chunks, write, jnp.zeros((k, v_all), jnp.float32))
  maps = maps.reshape((k,) + vshape)
  sub = (images - images[:1]).astype(jnp.float32) * m_full[None]
  return EigenResult(evals, ratio, evecs, corr, maps, sub, mom.mean, mom.n)


class StreamResult(struct.PyTreeNode):
  """What :func:`eigen_analysis_stream` returns (host arrays for the maps).

  Attributes: as :class:`EigenResult`; ``component_maps`` is ``[V_all, K]`` in the
  voxel order of the chunks (or the caller's ``out`` array), not reshaped.
  """

  eigenvalues: jax.Array
  explained_variance_ratio: jax.Array
  eigenvectors: jax.Array
  corr_alpha: jax.Array
  component_maps: np.ndarray
  step_means: jax.Array
  n_voxels: jax.Array


def _as_rows(chunk) -> tuple[jax.Array, jax.Array]:
  """A chunk ``(values [T, *vox], mask [*vox])`` -> rows [n, T] and weights [n]."""
  try:
    values, mask = chunk
  except (TypeError, ValueError) as e:
    raise DataError("each chunk must be a pair (values [T, *voxels], mask [*voxels])") from e
  values = jnp.asarray(values, jnp.float32)
  t = values.shape[0]
  vshape = values.shape[1:]
  mask = jnp.broadcast_to(_expand_mask(jnp.asarray(mask), vshape), vshape)
  return values.reshape(t, -1).T, mask.reshape(-1).astype(jnp.float32)


_chunk_moments_jit = jax.jit(_chunk_moments, static_argnames=("center",))
_combine_jit = jax.jit(_combine, static_argnames=("center",))
_decompose_jit = jax.jit(_decompose)
_project_chunk_jit = jax.jit(_project_chunk, static_argnames=("center", "project"))


def eigen_analysis_stream(
    chunks: Callable[[], Iterable] | Iterable,
    alphas: jax.Array,
    *,
    center: Center = "voxels",
    project: Project = "raw",
    n_components: int | None = None,
    out: np.ndarray | None = None,
) -> StreamResult:
  """Two-pass eigen-analysis over a re-iterable source of voxel chunks.

  For data that does not fit in (device) memory, e.g. a traversal of 3D volumes
  stored as a memmap [T, X, Y, Z]: pass 1 accumulates the moments chunk by chunk
  (device memory O(T^2 + chunk)); pass 2 projects each chunk on the eigenvectors
  and writes its component values into ``out`` (host memory; a memmap works).

  Args:
    chunks: a zero-argument callable returning a fresh iterable, or a re-iterable
      (list, tuple), of pairs ``(values [T, *voxels], mask [*voxels])``; a chunk's
      voxel dims are flattened in C order, chunks are concatenated in order.
    alphas: [T].
    center, project, n_components: as :func:`eigen_analysis`.
    out: optional ``[V_all, K]`` float32 array to fill (e.g. ``np.memmap``).

  Returns:
    A :class:`StreamResult` (component maps ``[V_all, K]``).
  """
  _check_options(center, project)
  if callable(chunks):
    make = chunks
  else:
    if iter(chunks) is chunks:
      raise DataError("eigen_analysis_stream needs two passes over the chunks: pass a "
                      "list or a function returning a fresh iterator, not an iterator")
    make = lambda: chunks  # noqa: E731
  alphas = jnp.asarray(alphas, jnp.float32)
  t = alphas.shape[0]
  k = t if n_components is None else min(int(n_components), t)
  mom = _zero_moments(t)
  sizes = []
  for chunk in make():
    x, m = _as_rows(chunk)
    if x.shape[1] != t:
      raise DataError(f"a chunk has {x.shape[1]} steps but alphas has {t}")
    mom = _combine_jit(mom, _chunk_moments_jit(x, m, center=center), center=center)
    sizes.append(x.shape[0])
  if not sizes:
    raise DataError("eigen_analysis_stream got no chunks")
  cov = mom.scatter / jnp.maximum(mom.n - 1.0, 1.0)
  evals, ratio, evecs, corr = _decompose_jit(cov, alphas)
  vk = evecs[:, :k]
  v_all = int(sum(sizes))
  if out is None:
    out = np.zeros((v_all, k), np.float32)
  elif tuple(out.shape) != (v_all, k):
    raise DataError(f"out has shape {tuple(out.shape)}, expected {(v_all, k)}")
  start = 0
  for chunk in make():
    x, m = _as_rows(chunk)
    out[start:start + x.shape[0]] = np.asarray(
        _project_chunk_jit(x, m, mom.mean, vk, center=center, project=project))
    start += x.shape[0]
  if start != v_all:
    raise DataError(f"the second pass over the chunks gave {start} voxels, the first {v_all}")
  return StreamResult(evals, ratio, evecs, corr, out, mom.mean, mom.n)
