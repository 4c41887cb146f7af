"""Tiny CPU variant of ``discover_ct.py``: 32 px, few directions, a few hundred steps.

For tests and a quick look on a laptop; same method, smaller everything.

  python analyze.py --config=configs/discover_tiny.py --workdir=runs/tiny_directions \
      --config.checkpoint=runs/tiny_dcgan
"""

from __future__ import annotations

from configs import discover_ct


def get_config():
  config = discover_ct.get_config()
  config.image_size = 32
  config.voynov.num_directions = 8
  config.voynov.reconstructor = "lenet"
  config.voynov.steps = 300
  config.voynov.batch_size = 32
  config.voynov.learning_rate = 1e-3
  config.voynov.eval_every = 50
  config.voynov.eval_batches = 2
  config.ganspace_components = 8
  config.ganspace_samples = 1000
  config.sefa_components = 8
  config.alignment_latents = 4
  return config
