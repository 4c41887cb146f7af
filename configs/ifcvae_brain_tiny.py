"""configs/ifcvae_brain.py scaled down to 32x32 and small channels (tests, CPU):

  python train.py --config=configs/ifcvae_brain_tiny.py --workdir=runs/ifcvae_brain_tiny
"""

from __future__ import annotations

from configs import ifcvae_brain


def get_config():
  c = ifcvae_brain.get_config()
  c.image_size = 32
  c.batch_size = 32
  c.steps = 300
  c.data.num_images = 512
  c.model.channels = 32
  c.model.max_channels = 32
  c.model.disc_channels = 32
  c.log_every = 10
  c.ckpt_every = 100
  c.sample_every = 100
  c.num_samples = 36
  c.fid_every = 150
  c.fid_num_samples = 128
  return c
