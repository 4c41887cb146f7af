"""IFcVAE-GAN on thorax CT phantoms, attribute = large vs small breast size.

Same model as configs/ifcvae_brain.py; the binary attribute is the thorax
phantom's 'large_breast' label (breast_size > 0.6, from jaxlatent.phantoms.population;
small = 0, large = 1), so an edit y 0 -> 1 should enlarge the breasts only.

  python train.py --config=configs/ifcvae_thorax.py --workdir=runs/ifcvae_thorax
"""

from __future__ import annotations

from configs.common import train_config


def get_config():
  c = train_config("ifcvae_gan")
  c.image_size = 64
  c.batch_size = 64
  c.data.source = "phantom_thorax"
  c.data.modality = "ct"
  c.data.ct_window = (-1000.0, 2000.0)
  c.data.axis = "axial"
  c.data.label_column = "large_breast"  # False -> 0, True -> 1
  c.data.num_images = 4096
  c.model.z_dim = 32
  c.model.num_classes = 2
  c.model.channels = 256
  c.model.max_channels = 256
  c.model.disc_channels = 256
  c.steps = 30 * (c.data.num_images // c.batch_size)  # 30 epochs
  c.log_every = 20
  c.ckpt_every = 500
  c.sample_every = 250
  c.num_samples = 64
  c.fid_every = 1000
  c.fid_num_samples = 512
  return c
