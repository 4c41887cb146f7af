"""VAE inversion: the encoder mean, optionally refined by gradient descent.

A VAE has an amortized inverse: ``z = mu(x)``.  The encoder is trained to be
good on average, so a few steps of the GAN inverter's optimizer (starting from the
mean, same loss and prior) usually lower the reconstruction error of a given image.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from jaxlatent.errors import ConfigError
from jaxlatent.generator import Generator
from jaxlatent.inversion.gan import (InversionResult, OptimizerName, _check_targets,
                                     invert_z)
from jaxlatent.inversion.losses import pixel_mse

EncodeFn = Callable[[jax.Array], tuple[jax.Array, jax.Array]]


def invert_vae(
    generator: Generator,
    encode_fn: EncodeFn,
    targets: jax.Array,
    *,
    refine_steps: int = 0,
    key: jax.Array | None = None,
    optimizer: OptimizerName = "adam",
    learning_rate: float = 0.01,
    prior_weight: float | None = None,
    mask: jax.Array | None = None,
    ssim_weight: float = 0.0,
) -> InversionResult:
  """Inverts ``targets`` with a VAE's encoder (and optional refinement).

  Args:
    generator: the decoder as a Generator (``jaxlatent.models.vae.make_decoder_generator``).
    encode_fn: ``images [B, H, W, C] -> (mean [B, D], logvar [B, D])``, e.g.
      ``functools.partial(jaxlatent.models.vae.encode, params, config=config)``.
    targets: [B, H, W, C] in [-1, 1].
    refine_steps: 0 keeps the encoder mean; > 0 refines it with
      :func:`jaxlatent.inversion.invert_z` (one restart, from the mean).
    key: needed only when refining (unused otherwise: the start is the mean).
    optimizer, learning_rate, prior_weight, mask, ssim_weight: as :func:`invert_z`.

  Returns:
    An :class:`InversionResult` (R = 1; ``loss_trace`` is [1, refine_steps], or
    [1, 0] without refinement).
  """
  _check_targets(generator, targets)
  targets = jnp.asarray(targets, jnp.float32)
  mean, _ = encode_fn(targets)
  mean = jnp.asarray(mean, jnp.float32).reshape((targets.shape[0],) +
                                                tuple(generator.latent_spec.shape))
  if refine_steps < 0:
    raise ConfigError(f"refine_steps={refine_steps} must be >= 0")
  if refine_steps:
    key = jax.random.PRNGKey(0) if key is None else key
    return invert_z(generator, targets, key, steps=refine_steps, restarts=1,
                    optimizer=optimizer, learning_rate=learning_rate,
                    prior_weight=prior_weight, mask=mask, ssim_weight=ssim_weight,
                    init_latents=mean)
  rec = generator(mean)
  err = pixel_mse(rec, targets, mask)
  return InversionResult(latents=mean, reconstructions=rec, errors=err,
                         error_mean=err.mean(), error_std=err.std(),
                         restart_errors=err[None], loss_trace=jnp.zeros((1, 0), jnp.float32))
