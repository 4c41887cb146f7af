"""Validation-scale IFcVAE-GAN on 64x64 brain phantoms, attribute HC/MS (docs/VALIDATION.md).

configs/ifcvae_brain.py (Creswell et al.'s conditional VAE-GAN with an adversary that
keeps the group out of z; Adam 2e-4, beta1 0.5) on the study's schedule, with 128
channels instead of 256 (the full width runs ~18 images/s on one core, ~2 h for 30
epochs; half the width costs about a quarter of the convolutions), 30 epochs of the
4096 training slices and recon_weight 20 (below).  The edit comparison
(configs/validate_compare_edits.py) reads it.

  python train.py --config=configs/validate_ifcvae_brain.py --workdir=runs/validate/ifcvae_brain
"""

from __future__ import annotations

from configs import common
from configs import ifcvae_brain


def width(c, channels: int = 128):
  """The validation width of an IFcVAE-GAN config (encoder, decoder, discriminator)."""
  c.model.channels = channels
  c.model.max_channels = channels
  c.model.disc_channels = channels
  return c


def get_config():
  c = width(common.validation_schedule(ifcvae_brain.get_config()))
  c.steps = 30 * (4096 // c.batch_size)
  # At recon_weight 1 the posterior collapses here as on the thorax
  # (configs/validate_ifcvae_thorax.py): after 1920 steps the posterior-mean std is 0.36
  # against a posterior sigma of 0.88 and the held-out reconstruction MSE 0.045 is
  # barely below the mean image's 0.052, so the decoder hardly reads z or y.
  c.model.recon_weight = 20.0
  return c
