"""Validation-scale VAE on 64x64 thorax phantoms (docs/VALIDATION.md).

Schön et al.'s VAE recipe (configs/vae_ct.py: their Res_down / Res_up network with
BatchNorm and RReLU, latent 32, log(MSE) + 0.01 KL, Adam 1e-4) at a scale that trains
on one CPU core in about 45 minutes: 64x64 slices, ``ch`` 16 (the reference's 64 costs
16x the compute), batch 64, 4000 steps.  On a GPU, configs/vae_ct.py is the paper scale.

  python train.py --config=configs/validate_vae_ct.py --workdir=runs/validate/vae_ct
"""

from __future__ import annotations

from configs import common
from configs import vae_ct


def get_config():
  c = common.validation_schedule(vae_ct.get_config())
  c.batch_size = 64
  c.model.ch = 16
  c.steps = 4000
  return c
