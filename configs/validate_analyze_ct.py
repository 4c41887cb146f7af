"""Validation analysis of the 64x64 thorax generators (docs/VALIDATION.md).

configs/analyze_ct.py (Schön et al.'s discovery recipe: Voynov & Babenko with 100
``proj`` directions and the LeNet reconstructor, eps = 6 * U[-1, 1], Adam 1e-4, loss
1.0 CE + 0.25 L1; SeFa and GANSpace beside it) with two changes that fit the CPU
budget: batch 64 instead of 128, and the factor regressor, inversion and
traversal sized for 64x64 phantoms.  The other discovery settings of the study are
command-line overrides (validation/run.py lists them): ``voynov.deformator=ortho``,
``voynov.num_directions=32``, ``voynov.reconstructor=resnet``, ``seed``.

  python analyze.py --config=configs/validate_analyze_ct.py \
      --workdir=runs/validate/dcgan_ct --out=runs/validate/dcgan_ct/proj_lenet_k100
"""

from __future__ import annotations

from configs import analyze_ct


def get_config():
  c = analyze_ct.get_config()
  c.voynov.batch_size = 64
  c.voynov.eval_every = 250
  c.voynov.eval_batches = 4
  c.ganspace_components = 32
  c.ganspace_samples = 10_000
  c.sefa_components = 32
  c.alignment.regressor_images = 4096
  c.alignment.regressor_steps = 1500
  c.alignment.num_latents = 16
  c.images.num_images = 64
  c.images.max_subjects = 4
  c.inversion.steps = 500
  c.inversion.restarts = 4
  c.traversal.directions_per_method = 3
  c.traversal.max_subjects = 4
  c.report.num_samples = 36
  c.report.grid_directions = 12
  return c
