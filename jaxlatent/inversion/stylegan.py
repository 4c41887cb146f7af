"""StyleGAN projection into W and W+ (after the NVlabs stylegan2-ada projector).

What is reproduced (``projector.py`` of stylegan2-ada-pytorch):
  * w starts at ``w_avg``, the mean of many mapped z (10k by default), and
    ``w_std = sqrt(sum |w_i - w_avg|^2 / n)`` sets the scale of the exploration noise;
  * Adam (betas 0.9, 0.999), lr 0.1 with a linear warm-up over the first 5% of the
    steps and a cosine ramp-down over the last 25% (:func:`projector_schedule`);
  * Gaussian noise ``w_std * 0.05 * max(0, 1 - t / 0.75)^2`` is added to w at
    every step t (fraction of the run), so early steps explore;
  * the generator's per-pixel noise inputs are optimized too, with the multi-scale
    autocorrelation regularizer (weight 1e5) and re-standardized after every step.

What differs: the distance is ``mse_weight * MSE + ssim_weight * (1 - MS-SSIM)``
(:mod:`jaxlatent.inversion.losses`) instead of LPIPS, because jaxlatent downloads
no perceptual (VGG) weights; an optional foreground mask restricts it; every image
of a batch gets its own w and its own noise buffers (the batch loss is a sum of
per-image losses, so the images do not interact).

W vs W+: ``space="w"`` optimizes one w per image, broadcast to every layer (the
paper's projector); ``space="w+"`` one w per layer.  Both work on any Generator
whose latent is ``[w_dim]`` (W only) or ``[num_ws, w_dim]``; generators without
noise inputs are projected without noise optimisation.  Noise buffers enter through
:class:`NoiseInputs`, a small hook any model can provide.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Literal, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import struct

from jaxlatent.errors import ConfigError
from jaxlatent.generator import Generator
from jaxlatent.models import model_module
from jaxlatent.inversion.gan import _check_targets
from jaxlatent.inversion.losses import (multiscale_ssim_loss, noise_regularization,
                                        normalize_noise, pixel_mse)

ProjectSpace = Literal["w", "w+"]


class NoiseInputs(NamedTuple):
  """The noise-buffer pathway of a generator (stylegan2's per-layer noise).

  Attributes:
    apply_fn: ``(params, latents [B, *shape], noise) -> images [B, H, W, C]``, the
      generator with explicit noise buffers (``noise``: a pytree, see ``init_fn``).
    init_fn: ``(key, batch) -> noise``, a pytree of standard-normal buffers, each
      leaf ``[B, h, w]`` or ``[B, h, w, 1]`` (one per noise input).
  """

  apply_fn: Callable[[Any, jax.Array, Any], jax.Array]
  init_fn: Callable[[jax.Array, int], Any]


@dataclasses.dataclass(frozen=True)
class _StyleGAN2NoiseApply:
  """Hashable ``(variables, latents, noise) -> images`` for jaxlatent's StyleGAN2."""

  module: Any

  def __call__(self, variables, latents, noise):
    if latents.ndim == 2:  # w [B, w_dim] -> [B, num_ws, w_dim]
      latents = jnp.broadcast_to(latents[:, None, :], (latents.shape[0], self.module.num_ws,
                                                       latents.shape[-1]))
    return self.module.apply(variables, latents, "const", noise, method="synthesize")


@dataclasses.dataclass(frozen=True)
class _NormalBuffers:
  """Hashable ``(key, batch) -> {name: N(0, 1) [batch, *shape[1:]]}``."""

  shapes: tuple[tuple[str, tuple[int, ...]], ...]

  def __call__(self, key, batch):
    return {name: jax.random.normal(jax.random.fold_in(key, i), (batch,) + tuple(shape[1:]),
                                    jnp.float32)
            for i, (name, shape) in enumerate(self.shapes)}


def stylegan2_noise_inputs(config) -> NoiseInputs:
  """The noise-buffer hook of ``jaxlatent.models.stylegan2`` for ``config``.

  Buffers ``'b{res}.conv{0,1}' -> [B, res, res, 1]`` replace the generator's stored
  const noise during projection; use it with a Generator from
  ``stylegan2.make_generator(params, config, space='w' | 'w+')``.
  """
  model = model_module(config.model.name)
  module = model.build_generator(config)
  shapes = tuple(sorted(model.noise_buffer_shapes(config).items()))
  return NoiseInputs(apply_fn=_StyleGAN2NoiseApply(module), init_fn=_NormalBuffers(shapes))


class ProjectionResult(struct.PyTreeNode):
  """Projected codes of B images.

  Attributes:
    latents: [B, *latent_shape] codes for ``generator`` (w broadcast to w+ if needed).
    w: [B, w_dim] (space "w") or [B, num_ws, w_dim] (space "w+"), as optimized.
    noise: the optimized noise buffers (pytree) or None.
    reconstructions: [B, H, W, C] the generator's output for ``latents`` (and noise).
    errors: [B] per-image pixel MSE (over the foreground when masked).
    error_mean, error_std: [].
    loss_trace: [steps] mean distance (without the noise regularizer) per step.
  """

  latents: jax.Array
  w: jax.Array
  noise: Any
  reconstructions: jax.Array
  errors: jax.Array
  error_mean: jax.Array
  error_std: jax.Array
  loss_trace: jax.Array


def projector_schedule(peak: float, steps: int, rampup: float = 0.05,
                       rampdown: float = 0.25) -> optax.Schedule:
  """stylegan2-ada's lr: linear warm-up over ``rampup`` and cosine ramp-down over
  the last ``rampdown`` fraction of ``steps``, an optax schedule ``count -> lr``."""

  def schedule(count):
    t = count / steps
    ramp = jnp.minimum(1.0, (1.0 - t) / rampdown)
    ramp = 0.5 - 0.5 * jnp.cos(ramp * jnp.pi)
    ramp = ramp * jnp.minimum(1.0, t / rampup)
    return peak * ramp

  return schedule


def _layout(generator: Generator, space: str):
  """(per-image optimized shape, to_latent: opt [B, ...] -> generator latents)."""
  shape = tuple(generator.latent_spec.shape)
  if space not in ("w", "w+"):
    raise ConfigError(f"space={space!r} is unknown; choose 'w' or 'w+'")
  if len(shape) == 1:
    if space == "w+":
      raise ConfigError(f"the generator {generator.name!r} takes one w per image (latent "
                        f"shape {shape}); W+ projection needs a [num_ws, w_dim] latent")
    return shape, lambda w: w
  if len(shape) == 2:
    if space == "w+":
      return shape, lambda w: w
    return shape[1:], lambda w: jnp.broadcast_to(w[:, None, :], (w.shape[0],) + shape)
  raise ConfigError(f"latent shape {shape} of {generator.name!r} is neither [w_dim] "
                    "nor [num_ws, w_dim]")


@functools.partial(jax.jit, static_argnums=2)
def _sample_jit(generator: Generator, key: jax.Array, n: int) -> jax.Array:
  return generator.sample_latents(key, n)


def w_statistics(generator: Generator, key: jax.Array, n: int = 10_000,
                 space: ProjectSpace = "w", chunk: int = 2_000) -> tuple[jax.Array, jax.Array]:
  """``(w_avg, w_std)`` from ``n`` typical codes (``generator.sample_latents``).

  For space "w" on a [num_ws, w_dim] generator the codes are averaged over layers
  (mapped z is the same on every layer).  ``w_std`` is the root of the summed
  per-w variance, as in the stylegan2-ada projector (per layer for "w+").
  """
  opt_shape, _ = _layout(generator, space)
  sums = []
  for i, start in enumerate(range(0, n, chunk)):
    m = min(chunk, n - start)
    s = _sample_jit(generator, jax.random.fold_in(key, i), m)
    if len(opt_shape) == 1 and s.ndim == 3:
      s = s.mean(axis=1)  # [m, w_dim]
    sums.append(s)
  samples = jnp.concatenate(sums, 0)  # [n, *opt_shape]
  w_avg = samples.mean(0)
  var = jnp.sum((samples - w_avg) ** 2) / n
  if len(opt_shape) == 2:
    var = var / opt_shape[0]
  return w_avg, jnp.sqrt(var)


@functools.partial(jax.jit, static_argnames=(
    "steps", "space", "noise_inputs", "ssim_weight", "num_scales", "initial_noise_factor",
    "noise_ramp_length", "lr_rampup_length", "lr_rampdown_length"))
def _project_core(generator, targets, mask, key, w_avg, w_std, noise0, learning_rate,
                  mse_weight, noise_weight, *, steps, space, noise_inputs, ssim_weight,
                  num_scales, initial_noise_factor, noise_ramp_length, lr_rampup_length,
                  lr_rampdown_length):
  _, to_latent = _layout(generator, space)
  b = targets.shape[0]
  opt = optax.adam(projector_schedule(learning_rate, steps, lr_rampup_length,
                                      lr_rampdown_length), b1=0.9, b2=0.999)

  def render(w, noise):
    lat = to_latent(w)
    if noise_inputs is None:
      return generator(lat)
    return noise_inputs.apply_fn(generator.params, lat, noise)

  def distance(images):
    d = mse_weight * pixel_mse(images, targets, mask)
    if ssim_weight:
      d = d + ssim_weight * multiscale_ssim_loss(images, targets, mask, num_scales=num_scales)
    return d  # [B]

  def loss_fn(var, step_key, w_noise_scale):
    w_in = var["w"] + w_noise_scale * jax.random.normal(step_key, var["w"].shape)
    dist = distance(render(w_in, var.get("noise")))
    total = dist
    if noise_inputs is not None:
      total = total + noise_weight * noise_regularization(var["noise"])
    return total.sum(), dist

  def step(carry, i):
    var, state = carry
    t = i / steps
    w_noise_scale = w_std * initial_noise_factor * jnp.maximum(
        0.0, 1.0 - t / noise_ramp_length) ** 2
    grads, dist = jax.grad(loss_fn, has_aux=True)(var, jax.random.fold_in(key, i),
                                                   w_noise_scale)
    updates, state = opt.update(grads, state, var)
    var = optax.apply_updates(var, updates)
    if noise_inputs is not None:
      var = dict(var, noise=normalize_noise(var["noise"]))
    return (var, state), dist.mean()

  w0 = jnp.broadcast_to(w_avg, (b,) + w_avg.shape).astype(jnp.float32)
  var = {"w": w0}
  if noise_inputs is not None:
    var["noise"] = noise0
  (var, _), trace = jax.lax.scan(step, (var, opt.init(var)), jnp.arange(steps))
  images = render(var["w"], var.get("noise"))
  errors = pixel_mse(images, targets, mask)
  return ProjectionResult(latents=to_latent(var["w"]), w=var["w"], noise=var.get("noise"),
                          reconstructions=images, errors=errors, error_mean=errors.mean(),
                          error_std=errors.std(), loss_trace=trace)


def project(
    generator: Generator,
    targets: jax.Array,
    key: jax.Array,
    *,
    space: ProjectSpace = "w",
    steps: int = 1000,
    learning_rate: float = 0.1,
    w_avg: jax.Array | None = None,
    w_std: float | None = None,
    w_avg_samples: int = 10_000,
    initial_noise_factor: float = 0.05,
    noise_ramp_length: float = 0.75,
    lr_rampup_length: float = 0.05,
    lr_rampdown_length: float = 0.25,
    mse_weight: float = 1.0,
    ssim_weight: float = 0.1,
    num_scales: int = 3,
    noise_weight: float = 1e5,
    mask: jax.Array | None = None,
    noise_inputs: NoiseInputs | None = None,
) -> ProjectionResult:
  """Projects ``targets`` [B, H, W, C] into W or W+ of a style generator.

  Args:
    generator: latent ``[w_dim]`` (W) or ``[num_ws, w_dim]`` (W and W+); its
      ``sample_latents`` must draw typical codes (mapped z) unless ``w_avg`` and
      ``w_std`` are given.
    targets: [B, H, W, C] in [-1, 1].
    key: randomness (w statistics, exploration noise, initial noise buffers).
    space: "w" (one w per image, broadcast over layers) or "w+" (one per layer).
    steps: optimizer steps (1000 in stylegan2-ada), one jitted ``lax.scan``.
    learning_rate: peak Adam lr (0.1).
    w_avg, w_std: the start and the exploration scale; default from
      ``w_avg_samples`` codes (:func:`w_statistics`).  ``w_avg`` may be ``[w_dim]``
      for either space (broadcast over layers for W+).
    initial_noise_factor, noise_ramp_length: exploration noise on w (0.05, 0.75).
    lr_rampup_length, lr_rampdown_length: fractions of ``steps`` (0.05, 0.25).
    mse_weight, ssim_weight, num_scales: the distance
      ``mse_weight * MSE + ssim_weight * (1 - MS-SSIM over num_scales)``
      (no LPIPS: no downloaded perceptual weights).  The structural term is a light
      complement (0.1): with weight ~1 it dominates the MSE of [-1, 1] images and
      its landscape trapped some toy projections in poor optima.
    noise_weight: weight of the noise regularizer (1e5).
    mask: optional foreground [B, H, W] or [H, W]: the loss and errors ignore the
      background.
    noise_inputs: the generator's noise-buffer hook; None projects w only.

  Returns:
    A :class:`ProjectionResult`.
  """
  _check_targets(generator, targets)
  opt_shape, _ = _layout(generator, space)
  if steps < 1:
    raise ConfigError(f"steps={steps} must be >= 1")
  k_stats, k_opt, k_noise = jax.random.split(key, 3)
  if w_avg is None or w_std is None:
    avg, std = w_statistics(generator, k_stats, w_avg_samples, space)
    w_avg = avg if w_avg is None else w_avg
    w_std = std if w_std is None else w_std
  w_avg = jnp.asarray(w_avg, jnp.float32)
  if w_avg.ndim == 1 and len(opt_shape) == 2:
    w_avg = jnp.broadcast_to(w_avg, opt_shape)
  if tuple(w_avg.shape) != tuple(opt_shape):
    raise ConfigError(f"w_avg has shape {tuple(w_avg.shape)}, expected {tuple(opt_shape)}")
  b = targets.shape[0]
  noise0 = None if noise_inputs is None else normalize_noise(noise_inputs.init_fn(k_noise, b))
  return _project_core(
      generator, jnp.asarray(targets, jnp.float32), None if mask is None else jnp.asarray(mask),
      k_opt, w_avg, jnp.float32(w_std), noise0, jnp.float32(learning_rate),
      jnp.float32(mse_weight), jnp.float32(noise_weight), steps=int(steps), space=space,
      noise_inputs=noise_inputs, ssim_weight=float(ssim_weight), num_scales=int(num_scales),
      initial_noise_factor=float(initial_noise_factor),
      noise_ramp_length=float(noise_ramp_length), lr_rampup_length=float(lr_rampup_length),
      lr_rampdown_length=float(lr_rampdown_length))
