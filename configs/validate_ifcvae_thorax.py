"""Validation-scale IFcVAE-GAN on 64x64 thorax phantoms, attribute large breast (docs/VALIDATION.md).

configs/ifcvae_thorax.py at the width and schedule of configs/validate_ifcvae_brain.py,
with recon_weight 20 (below).

  python train.py --config=configs/validate_ifcvae_thorax.py --workdir=runs/validate/ifcvae_thorax
"""

from __future__ import annotations

from configs import common
from configs import ifcvae_thorax
from configs import validate_ifcvae_brain


def get_config():
  c = validate_ifcvae_brain.width(common.validation_schedule(ifcvae_thorax.get_config()))
  c.steps = 30 * (4096 // c.batch_size)
  # The thorax phantom in the CT window spans [-1, 0.18] (body -0.33, lungs and air -1):
  # at recon_weight 1 the pixel-mean MSE is too small a signal against the other terms,
  # the posterior collapses (posterior-mean std 0.10 against sigma 1.0 after 1920
  # steps) and every reconstruction is one grey body (MSE 0.047, above the mean
  # image's 0.016).  20 opens the posterior within 480 steps (docs/VALIDATION.md, claim 4).
  c.model.recon_weight = 20.0
  return c
