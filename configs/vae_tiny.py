"""A tiny VAE on 32x32 thorax phantoms that trains in minutes on 2 CPU cores.

configs/vae_ct.py scaled down (same loss, small channels):

  python train.py --config=configs/vae_tiny.py --workdir=runs/vae_tiny
"""

from __future__ import annotations

from configs import common
from configs import vae_ct


def get_config():
  c = common.tiny_schedule(vae_ct.get_config())
  c.model.channels = 64
  c.model.max_channels = 64
  return c
