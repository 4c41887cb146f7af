"""configs/label_fraction_brain.py at CPU scale: 32 px, narrow networks, minutes on 2 cores.

2048 training slices (256 subjects; with fewer the head over-fits the training
subjects), 600 steps per fraction at Adam 3e-4 (2e-3 made the head's decision flip
between classes from one check to the next), 512 held-out slices (64 subjects).
"""

from __future__ import annotations

import ml_collections

from configs import ssdaae_brain_tiny


def get_config():
  c = ssdaae_brain_tiny.get_config()  # 32 px, batch 32
  c.task = "label_fraction"
  c.fractions = (0.01, 0.1, 0.5, 1.0)
  c.data.num_images = 2048
  c.steps = 600
  c.optim.lr = 3e-4
  c.model.channels = 16
  c.model.max_channels = 16
  c.model.num_res_blocks = 0
  c.model.disc_hidden = (64,)
  c.heldout = ml_collections.ConfigDict()
  c.heldout.seed_offset = 1000  # held-out population seed = data.seed + seed_offset
  c.heldout.num_images = 512
  c.supervised = ml_collections.ConfigDict()
  c.supervised.enabled = True
  c.supervised.steps = 0  # 0 = as many steps as each SS-DAAE run
  c.supervised.lr = 0.0  # 0 = the SS-DAAE autoencoder's Adam learning rate (3e-4)
  return c
