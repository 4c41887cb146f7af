"""IFcVAE-GAN on brain MR phantoms, attribute = group (HC/MS).

Creswell et al. 2017, "Conditional Autoencoders with Adversarial Information
Factorization": a conditional VAE-GAN whose encoder splits y_hat (the attribute)
from z; an auxiliary classifier on z is fooled by the encoder, so z carries no
group information and editing y (HC 0 -> MS 1) on a real image changes the group
only.  The paper's GAN settings (Adam 2e-4, beta1 0.5) at 64x64.  The adversary
reads the posterior means and a class-mean term (``model.mean_gap_weight``) backs it
up: with the adversary alone a fresh linear probe still read the attribute from z
(see jaxlatent/models/ifcvae_gan.py; ``jaxlatent.studies.label_fraction.probe_attribute``
measures it).

  python train.py --config=configs/ifcvae_brain.py --workdir=runs/ifcvae_brain

Real data: a NIfTI folder plus a CSV with a 'subject_id' and a 'group' column:

  python train.py --config=configs/ifcvae_brain.py --workdir=runs/ifcvae_ms \
    --config.data.source=nifti --config.data.path='/data/ms/*.nii.gz' \
    --config.data.labels_csv=/data/ms/labels.csv
"""

from __future__ import annotations

from configs.common import train_config


def get_config():
  c = train_config("ifcvae_gan")
  c.image_size = 64
  c.batch_size = 64
  c.data.source = "phantom_brain"
  c.data.modality = "mr"
  c.data.axis = "axial"
  c.data.label_column = "group"  # HC -> 0, MS -> 1 (sorted class names)
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
