"""A tiny VAE on 32x32 thorax phantoms that trains in minutes on 2 CPU cores.

configs/vae_ct.py scaled down (same networks and loss, ch 8):

  python train.py --config=configs/vae_tiny.py --workdir=runs/vae_tiny
"""

from __future__ import annotations

from configs import common
from configs import vae_ct


def get_config():
  c = common.tiny_schedule(vae_ct.get_config())
  c.model.ch = 8
  return c
