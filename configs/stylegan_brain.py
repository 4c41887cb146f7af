"""StyleGAN2 on 256x256 T1 brain slices: the setting of Güllmar, Hsu & Reichenbach.

The abstract trains a StyleGAN on 29,181 skull-stripped, bias-corrected axial T1
slices (327 MS patients, 84 healthy controls).  Network and training follow
stylegan2-ada-pytorch's ``paper256`` configuration (Karras et al. 2020) with the
official architecture (``model.name='stylegan2'``: skip G, resnet D, FIR
resampling, conv_clamp 256): mapping network of 8 FC layers (lr multiplier 0.01),
channel_base 16384, channel_max 512, minibatch-std group 8; non-saturating logistic
loss; R1 gamma 1 every 16 D steps; path-length regularisation (weight 2, decay
0.01) every 4 G steps; style mixing 0.9; Adam lr 0.0025, betas (0, 0.99) with the
lazy-regularisation rescaling; G EMA with 20 kimg half-life; batch 64; 25,000 kimg
= 390,625 steps.  ADA as the official default (``--aug=ada --augpipe=bgc``, target
0.6, p adjusted every 4 steps at a speed of 500 kimg per unit): every image the
discriminator sees is augmented (hue and saturation act only on RGB, so on these
grey-value slices 'bgc' is blit + geometric + brightness / contrast / luma flip).

Out of the box this trains on the synthetic brain phantom (MR-like T1 slices):

  python train.py --config=configs/stylegan_brain.py --workdir=runs/stylegan_brain

The abstract's data (skull-stripped, bias-corrected T1 NIfTI volumes; optional
labels CSV with a diagnosis column for later InterFaceGAN directions):

  python train.py --config=configs/stylegan_brain.py --workdir=runs/stylegan_ms \
    --config.data.source=nifti --config.data.path='/data/ms_t1/*.nii.gz' \
    --config.data.modality=mr

Multi-GPU / multi-host: the same command (see "Scaling out" in README.md); ``batch_size``
is global and must divide by the number of devices.
"""

from __future__ import annotations

import ml_collections

from configs.common import train_config


def get_config():
  c = train_config("stylegan2")
  c.image_size = 256
  c.batch_size = 64
  c.data.source = "phantom_brain"  # the abstract: 'nifti' T1 volumes
  c.data.modality = "mr"
  c.data.mr_percentiles = (0.5, 99.5)
  c.data.axis = "axial"
  c.data.num_images = 4096
  c.model.latent_dim = 512  # z_dim
  c.model.w_dim = 512
  c.model.num_mapping_layers = 8
  c.model.channel_base = 16384  # paper256: fmaps 0.5
  c.model.channel_max = 512
  c.model.mbstd_group_size = 8
  c.model.conv_clamp = 256.0  # the official trainer's default
  c.model.r1_gamma = 1.0
  c.model.r1_interval = 16
  c.model.pl_weight = 2.0
  c.model.pl_interval = 4
  c.model.style_mixing_prob = 0.9
  c.model.ema_half_life_images = 20_000  # ema_kimg = 20
  c.optim.lr, c.optim.b1, c.optim.b2 = 0.0025, 0.0, 0.99
  # Adaptive discriminator augmentation (jaxlatent.training.augment; official defaults).
  c.augment = ml_collections.ConfigDict(
      {"mode": "ada", "spec": "bgc", "p": 0.0, "target": 0.6, "interval": 4, "kimg": 500.0})
  c.steps = 25_000_000 // c.batch_size  # 25,000 kimg
  c.log_every = 100
  c.ckpt_every = 5000
  c.keep_checkpoints = 3
  c.sample_every = 2500
  c.num_samples = 64
  c.fid_every = 10000
  c.fid_num_samples = 1024  # held out of training as the FD reference
  return c
