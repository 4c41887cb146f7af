"""A tiny DCGAN on 32x32 thorax phantoms that trains in minutes on 2 CPU cores.

The paper setting scaled down (configs/dcgan_ct.py): same loss and optimizer, small
channels, 32x32 slices.  For tests and for trying the tool:

  python train.py --config=configs/dcgan_tiny.py --workdir=runs/dcgan_tiny
"""

from __future__ import annotations

from configs import common
from configs import dcgan_ct


def get_config():
  c = common.tiny_schedule(dcgan_ct.get_config())
  c.model.gen_channels = 128
  c.model.disc_channels = 128
  c.model.max_channels = 128
  return c
