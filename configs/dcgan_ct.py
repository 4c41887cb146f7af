"""DCGAN on thoracic CT slices: the setting of Schön, Selvan & Petersen 2022.

Paper (arXiv 2207.09740): LIDC-IDRI axial slices, HU clipped to [-1000, 2000] and
scaled to [-1, 1], 128x128; the DCGAN of their code (Models/DCGAN.py: 4x4 transposed
convs from a 4x4x2048 stem, ngf = ndf = 128, latent 32) and its training loop
(Training/TrainGAN.py): BCE with real labels in [0.9, 1), Adam lr 2e-4, beta1 0.5;
batch 128; 50 epochs; FID monitored (here: ``fd_random_features``, see
jaxlatent/training/fid.py).  Their loop's instance-noise schedule never runs (its
epoch-0 branch switches the noise off); ``model.instance_noise=True`` turns it on.

Out of the box this trains on the synthetic thorax phantom (2048 slices), so the
command runs without data; ``steps`` is 50 epochs of the 1536 phantom slices left
after holding out 512 for the FD metric (600 steps):

  python train.py --config=configs/dcgan_ct.py --workdir=runs/dcgan_ct

The paper's data (a folder of LIDC-IDRI volumes converted to NIfTI); set ``steps`` to
50 * (number of slices - 512) // 128:

  python train.py --config=configs/dcgan_ct.py --workdir=runs/dcgan_lidc \
    --config.data.source=nifti --config.data.path='/data/lidc/*.nii.gz' \
    --config.steps=<50 epochs of steps>
"""

from __future__ import annotations

from configs.common import train_config


def get_config():
  c = train_config("dcgan")
  c.image_size = 128
  c.batch_size = 128
  c.data.source = "phantom_thorax"  # the paper: 'nifti' with data.path = LIDC-IDRI
  c.data.modality = "ct"
  c.data.ct_window = (-1000.0, 2000.0)
  c.data.axis = "axial"
  c.data.num_images = 2048
  c.model.latent_dim = 32
  c.model.arch = "schon"
  c.model.gen_channels = 2048  # 4x4x2048 stem (16 ngf), halved per doubling
  c.model.disc_channels = 2048  # 16 ndf at 4x4
  c.model.label_smoothing = True
  c.model.instance_noise = False
  c.optim.lr, c.optim.b1 = 2e-4, 0.5
  c.log_every = 10
  c.ckpt_every = 200
  c.sample_every = 100
  c.num_samples = 64
  c.fid_every = 200
  c.fid_num_samples = 512  # held out of training as the FD reference
  c.steps = 50 * ((c.data.num_images - c.fid_num_samples) // c.batch_size)  # 50 epochs
  return c
