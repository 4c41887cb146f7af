"""Batched, jit-compiled rendering of phantom slices from factor vectors.

Keys: :func:`render` gives image ``i`` the key ``fold_in(key, i)`` and splits it
into a *subject* key (anatomical details) and a *noise* key, so image ``i`` is the
same whatever the batch size, and rendering the same key with one factor changed
gives the same subject and the same noise field with only that factor's effect
changed (the true difference map of a factor).  :func:`render_with_keys` takes the
subject and noise keys explicitly (several slices of one subject share a subject
key; see :mod:`jaxlatent.phantoms.population`).
"""

from __future__ import annotations

import functools
import numbers

import jax
import jax.numpy as jnp
import numpy as np

from jaxlatent.errors import ConfigError
from jaxlatent.phantoms import brain, thorax

KINDS = ("thorax", "brain")
THORAX_FACTORS = thorax.THORAX_FACTORS
BRAIN_FACTORS = brain.BRAIN_FACTORS
_MODULES = {"thorax": thorax, "brain": brain}
_TABLES = {"thorax": THORAX_FACTORS, "brain": BRAIN_FACTORS}
_LABELS = {"thorax": thorax.THORAX_LABELS, "brain": brain.BRAIN_LABELS}


def check_kind(kind) -> str:
  """Returns ``kind`` if it is a known phantom kind, else raises ConfigError."""
  if kind not in _MODULES:
    raise ConfigError(f"phantom kind {kind!r} is unknown; choose one of {', '.join(KINDS)}")
  return kind


def check_size(size) -> int:
  """Returns ``size`` as an int if it is a positive integer, else raises ConfigError."""
  if isinstance(size, bool) or not isinstance(size, numbers.Integral) or size < 1:
    raise ConfigError(f"size={size!r} must be a positive integer (pixels)")
  return int(size)


def factor_table(kind: str) -> dict[str, tuple[float, float, float]]:
  """Factor name -> (low, high, default) of ``kind``."""
  return _TABLES[check_kind(kind)]


def label_names(kind: str) -> dict[int, str]:
  """Label value -> tissue name of ``kind``'s label maps."""
  return _LABELS[check_kind(kind)]


def as_key(key):
  """Accepts a jax PRNG key (raw or typed) or an int seed."""
  if isinstance(key, numbers.Integral):
    return jax.random.PRNGKey(int(key))
  return key


def complete_factors(kind: str, factors: dict, n: int | None = None) -> dict[str, jnp.ndarray]:
  """Checks factor names, fills defaults and broadcasts every factor to float32 [n].

  ``n`` is taken from the factor arrays when not given; scalars broadcast.
  Raises ConfigError for unknown names or inconsistent lengths.
  """
  table = factor_table(kind)
  unknown = sorted(set(factors) - set(table))
  if unknown:
    raise ConfigError(f"unknown {kind} factor(s) {unknown}; known: {', '.join(table)}")
  arrays = {k: jnp.asarray(v, jnp.float32) for k, v in factors.items()}
  for k, v in arrays.items():
    if v.ndim > 1:
      raise ConfigError(f"factor {k!r} must be a scalar or a 1D array, got shape {v.shape}")
  lengths = {v.shape[0] for v in arrays.values() if v.ndim == 1}
  if n is not None:
    lengths.add(int(n))
  if len(lengths) > 1:
    raise ConfigError(f"{kind} factors have different lengths {sorted(lengths)}")
  n = lengths.pop() if lengths else 1
  if n < 1:
    raise ConfigError(f"{kind} factors are empty (need at least one image)")
  return {k: jnp.broadcast_to(arrays.get(k, jnp.float32(table[k][2])), (n,))
          for k in table}


def sample_factors(kind: str, key, n: int, **fixed) -> dict[str, jnp.ndarray]:
  """Draws ``n`` factor vectors uniformly within the ranges; ``fixed`` names override.

  Returns a dict name -> float32 [n] with every factor of ``kind``; sample ``i``
  depends only on ``fold_in(key, i)`` (not on ``n``).
  """
  table = factor_table(kind)
  if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
    raise ConfigError(f"n={n!r} must be a positive integer")
  lo = jnp.array([v[0] for v in table.values()], jnp.float32)
  hi = jnp.array([v[1] for v in table.values()], jnp.float32)
  u = uniform_rows(as_key(key), n)[:, :len(table)]  # [n, F]
  u = lo + (hi - lo) * u
  out = {name: u[:, j] for j, name in enumerate(table)}
  out.update({k: v for k, v in complete_factors(kind, fixed, n).items() if k in fixed})
  return out


ROW_WIDTH = 8  # uniforms per row (>= the number of factors)


def _pow2_at_least_8(n: int) -> int:
  return max(8, 2 ** int(np.ceil(np.log2(max(n, 1)))))


def uniform_rows(key, n: int) -> jnp.ndarray:
  """Uniforms [n, ROW_WIDTH]; row ``i`` depends only on ``fold_in(key, i)``.

  Computed for a padded power-of-two length so that few shapes get compiled.
  """
  return _uniform_rows(key, jnp.arange(_pow2_at_least_8(n)))[:n]


@jax.jit
def _uniform_rows(key, idx):
  return jax.vmap(lambda i: jax.random.uniform(jax.random.fold_in(key, i), (ROW_WIDTH,)))(idx)


def _one(kind: str, size: int, f: dict, subject_key, noise_key):
  """One slice: (noisy image, labels, mask)."""
  mod = _MODULES[kind]
  img, lab, mask = mod.fields(f, mod.details(subject_key), size)
  return mod.add_noise(img, f["noise"], noise_key), lab, mask


@functools.partial(jax.jit, static_argnames=("kind", "size"))
def _render_chunk(kind, size, factors, subject_keys, noise_keys):
  return jax.vmap(functools.partial(_one, kind, size))(factors, subject_keys, noise_keys)


CHUNK_PIXELS = 2**21  # pixels rendered per compiled call (bounds memory)


def chunk_size(size: int) -> int:
  """Images per compiled call: a power of two with about CHUNK_PIXELS pixels in all."""
  return max(1, 2 ** int(np.floor(np.log2(max(1, CHUNK_PIXELS // (size * size))))))


def _bucket(n: int, size: int) -> int:
  """Padded batch length for ``n`` images (powers of two >= 8, at most a chunk)."""
  return min(chunk_size(size), max(8, 2 ** int(np.ceil(np.log2(max(n, 1))))))


def _raw_keys(keys):
  """Typed threefry keys -> raw uint32 key data (one compiled variant for both)."""
  keys = jnp.asarray(keys) if not isinstance(keys, jax.Array) else keys
  if jnp.issubdtype(keys.dtype, jax.dtypes.prng_key):
    data = jax.random.key_data(keys)
    if data.shape[-1:] == (2,) and data.dtype == jnp.uint32:
      return data
  return keys


def _render_all(kind, size, f, subject_keys, noise_keys, to_numpy=False):
  """Renders in padded chunks of a few fixed lengths (few compiles, bounded memory).

  With ``to_numpy`` the chunks are copied into preallocated NumPy arrays (labels as
  uint8) so the peak memory is the output plus one chunk.
  """
  n = next(iter(f.values())).shape[0]
  m = _bucket(n, size)
  subject_keys, noise_keys = _raw_keys(subject_keys), _raw_keys(noise_keys)
  for name, k in (("subject_keys", subject_keys), ("noise_keys", noise_keys)):
    if k.shape[0] != n:
      raise ConfigError(f"{name} has {k.shape[0]} keys for {n} images")
  if to_numpy:
    outs = (np.empty((n, size, size), np.float32), np.empty((n, size, size), np.uint8),
            np.empty((n, size, size), bool))
  else:
    outs = ([], [], [])
  for start in range(0, n, m):
    stop = min(n, start + m)
    pad = lambda a: jnp.concatenate([a[start:stop]] + [a[stop - 1:stop]] * (m - (stop - start)))
    chunk = _render_chunk(kind, size, jax.tree_util.tree_map(pad, f), pad(subject_keys),
                          pad(noise_keys))
    for out, c in zip(outs, chunk):
      if to_numpy:
        out[start:stop] = np.asarray(c[:stop - start])
      else:
        out.append(c[:stop - start])
  return outs if to_numpy else tuple(jnp.concatenate(o) for o in outs)


def _split_keys(key, n: int):
  """Per-image subject and noise keys derived from ``fold_in(key, i)``."""
  sk, nk = _split_keys_jit(key, jnp.arange(_pow2_at_least_8(n)))
  return sk[:n], nk[:n]


@jax.jit
def _split_keys_jit(key, idx):
  keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(idx)
  return (jax.vmap(lambda k: jax.random.fold_in(k, 0))(keys),
          jax.vmap(lambda k: jax.random.fold_in(k, 1))(keys))


def render_with_keys(kind: str, factors: dict, size: int, subject_keys, noise_keys,
                     to_numpy: bool = False):
  """Renders with explicit per-image keys ([n] typed or [n, 2] raw).

  Returns ``(images float32 [n, size, size] in physical units, labels int32
  [n, size, size], masks bool [n, size, size])``; with ``to_numpy`` NumPy arrays
  (labels then uint8), filled chunk by chunk.
  """
  kind, size = check_kind(kind), check_size(size)
  f = complete_factors(kind, factors)
  return _render_all(kind, size, f, subject_keys, noise_keys, to_numpy)


def _render_key(kind, factors, size, key):
  kind, size = check_kind(kind), check_size(size)
  f = complete_factors(kind, factors)
  n = next(iter(f.values())).shape[0]
  sk, nk = _split_keys(as_key(key), n)
  return _render_all(kind, size, f, sk, nk)


def render(kind: str, factors: dict, size: int, key, return_labels: bool = False):
  """Renders ``n`` slices -> float32 [n, size, size] in HU (thorax) or T1 units (brain).

  Missing factors take their defaults; image ``i`` uses key ``fold_in(key, i)``.
  With ``return_labels`` returns ``(images, labels int32 [n, size, size])``.
  """
  img, lab, _ = _render_key(kind, factors, size, key)
  return (img, lab) if return_labels else img


def render_labels(kind: str, factors: dict, size: int, key=0) -> jnp.ndarray:
  """Tissue label maps int32 [n, size, size] (see THORAX_LABELS / BRAIN_LABELS).

  Lesions, vessels and sulci depend on the subject key, so pass the key used for
  :func:`render` to get the matching labels.
  """
  return _render_key(kind, factors, size, key)[1]


def render_masks(kind: str, factors: dict, size: int, key=0) -> jnp.ndarray:
  """Foreground masks bool [n, size, size] (thorax: body incl. breasts; brain: intracranial)."""
  return _render_key(kind, factors, size, key)[2]


def slice_keys(key, n_slices: int):
  """Keys ``fold_in(key, i)`` for i < n_slices (noise keys of the slices of a volume)."""
  return _fold_in_rows(key, jnp.arange(_pow2_at_least_8(n_slices)))[:n_slices]


@jax.jit
def _fold_in_rows(key, idx):
  return jax.vmap(lambda i: jax.random.fold_in(key, i))(idx)


def render_volume(kind: str, subject_factors: dict, size: int, n_slices: int, key,
                  return_mask: bool = False):
  """Renders one subject as a stack of axial slices -> np.float32 [size, size, n_slices].

  ``slice_position`` is swept linearly from 0 to 1 along the last axis (any
  ``slice_position`` in ``subject_factors`` is ignored).  ``vol[:, :, k]`` is the
  display-oriented slice (anterior up, subject right on the image left), equal to
  :func:`render_with_keys` of that slice position with subject key ``fold_in(key, 0)``
  and noise key ``fold_in(fold_in(key, 1), k)``.
  With ``return_mask`` also returns the bool foreground [size, size, n_slices].
  """
  kind, size = check_kind(kind), check_size(size)
  if isinstance(n_slices, bool) or not isinstance(n_slices, numbers.Integral) or n_slices < 1:
    raise ConfigError(f"n_slices={n_slices!r} must be a positive integer")
  key = as_key(key)
  f = {k: v for k, v in subject_factors.items() if k != "slice_position"}
  f = complete_factors(kind, f, n_slices)
  f["slice_position"] = jnp.linspace(0.0, 1.0, n_slices, dtype=jnp.float32)
  sk = jnp.stack([jax.random.fold_in(key, 0)] * n_slices)
  nk = slice_keys(jax.random.fold_in(key, 1), n_slices)
  img, _, mask = _render_all(kind, size, f, sk, nk, to_numpy=True)
  vol = np.moveaxis(img.astype(np.float32), 0, -1)  # [n, H, W] -> [H, W, n]
  if return_mask:
    return vol, np.moveaxis(np.asarray(mask), 0, -1)
  return vol
