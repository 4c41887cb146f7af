"""Validation-scale VAE on 64x64 thorax phantoms (docs/VALIDATION.md).

Schön et al.'s VAE recipe (configs/vae_ct.py: their Res_down / Res_up network with
BatchNorm and RReLU, latent 32, log(MSE) + 0.01 KL, Adam 1e-4) at a scale that trains
on one CPU core in about 45 minutes: 64x64 slices, ``ch`` 16 (the reference's 64 costs
16x the compute), batch 64, 4000 steps.  On a GPU, configs/vae_ct.py is the paper scale.

  python train.py --config=configs/validate_vae_ct.py --workdir=runs/validate/vae_ct
"""

from __future__ import annotations

from configs import vae_ct


def get_config():
  c = vae_ct.get_config()
  c.image_size = 64
  c.batch_size = 64
  c.data.num_images = 4608  # 4096 training slices + 512 held out for the FD metric
  c.model.ch = 16
  c.steps = 4000
  c.log_every = 50
  c.ckpt_every = 500
  c.keep_checkpoints = 2
  c.sample_every = 1000
  c.fid_every = 2000
  c.fid_num_samples = 512
  return c
