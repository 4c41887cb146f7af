"""configs/ifcvae_brain.py scaled down to 32x32 and small channels (tests, CPU):

  python train.py --config=configs/ifcvae_brain_tiny.py --workdir=runs/ifcvae_brain_tiny
"""

from __future__ import annotations

from configs import common
from configs import ifcvae_brain


def get_config():
  c = common.tiny_schedule(ifcvae_brain.get_config())
  c.model.channels = 32
  c.model.max_channels = 32
  c.model.disc_channels = 32
  return c
