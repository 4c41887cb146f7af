"""A tiny VAE on 32x32 thorax phantoms that trains in minutes on 2 CPU cores.

configs/vae_ct.py scaled down (same loss, small channels):

  python train.py --config=configs/vae_tiny.py --workdir=runs/vae_tiny
"""

from __future__ import annotations

from configs import vae_ct


def get_config():
  c = vae_ct.get_config()
  c.image_size = 32
  c.batch_size = 32
  c.steps = 300
  c.data.num_images = 512
  c.model.channels = 64
  c.model.max_channels = 64
  c.log_every = 10
  c.ckpt_every = 100
  c.sample_every = 100
  c.num_samples = 36
  c.fid_every = 150
  c.fid_num_samples = 128
  return c
