"""Validation-scale DCGAN on 64x64 thorax phantoms (docs/VALIDATION.md).

Schön et al.'s DCGAN recipe (configs/dcgan_ct.py: their transposed-conv architecture,
BCE with real labels in [0.9, 1), Adam 2e-4 / beta1 0.5, latent 32) at a scale that
learns the phantom's anatomy and trains on one CPU core in about 45 minutes: 64x64
slices, 256 channels at 4x4 (halved per doubling), batch 64, 8000 steps (~110 epochs
of 4096 training slices).  On a GPU, configs/dcgan_ct.py is the paper scale.

  python train.py --config=configs/validate_dcgan_ct.py --workdir=runs/validate/dcgan_ct
"""

from __future__ import annotations

from configs import common
from configs import dcgan_ct


def get_config():
  c = common.validation_schedule(dcgan_ct.get_config())
  c.batch_size = 64
  c.model.gen_channels = 256
  c.model.disc_channels = 256
  c.steps = 8000
  return c
