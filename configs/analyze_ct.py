"""Interpretable directions of the CT DCGAN, as in Schön, Selvan & Petersen 2022.

Paper setting (arXiv 2207.09740, its ``TrainDirections.py``): Voynov & Babenko
discovery with 100 ``proj`` directions, LeNet reconstructor, 3000 steps, batch 128,
Adam 1e-4, shifts
eps = 6 * U[-1, 1] (|eps| >= 0.5), loss 1.0 CE + 0.25 L1; traversals shown at +-6 and
+-18.  Next to it the closed-form peers SeFa and GANSpace.  Held-out CT slices are
inverted into z (Creswell & Bharath: RMSprop on MSE + a normal prior, 4 restarts) and
every direction is traversed from them for the eigen-analysis (alpha 0..18 in 15
steps: the paper's largest shift on unit directions in z).

  python train.py --config=configs/dcgan_ct.py --workdir=runs/dcgan_ct
  python analyze.py --config=configs/analyze_ct.py --workdir=runs/dcgan_ct

The VAE decoder works the same way (the paper's second model; its encoder mean,
refined by the same optimizer, is the inversion):

  python analyze.py --config=configs/analyze_ct.py --workdir=runs/ct_vae

Real CT instead of held-out phantoms: ``--config.images.source=nifti
--config.images.path='/data/ct_test/*.nii.gz'`` (preprocessed like the training data).
"""

from __future__ import annotations

from configs.common import analysis_config


def get_config():
  c = analysis_config()
  c.methods = ("voynov", "sefa", "ganspace")
  c.voynov.num_directions = 100
  c.voynov.deformator = "proj"
  c.voynov.reconstructor = "lenet"
  c.voynov.steps = 3000
  c.voynov.batch_size = 128
  c.voynov.learning_rate = 1e-4
  c.traversal_shifts = (-18.0, -6.0, 0.0, 6.0, 18.0)
  c.traversal.alpha_start, c.traversal.alpha_stop, c.traversal.alpha_num = 0.0, 18.0, 15
  return c
