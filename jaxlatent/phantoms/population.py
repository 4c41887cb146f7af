"""Populations of phantom subjects and 2D slice data sets drawn from them.

A subject is a set of subject-level factors (everything but ``slice_position``)
plus a subject key (anatomical details: sulci, lesion candidates, lung vessels).
Subject ``i``'s factors come from uniforms drawn with ``fold_in(fold_in(key, 0), i)``
and its subject key is ``fold_in(fold_in(key, 1), i)``, so growing a population
keeps its first subjects, except that groups are assigned by ranking one uniform
per subject (so exactly ``round(n * ms_fraction)`` subjects are MS).

Brain: healthy controls (HC) and multiple-sclerosis patients (MS).  MS subjects
have larger ventricles, more atrophy and lesions; the distributions overlap (both
also grow with ``age``):

  ===============  ==============================  ==============================
  factor           HC                              MS
  ===============  ==============================  ==============================
  age              U(20, 75)                       U(20, 65)
  ventricle_size   0.85 + 0.008 (age-45) + N(.12)  1.25 + 0.008 (age-45) + N(.2)
  atrophy          0.08 + 0.004 (age-45) + N(.06)  0.35 + 0.004 (age-45) + N(.15)
  lesion_load      |N(0, 0.05)|                    0.45 + N(0.2)
  ===============  ==============================  ==============================

(all clipped to the factor ranges); ``rotation`` ~ U(-8, 8) degrees and ``noise``
~ U(0.01, 0.04) for everyone.

Thorax: group is the sex, 'F' or 'M' (``female_fraction``); women have
``breast_size`` ~ U(0.2, 1), men 0; ``large_breast`` = breast_size > 0.6.  Other
factors: body_width U(0.85, 1.15), lung_size U(0.85, 1.15), heart_size U(0.85, 1.2),
rotation U(-10, 10), noise U(5, 25) HU.
"""

from __future__ import annotations

import math
import numbers

import jax
import jax.numpy as jnp
import numpy as np
from scipy.special import ndtri

from jaxlatent.errors import ConfigError
from jaxlatent.phantoms import rendering as R

SLICES_PER_SUBJECT = 8
SLICE_RANGE = {"brain": (0.15, 0.85), "thorax": (0.0, 1.0)}


def _check_count(n, what: str) -> int:
  if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
    raise ConfigError(f"{what}={n!r} must be a positive integer")
  return int(n)


def _check_fraction(p, what: str) -> float:
  if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0.0 <= p <= 1.0:
    raise ConfigError(f"{what}={p!r} must be a number in [0, 1]")
  return float(p)


def subject_ids(n: int) -> np.ndarray:
  """'sub-000', 'sub-001', ... (at least 3 digits)."""
  width = max(3, len(str(n - 1)))
  return np.array([f"sub-{i:0{width}d}" for i in range(n)])


def _subject_draws(key, n: int, width: int):
  """Per-subject uniforms (n, width) and subject keys (raw uint32 key data [n, 2])."""
  key = R.as_key(key)
  u = np.asarray(R.uniform_rows(jax.random.fold_in(key, 0), n)[:, :width], np.float64)
  sub_keys = R.slice_keys(jax.random.fold_in(key, 1), n)
  if jnp.issubdtype(sub_keys.dtype, jax.dtypes.prng_key):
    sub_keys = jax.random.key_data(sub_keys)
  u = np.clip(u, 1e-6, 1 - 1e-6)
  return u, np.asarray(sub_keys, np.uint32)


def _assign(u0: np.ndarray, fraction: float) -> np.ndarray:
  """True for the round(n * fraction) subjects with the smallest ``u0``."""
  n_pos = int(round(len(u0) * fraction))
  flag = np.zeros(len(u0), bool)
  flag[np.argsort(u0, kind="stable")[:n_pos]] = True
  return flag


def brain_population(key, n_subjects: int, ms_fraction: float = 0.5) -> dict[str, np.ndarray]:
  """Draws HC and MS subjects (see module doc).

  Returns a dict of NumPy arrays [n_subjects]: 'subject_id' (str), 'group'
  ('HC'/'MS'), 'age', every brain factor but 'slice_position' (float32), and
  'subject_key' (uint32 [n, 2] raw key data; ``jax.random.wrap_key_data`` makes it
  a typed key) for :func:`jaxlatent.phantoms.render_with_keys`.
  """
  n = _check_count(n_subjects, "n_subjects")
  p = _check_fraction(ms_fraction, "ms_fraction")
  u, sub_keys = _subject_draws(key, n, 8)
  ms = _assign(u[:, 0], p)
  g = ndtri(u[:, 1:4])  # [n, 3] standard normals
  age = np.where(ms, 20 + 45 * u[:, 4], 20 + 55 * u[:, 4])
  da = age - 45.0
  table = R.BRAIN_FACTORS
  clip = lambda name, v: np.clip(v, table[name][0], table[name][1]).astype(np.float32)
  return {
      "subject_id": subject_ids(n),
      "group": np.where(ms, "MS", "HC"),
      "age": age.astype(np.float32),
      "ventricle_size": clip("ventricle_size", np.where(
          ms, 1.25 + 0.2 * g[:, 0], 0.85 + 0.12 * g[:, 0]) + 0.008 * da),
      "atrophy": clip("atrophy", np.where(ms, 0.35 + 0.15 * g[:, 1], 0.08 + 0.06 * g[:, 1])
                      + 0.004 * da),
      "lesion_load": clip("lesion_load", np.where(ms, 0.45 + 0.2 * g[:, 2],
                                                  np.abs(0.05 * g[:, 2]))),
      "rotation": (-8.0 + 16.0 * u[:, 5]).astype(np.float32),
      "noise": (0.01 + 0.03 * u[:, 6]).astype(np.float32),
      "subject_key": sub_keys,
  }


def thorax_population(key, n_subjects: int, female_fraction: float = 0.5
                      ) -> dict[str, np.ndarray]:
  """Draws thorax subjects (see module doc).

  Returns a dict of NumPy arrays [n_subjects]: 'subject_id', 'group' ('F'/'M'),
  'large_breast' (bool), every thorax factor but 'slice_position' (float32) and
  'subject_key' (uint32 [n, 2]).
  """
  n = _check_count(n_subjects, "n_subjects")
  p = _check_fraction(female_fraction, "female_fraction")
  u, sub_keys = _subject_draws(key, n, 8)
  female = _assign(u[:, 0], p)
  breast = np.where(female, 0.2 + 0.8 * u[:, 1], 0.0).astype(np.float32)
  f32 = lambda v: np.asarray(v, np.float32)
  return {
      "subject_id": subject_ids(n),
      "group": np.where(female, "F", "M"),
      "large_breast": breast > 0.6,
      "rotation": f32(-10.0 + 20.0 * u[:, 2]),
      "body_width": f32(0.85 + 0.3 * u[:, 3]),
      "breast_size": breast,
      "lung_size": f32(0.85 + 0.3 * u[:, 4]),
      "heart_size": f32(0.85 + 0.35 * u[:, 5]),
      "noise": f32(5.0 + 20.0 * u[:, 6]),
      "subject_key": sub_keys,
  }


def draw_population(kind: str, key, n_subjects: int, ms_fraction: float = 0.5) -> dict:
  """Brain: :func:`brain_population`; thorax: :func:`thorax_population` (ms_fraction
  is then the female fraction)."""
  if R.check_kind(kind) == "brain":
    return brain_population(key, n_subjects, ms_fraction)
  return thorax_population(key, n_subjects, ms_fraction)


def subject_factor_names(kind: str) -> list[str]:
  """Factors that are fixed per subject (all but slice_position), in table order."""
  return [k for k in R.factor_table(kind) if k != "slice_position"]


def render_dataset(kind: str, n: int, size: int, seed: int, *,
                   slices_per_subject: int = SLICES_PER_SUBJECT, ms_fraction: float = 0.5,
                   slice_range: tuple[float, float] | None = None) -> dict:
  """Renders ``n`` slices of ``ceil(n / slices_per_subject)`` population subjects.

  Each subject gets ``slices_per_subject`` slices at stratified random positions in
  ``slice_range`` (default: brain 0.15..0.85, thorax 0..1).  Rendering runs in
  fixed-size chunks, so n = 30000 at 256 px fits in memory.

  Returns a dict: 'images' float32 [n, size, size] (HU / T1 units), 'masks' bool
  [n, size, size], 'factors' (name -> float32 [n], all factors), 'labels' (brain:
  'group' 'HC'/'MS' and 'age'; thorax: 'group' 'F'/'M' and 'large_breast'),
  'subject_id' str [n], 'slice_position' float32 [n], 'tissue' uint8 [n, size, size]
  (tissue label maps, see THORAX_LABELS / BRAIN_LABELS).
  """
  kind, size = R.check_kind(kind), R.check_size(size)
  n = _check_count(n, "n")
  sps = _check_count(slices_per_subject, "slices_per_subject")
  if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
    raise ConfigError(f"seed={seed!r} must be an integer")
  lo, hi = SLICE_RANGE[kind] if slice_range is None else slice_range
  root = jax.random.PRNGKey(int(seed))
  n_sub = math.ceil(n / sps)
  pop = draw_population(kind, jax.random.fold_in(root, 0), n_sub, ms_fraction)
  subj = np.arange(n) // sps  # [n]
  u = np.asarray(R.uniform_rows(jax.random.fold_in(root, 1), n))[:, 0]
  pos = (lo + (hi - lo) * ((np.arange(n) % sps) + u) / sps).astype(np.float32)
  factors = {k: pop[k][subj] for k in subject_factor_names(kind)}
  factors["slice_position"] = pos
  noise_keys = R.slice_keys(jax.random.fold_in(root, 2), n)
  images, tissue, masks = R.render_with_keys(kind, factors, size, pop["subject_key"][subj],
                                             noise_keys, to_numpy=True)
  extra = ("group", "age") if kind == "brain" else ("group", "large_breast")
  return {
      "images": images,
      "masks": masks,
      "factors": {k: np.asarray(factors[k], np.float32) for k in R.factor_table(kind)},
      "labels": {k: pop[k][subj] for k in extra},
      "subject_id": pop["subject_id"][subj],
      "slice_position": pos,
      "tissue": tissue,
  }
