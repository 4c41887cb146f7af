"""VAE on thoracic CT slices: the VAE setting of Schön, Selvan & Petersen 2022.

Paper (arXiv 2207.09740): LIDC-IDRI axial slices, HU window [-1000, 2000] -> [-1, 1],
128x128; the VAE of their code (Models/VAE.py: Res_down / Res_up blocks with BatchNorm
and RReLU, ch 64, latent 32); loss log(MSE) + 0.01 * KL; Adam lr 1e-4, batch 128,
50 epochs (Training/TrainVAE.py).

Out of the box this trains on the synthetic thorax phantom (2048 slices, 512 held out
for the FD metric; 50 epochs = 600 steps):

  python train.py --config=configs/vae_ct.py --workdir=runs/vae_ct

The paper's data (LIDC-IDRI volumes as NIfTI); set ``steps`` to
50 * (slices - 512) // 128:

  python train.py --config=configs/vae_ct.py --workdir=runs/vae_lidc \
    --config.data.source=nifti --config.data.path='/data/lidc/*.nii.gz' \
    --config.steps=<50 epochs of steps>
"""

from __future__ import annotations

from configs.common import train_config


def get_config():
  c = train_config("vae")
  c.image_size = 128
  c.batch_size = 128
  c.data.source = "phantom_thorax"  # the paper: 'nifti' with data.path = LIDC-IDRI
  c.data.modality = "ct"
  c.data.ct_window = (-1000.0, 2000.0)
  c.data.axis = "axial"
  c.data.num_images = 2048
  c.model.arch = "schon"
  c.model.ch = 64
  c.model.latent_dim = 32
  c.model.loss = "log_mse_kl"
  c.model.kl_weight = 0.01
  c.optim.lr = 1e-4
  c.log_every = 10
  c.ckpt_every = 200
  c.sample_every = 100
  c.num_samples = 64
  c.fid_every = 200
  c.fid_num_samples = 512  # held out of training as the FD reference
  c.steps = 50 * ((c.data.num_images - c.fid_num_samples) // c.batch_size)  # 50 epochs
  return c
