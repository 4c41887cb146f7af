"""configs/ssdaae_brain.py scaled down to 32x32 and small channels (tests, CPU):

  python train.py --config=configs/ssdaae_brain_tiny.py --workdir=runs/ssdaae_brain_tiny
"""

from __future__ import annotations

from configs import common
from configs import ssdaae_brain


def get_config():
  c = common.tiny_schedule(ssdaae_brain.get_config())
  c.model.channels = 32
  c.model.max_channels = 32
  c.model.disc_hidden = (64, 64)
  return c
