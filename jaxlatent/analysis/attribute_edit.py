"""Attribute editing scored against the phantom's true factor change.

An *edit* of a held-out subject is a latent path ``latent_t = start + alpha_t * d``
rendered by any :class:`~jaxlatent.generator.Generator`:

  * IFcVAE-GAN / SS-DAAE: ``start = concat(z, y_from)`` with z the encoding of the
    real image, ``d = concat(0, y_to - y_from)``, ``alpha = 0 .. 1``
    (:func:`encoder_edit_path`, :func:`attribute_traversal`);
  * StyleGAN (InterFaceGAN direction in w / w+) or DCGAN (a discovered direction):
    ``start`` = the inverted latent of the real image, ``d`` = the direction,
    alphas = the traversal schedule.

:func:`score_edits` renders the path and correlates the edit's difference map
``x_T - x_0`` (and the eigen-analysis component-2 map of the whole path, Güllmar
et al.) with the true difference map over the foreground.  The true map comes from
the phantom (:func:`phantom_edit_subjects`): the same subject (same subject key)
rendered with the changed factors minus the original, noise-free.  Correlation is
scale-free, so model images in [-1, 1] compare with true maps in physical units,
and every model is scored on the same subjects: one table
(:mod:`jaxlatent.studies.edit_comparison`).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxlatent import phantoms
from jaxlatent.analysis.eigen import eigen_analysis_batched
from jaxlatent.analysis.ground_truth import difference_map_correlation
from jaxlatent.data.intensity import mr_percentile_range, scale_to_unit, window_ct
from jaxlatent.errors import ConfigError
from jaxlatent.generator import Generator
from jaxlatent.models import ifcvae_gan, ssdaae
from jaxlatent.phantoms.population import subject_factor_names
from jaxlatent.phantoms.rendering import slice_keys

# Default factor changes of an edit, per phantom kind: brain HC -> MS moves a healthy
# subject by the difference of the population means (jaxlatent.phantoms.population);
# thorax small -> large breast sets breast_size to 0.9 (large_breast: > 0.6).
# The attribute models an edit can encode with: model.name -> its module.
ENCODERS = {"ifcvae_gan": ifcvae_gan, "ssdaae": ssdaae}
BRAIN_HC_TO_MS = {"ventricle_size": 0.40, "atrophy": 0.27, "lesion_load": 0.45}
THORAX_TO_LARGE_BREAST = {"breast_size": 0.9}


# ----------------------------------------------------------------------------- latent paths


def attribute_latents(z: jax.Array, y: jax.Array) -> jax.Array:
  """``concat(z [B, z_dim], y)`` with ``y`` ``[B, y_dim]``, ``[y_dim]`` or a scalar (y_dim 1)."""
  y = jnp.asarray(y, jnp.float32)
  if y.ndim == 0:
    y = y[None]
  y = jnp.broadcast_to(y, (z.shape[0], y.shape[-1]))
  return jnp.concatenate([z.astype(jnp.float32), y], axis=-1)  # [B, z_dim + y_dim]


def attribute_path(z: jax.Array, y_from: jax.Array, y_to: jax.Array
                   ) -> tuple[jax.Array, jax.Array]:
  """(start ``[B, D]``, direction ``[B, D]``) of the edit y_from -> y_to at fixed z.

  ``start + alpha * direction`` is ``concat(z, (1 - alpha) y_from + alpha y_to)``.
  """
  start = attribute_latents(z, y_from)
  direction = attribute_latents(jnp.zeros_like(z), y_to) - attribute_latents(
      jnp.zeros_like(z), y_from)
  return start, direction


def _path_codes(start: jax.Array, direction: jax.Array, alphas: jax.Array) -> jax.Array:
  """start ``[B, *s]``, direction ``[*s]`` or ``[B, *s]``, alphas ``[T]`` -> ``[B, T, *s]``."""
  direction = jnp.broadcast_to(direction, start.shape)
  a = alphas.reshape((1, -1) + (1,) * (start.ndim - 1))
  return start[:, None] + a * direction[:, None]


def _check_latents(generator: Generator, start: jax.Array, direction: jax.Array) -> None:
  shape = tuple(generator.latent_spec.shape)
  if tuple(start.shape[1:]) != shape:
    raise ConfigError(f"start latents have per-sample shape {tuple(start.shape[1:])}, the "
                      f"generator {generator.name!r} expects {shape}")
  if tuple(direction.shape[-len(shape):]) != shape or direction.ndim not in (
      len(shape), len(shape) + 1):
    raise ConfigError(f"direction has shape {tuple(direction.shape)}, expected {shape} or "
                      f"[B, *{shape}] for the generator {generator.name!r}")


@jax.jit
def render_path(generator: Generator, start: jax.Array, direction: jax.Array,
                alphas: jax.Array) -> jax.Array:
  """Renders ``G(start + alpha_t * direction)`` -> images ``[B, T, H, W, C]``.

  ``direction`` is shared (``[*shape]``) or per start (``[B, *shape]``).
  """
  _check_latents(generator, start, direction)
  codes = _path_codes(start, direction, jnp.asarray(alphas, jnp.float32))  # [B, T, *s]
  b, t = codes.shape[:2]
  images = generator(codes.reshape((b * t,) + codes.shape[2:]))  # [B*T, H, W, C]
  return images.reshape((b, t) + images.shape[1:])


def attribute_traversal(decoder_generator: Generator, z: jax.Array, y_from: jax.Array,
                        y_to: jax.Array, steps: int) -> jax.Array:
  """Decodes ``concat(z, y)`` with y going linearly from ``y_from`` to ``y_to``.

  Args:
    decoder_generator: an attribute model's decoder (latent = concat(z, y)).
    z: ``[B, z_dim]`` codes (e.g. encoder posterior means of real images).
    y_from, y_to: ``[B, y_dim]``, ``[y_dim]`` or scalars (binary attribute).
    steps: T, the number of images along the path (alpha = linspace(0, 1, T)).

  Returns:
    images ``[B, T, H, W, C]``; the schedule for the eigen-analysis is
    ``jnp.linspace(0, 1, steps)``.
  """
  if int(steps) < 2:
    raise ConfigError(f"steps={steps}: an attribute traversal needs >= 2 steps")
  start, direction = attribute_path(z, y_from, y_to)
  return render_path(decoder_generator, start, direction,
                     jnp.linspace(0.0, 1.0, int(steps), dtype=jnp.float32))


def encoder_edit_path(model: str, params: Any, config: Any, images: jax.Array,
                      y_from: jax.Array, y_to: jax.Array
                      ) -> tuple[Generator, jax.Array, jax.Array]:
  """(decoder Generator, start ``[B, D]``, direction ``[B, D]``) of an encoder-based edit.

  ``model``: 'ifcvae_gan' (z = posterior mean) or 'ssdaae' (z = encoder code of the
  clean image; y one-hot, so pass one-hot ``y_from``/``y_to``).
  """
  if model not in ENCODERS:
    raise ConfigError(f"model={model!r}: expected 'ifcvae_gan' or 'ssdaae'")
  mod = ENCODERS[model]
  z = mod.encode(params, images, config)[0]
  start, direction = attribute_path(z, y_from, y_to)
  return mod.make_decoder_generator(params, config), start, direction


# ----------------------------------------------------------------------------- scores


def difference_scores(edit_difference: jax.Array, true_difference: jax.Array,
                      masks: jax.Array) -> jax.Array:
  """Per-subject Pearson correlation over the foreground, ``[B]``.

  Args:
    edit_difference: ``[B, H, W]`` or ``[B, H, W, 1]`` (e.g. edited - original).
    true_difference: same grid, the phantom's true change.
    masks: ``[B, H, W]`` foreground.
  """
  return jax.vmap(difference_map_correlation)(edit_difference, true_difference, masks)


@dataclasses.dataclass(frozen=True)
class EditScores:
  """Scores of one model's edits on a set of subjects (arrays are NumPy ``[B]``).

  Attributes:
    edit_corr: correlation of ``x_T - x_0`` with the true difference map.
    component2_corr: correlation of the eigen-analysis component-2 map with it
      (NaN when the path has fewer than 3 steps).
    edit_magnitude: mean |x_T - x_0| over the foreground (model units).
    images: the rendered paths ``[B, T, H, W, C]``.
  """

  edit_corr: np.ndarray
  component2_corr: np.ndarray
  edit_magnitude: np.ndarray
  images: np.ndarray

  def summary(self) -> dict[str, float]:
    """Mean and std over subjects of each score."""
    out = {}
    for k in ("edit_corr", "component2_corr", "edit_magnitude"):
      v = getattr(self, k)
      out[f"{k}_mean"], out[f"{k}_std"] = float(np.mean(v)), float(np.std(v))
    return out


@functools.partial(jax.jit, static_argnames=("eigen",))
def _scores(images, true_difference, masks, alphas, eigen: bool):
  diff = (images[:, -1] - images[:, 0])[..., 0]  # [B, H, W]
  true = true_difference.reshape(diff.shape)
  m = masks.astype(jnp.float32)
  corr = difference_scores(diff, true, m)
  mag = jnp.sum(jnp.abs(diff) * m, axis=(1, 2)) / jnp.maximum(m.sum(axis=(1, 2)), 1.0)
  if eigen:
    res = eigen_analysis_batched(images, m, alphas, n_components=2)
    comp2 = difference_scores(res.component_maps[:, 1], true, m)
  else:
    comp2 = jnp.full(corr.shape, jnp.nan)
  return corr, comp2, mag


def score_edits(generator: Generator, start_latents: jax.Array, direction: jax.Array,
                alphas: jax.Array, true_difference: jax.Array, masks: jax.Array
                ) -> EditScores:
  """Scores edits ``G(start + alpha_t d)`` against the true difference maps.

  The same function serves every model: an attribute model's decoder with an
  encoder path (:func:`encoder_edit_path`), StyleGAN with an InterFaceGAN direction
  in w / w+, a DCGAN with a discovered direction.

  Args:
    generator: any Generator.
    start_latents: ``[B, *shape]`` latents of the unedited subjects.
    direction: ``[*shape]`` (shared) or ``[B, *shape]`` (per subject).
    alphas: ``[T]`` the schedule, ``alphas[0]`` = unedited (e.g. 0), ``alphas[-1]``
      = the edit (e.g. 1 for y 0 -> 1).
    true_difference: ``[B, H, W]`` true change maps (any units).
    masks: ``[B, H, W]`` foreground masks.

  Returns:
    :class:`EditScores`.
  """
  alphas = jnp.asarray(alphas, jnp.float32)
  if alphas.ndim != 1 or alphas.shape[0] < 2:
    raise ConfigError(f"alphas must be a 1D schedule of >= 2 steps, got shape {alphas.shape}")
  b = start_latents.shape[0]
  grid = tuple(generator.image_shape[:2])
  for name, a in (("true_difference", true_difference), ("masks", masks)):
    if tuple(a.shape[:3]) != (b,) + grid:
      raise ConfigError(f"{name} has shape {tuple(a.shape)}, expected ({b}, {grid[0]}, "
                        f"{grid[1]}) to match the start latents and the generator's images")
  images = render_path(generator, start_latents, direction, alphas)  # [B, T, H, W, C]
  corr, comp2, mag = _scores(images, jnp.asarray(true_difference, jnp.float32),
                             jnp.asarray(masks), alphas, alphas.shape[0] >= 3)
  return EditScores(np.asarray(corr), np.asarray(comp2), np.asarray(mag), np.asarray(images))


def score_encoder_edits(model: str, params: Any, config: Any, subjects: "EditSubjects",
                        y_from: Any = 0.0, y_to: Any = 1.0, steps: int = 5) -> EditScores:
  """Scores an attribute model's edits (encode, y_from -> y_to in ``steps``, decode).

  ``model``: 'ifcvae_gan' (binary y: scalars 0 -> 1 = HC -> MS with the brain
  'group' label ids) or 'ssdaae' (one-hot y, e.g. ``[1, 0] -> [0, 1]``).
  """
  gen, start, direction = encoder_edit_path(model, params, config,
                                            jnp.asarray(subjects.images), y_from, y_to)
  return score_edits(gen, start, direction, jnp.linspace(0.0, 1.0, int(steps)),
                     subjects.true_difference, subjects.masks)


# ----------------------------------------------------------------------------- subjects


@dataclasses.dataclass(frozen=True)
class EditSubjects:
  """Held-out phantom subjects with their true edit.

  Attributes:
    images: float32 ``[B, S, S, 1]`` in [-1, 1], normalised like the data pipeline
      (thorax: the CT window; brain: the slice's foreground MR percentiles).
    true_difference: float32 ``[B, S, S]`` noise-free ``render(changed) -
      render(original)`` with the same subject key (physical units).
    masks: bool ``[B, S, S]`` foreground of the original or the edited subject (a
      thorax gaining breast tissue grows beyond its original body outline).
    factors: name -> ``[B]`` the original factors; ``changed``: the edited ones.
    subject_id: str ``[B]``.
  """

  images: np.ndarray
  true_difference: np.ndarray
  masks: np.ndarray
  factors: dict[str, np.ndarray]
  changed: dict[str, np.ndarray]
  subject_id: np.ndarray


def phantom_edit_subjects(
    kind: str = "brain",
    n: int = 16,
    size: int = 64,
    seed: int = 1234,
    *,
    change: Mapping[str, float] | None = None,
    absolute: Sequence[str] = ("breast_size",),
    slice_position: float | None = None,
    ct_window: tuple[float, float] = (-1000.0, 2000.0),
    mr_percentiles: tuple[float, float] = (0.5, 99.5),
) -> EditSubjects:
  """Draws held-out subjects and renders each before and after the attribute change.

  Brain: healthy controls of a population drawn with ``seed`` (use a seed other than
  the training data's), edited HC -> MS by adding :data:`BRAIN_HC_TO_MS` (clipped to
  the factor ranges).  Thorax: male subjects (breast_size 0) edited to
  :data:`THORAX_TO_LARGE_BREAST` (names in ``absolute`` are set, others added).

  Args:
    kind: 'brain' or 'thorax'.
    n: number of subjects (one slice each).
    size: image size S.
    seed: population seed.
    change: factor name -> shift (or value, for names in ``absolute``).
    absolute: factor names whose ``change`` value replaces the factor.
    slice_position: one position for every subject; None = mid-range per kind
      (brain 0.5, thorax 0.5).
  """

  pop = _edit_population(kind, n, seed, change, absolute, slice_position)
  factors, changed, keys = pop["factors"], pop["changed"], pop["keys"]
  images, _, masks = phantoms.render_with_keys(kind, factors, size, *keys, to_numpy=True)
  clean = lambda f: {**f, "noise": np.zeros((n,), np.float32)}
  before = phantoms.render_with_keys(kind, clean(factors), size, *keys, to_numpy=True)[0]
  after, _, masks_after = phantoms.render_with_keys(kind, clean(changed), size, *keys,
                                                    to_numpy=True)
  return EditSubjects(
      images=_to_unit(kind, images, masks, ct_window, mr_percentiles)[..., None],
      true_difference=(after - before).astype(np.float32),
      masks=np.asarray(masks, bool) | np.asarray(masks_after, bool), factors=factors,
      changed=changed,
      subject_id=pop["subject_id"])


def phantom_edit_path(
    kind: str = "brain",
    n: int = 16,
    size: int = 64,
    seed: int = 1234,
    steps: int = 15,
    *,
    change: Mapping[str, float] | None = None,
    absolute: Sequence[str] = ("breast_size",),
    slice_position: float | None = None,
    ct_window: tuple[float, float] = (-1000.0, 2000.0),
    mr_percentiles: tuple[float, float] = (0.5, 99.5),
    fresh_noise: bool = False,
) -> np.ndarray:
  """The exact edit of :func:`phantom_edit_subjects`' subjects as a ``steps``-frame path.

  Frame t renders each subject with its factors moved the fraction ``t / (steps - 1)``
  of the way to the changed ones (same subject and noise keys, the phantom's noise
  kept), normalised per frame like the data pipeline: the path a perfect attribute
  direction would draw, e.g. to measure what the eigen-analysis' component-2 map can
  reach on a known edit.  ``fresh_noise``: each frame draws its own noise (keys folded
  with the frame index), a path that also carries a change unrelated to the edit.

  Returns:
    float32 ``[n, steps, size, size, 1]`` in [-1, 1]; frame 0 equals
    ``phantom_edit_subjects(...).images`` for the same arguments.
  """
  if int(steps) < 2:
    raise ConfigError(f"steps={steps}: a path needs at least 2 frames")
  pop = _edit_population(kind, n, seed, change, absolute, slice_position)
  frames = []
  sub_keys, noise_keys = pop["keys"]
  for i, t in enumerate(np.linspace(0.0, 1.0, int(steps), dtype=np.float32)):
    mixed = {k: v + t * (pop["changed"][k] - v) for k, v in pop["factors"].items()}
    keys = (sub_keys, jax.vmap(lambda k, i=i: jax.random.fold_in(k, i))(noise_keys)
            if fresh_noise and i > 0 else noise_keys)
    images, _, masks = phantoms.render_with_keys(kind, mixed, size, *keys, to_numpy=True)
    frames.append(_to_unit(kind, images, masks, ct_window, mr_percentiles))
  return np.stack(frames, axis=1)[..., None]


def _edit_population(kind, n, seed, change, absolute, slice_position) -> dict:
  """The held-out subjects of an edit: factors, changed factors, render keys, ids."""
  if kind not in ("brain", "thorax"):
    raise ConfigError(f"kind={kind!r}: expected 'brain' or 'thorax'")
  change = dict(BRAIN_HC_TO_MS if kind == "brain" else THORAX_TO_LARGE_BREAST) \
      if change is None else dict(change)
  table = phantoms.factor_table(kind)
  unknown = sorted(set(change) - set(table))
  if unknown:
    raise ConfigError(f"change names unknown {kind} factor(s) {unknown}; known: {sorted(table)}")
  root = jax.random.PRNGKey(int(seed))
  pop = phantoms.draw_population(kind, jax.random.fold_in(root, 0), int(n), 0.0)  # HC / male
  factors = {k: np.asarray(pop[k], np.float32) for k in subject_factor_names(kind)}
  factors["slice_position"] = np.full((n,), 0.5 if slice_position is None else slice_position,
                                      np.float32)
  changed = dict(factors)
  for name, v in change.items():
    new = np.full((n,), v, np.float32) if name in absolute else factors[name] + np.float32(v)
    changed[name] = np.clip(new, table[name][0], table[name][1]).astype(np.float32)
  return {"factors": factors, "changed": changed,
          "keys": (pop["subject_key"], slice_keys(jax.random.fold_in(root, 2), n)),
          "subject_id": np.asarray(pop["subject_id"])}


def _to_unit(kind, images, masks, ct_window, mr_percentiles) -> np.ndarray:
  """Physical units -> [-1, 1] as the data pipeline does (CT window; MR percentiles)."""
  if kind == "thorax":
    return window_ct(images, ct_window).astype(np.float32)
  return np.stack([scale_to_unit(im, *mr_percentile_range(im, mr_percentiles, mk))
                   for im, mk in zip(images, masks)]).astype(np.float32)
