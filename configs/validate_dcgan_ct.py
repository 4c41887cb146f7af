"""Validation-scale DCGAN on 64x64 thorax phantoms (docs/VALIDATION.md).

Schön et al.'s DCGAN recipe (configs/dcgan_ct.py: their transposed-conv architecture,
BCE with real labels in [0.9, 1), Adam 2e-4 / beta1 0.5, latent 32) at a scale that
learns the phantom's anatomy and trains on one CPU core in about 45 minutes: 64x64
slices, 256 channels at 4x4 (halved per doubling), batch 64, 8000 steps (~110 epochs
of 4096 training slices).  On a GPU, configs/dcgan_ct.py is the paper scale.

  python train.py --config=configs/validate_dcgan_ct.py --workdir=runs/validate/dcgan_ct
"""

from __future__ import annotations

from configs import dcgan_ct


def get_config():
  c = dcgan_ct.get_config()
  c.image_size = 64
  c.batch_size = 64
  c.data.num_images = 4608  # 4096 training slices + 512 held out for the FD metric
  c.model.gen_channels = 256
  c.model.disc_channels = 256
  c.steps = 8000
  c.log_every = 50
  c.ckpt_every = 500
  c.keep_checkpoints = 2
  c.sample_every = 1000
  c.fid_every = 2000
  c.fid_num_samples = 512
  return c
