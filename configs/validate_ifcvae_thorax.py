"""Validation-scale IFcVAE-GAN on 64x64 thorax phantoms, attribute large breast (docs/VALIDATION.md).

configs/ifcvae_thorax.py at the width and schedule of configs/validate_ifcvae_brain.py.

  python train.py --config=configs/validate_ifcvae_thorax.py --workdir=runs/validate/ifcvae_thorax
"""

from __future__ import annotations

from configs import common
from configs import ifcvae_thorax
from configs import validate_ifcvae_brain


def get_config():
  c = validate_ifcvae_brain.width(common.validation_schedule(ifcvae_thorax.get_config()))
  c.steps = 30 * (4096 // c.batch_size)
  return c
