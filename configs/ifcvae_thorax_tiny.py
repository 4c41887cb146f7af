"""configs/ifcvae_thorax.py scaled down to 32x32 and small channels (tests, CPU):

  python train.py --config=configs/ifcvae_thorax_tiny.py --workdir=runs/ifcvae_thorax_tiny
"""

from __future__ import annotations

from configs import common
from configs import ifcvae_thorax


def get_config():
  c = common.tiny_schedule(ifcvae_thorax.get_config())
  c.model.channels = 32
  c.model.max_channels = 32
  c.model.disc_channels = 32
  return c
