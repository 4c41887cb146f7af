"""A tiny StyleGAN2 on 32x32 brain phantoms that trains in minutes on 2 CPU cores.

configs/stylegan_brain.py scaled down: 2 mapping layers (the small-data setting),
32-d z and w, few channels; every regulariser (R1, path length, style mixing, EMA)
still runs, at the paper's intervals, and ADA with the cheap 'blit' transforms
(flips, quarter turns, integer shifts: indexing only).

  python train.py --config=configs/stylegan_tiny.py --workdir=runs/stylegan_tiny
"""

from __future__ import annotations

from configs import common
from configs import stylegan_brain


def get_config():
  c = common.tiny_schedule(stylegan_brain.get_config())
  c.batch_size = 16
  c.model.latent_dim = 32
  c.model.w_dim = 32
  c.model.num_mapping_layers = 2
  c.model.channel_base = 1024
  c.model.channel_max = 64
  c.model.mbstd_group_size = 4
  c.model.ema_half_life_images = 500
  c.augment.spec = "blit"
  c.keep_checkpoints = 2
  return c
