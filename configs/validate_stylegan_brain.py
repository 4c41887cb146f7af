"""Validation-scale StyleGAN2 on 64x64 brain phantoms (docs/VALIDATION.md).

configs/stylegan_brain.py (the official StyleGAN2-ADA architecture and ``paper256``
recipe: skip G, resnet D, 8 mapping layers, R1 every 16 D steps, path length every
4 G steps, style mixing 0.9, G EMA, Adam 0.0025 / (0, 0.99), ADA) at a scale that
trains on the 2-core CPU: 64x64 slices, z = w = 256, channel_base 4096 and
channel_max 128 (128 channels up to 32x32, 64 at 64x64), batch 32, 3000 steps (96k
images, about 4.4 h on one core, over twice the two hours of a validation training:
the FD was still falling at step 2000, docs/VALIDATION.md), an EMA half-life of 5k
images (the reference's 20k would average over a fifth of this short run), and ADA
with 'bgc' as the official default.  On a GPU, configs/stylegan_brain.py is the
paper scale.

  python train.py --config=configs/validate_stylegan_brain.py \
      --workdir=runs/validate/stylegan_brain
"""

from __future__ import annotations

from configs import common
from configs import stylegan_brain


def get_config():
  c = common.validation_schedule(stylegan_brain.get_config())
  c.batch_size = 32
  c.model.latent_dim = 256
  c.model.w_dim = 256
  c.model.channel_base = 4096
  c.model.channel_max = 128
  c.model.ema_half_life_images = 5_000
  c.steps = 3000
  c.ckpt_every = 250  # ~5 s a step on one core: resume within minutes
  c.fid_every = 500  # the FD curve tells whether more steps still help
  return c
