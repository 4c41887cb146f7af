"""Semi-supervised denoising adversarial autoencoder on brain MR phantoms, 10% labels.

Creswell et al.'s semi-supervised denoising AAE (skin lesions with few labels),
here on HC/MS brain slices: Gaussian-noise corruption, latent z matched to N(0, I)
and the class code to a uniform categorical by two adversaries, the class head
trained on the labelled 10% (a seeded per-example draw, fixed over resumes).

  python train.py --config=configs/ssdaae_brain.py --workdir=runs/ssdaae_brain
  python train.py --config=configs/ssdaae_brain.py --workdir=runs/ssdaae_brain_50 \
    --config.model.labelled_fraction=0.5

Accuracy vs the fraction of labels on held-out subjects: configs/label_fraction_brain.py
(``jaxlatent.studies.label_fraction.run_label_fraction``), built on
``jaxlatent.studies.label_fraction.accuracy_vs_label_fraction(config, ...)``.
"""

from __future__ import annotations

from configs.common import train_config


def get_config():
  c = train_config("ssdaae")
  c.image_size = 64
  c.batch_size = 64
  c.data.source = "phantom_brain"
  c.data.modality = "mr"
  c.data.axis = "axial"
  c.data.label_column = "group"  # HC -> 0, MS -> 1
  c.data.num_images = 4096
  c.model.z_dim = 16
  c.model.num_classes = 2
  c.model.labelled_fraction = 0.1
  c.model.noise_std = 0.25
  c.steps = 30 * (c.data.num_images // c.batch_size)  # 30 epochs
  c.log_every = 20
  c.ckpt_every = 500
  c.sample_every = 250
  c.num_samples = 64
  c.fid_every = 1000
  c.fid_num_samples = 512
  return c
