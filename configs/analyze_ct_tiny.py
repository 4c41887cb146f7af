"""Tiny CPU variant of ``analyze_ct.py`` for tests and ``make demo`` (32 px DCGAN).

Same methods and outputs, everything smaller: 8 Voynov directions (LeNet
reconstructor, 300 steps, lr 1e-3, shifts up to 10), 8 SeFa / GANSpace components, 2 held-out
subjects x 8 slices inverted with 150 RMSprop steps x 2 restarts, a small factor
regressor.

  python train.py --config=configs/dcgan_tiny.py --workdir=runs/dcgan_tiny
  python analyze.py --config=configs/analyze_ct_tiny.py --workdir=runs/dcgan_tiny
"""

from __future__ import annotations

from configs import analyze_ct


def get_config():
  c = analyze_ct.get_config()
  c.voynov.num_directions = 8
  # The padded GroupNorm LeNet (the shift scale below was tuned with it); the paper's
  # BatchNorm LeNet is analyze_ct.py's "lenet".
  c.voynov.reconstructor = "lenet_groupnorm"
  c.voynov.steps = 300
  c.voynov.batch_size = 32
  c.voynov.learning_rate = 1e-3
  # On the 300-step tiny DCGAN, shifts of up to 6 left RCA at chance in 300 steps;
  # up to 10 reached RCA ~0.28 (chance 0.125).  analyze_ct.py keeps the paper's 6.
  c.voynov.shift_scale = 10.0
  c.voynov.eval_every = 50
  c.voynov.eval_batches = 2
  c.ganspace_components = 8
  c.ganspace_samples = 1000
  c.sefa_components = 8
  c.alignment.regressor_images = 1024
  c.alignment.regressor_steps = 300
  c.alignment.num_latents = 4
  c.images.num_images = 16
  c.images.max_subjects = 2
  c.inversion.steps = 150
  c.inversion.restarts = 2
  c.inversion.learning_rate = 0.05
  c.inversion.w_avg_samples = 2000
  c.traversal.directions_per_method = 2
  c.traversal.max_subjects = 2
  c.report.num_samples = 16
  c.report.grid_directions = 8
  return c
