"""Voynov & Babenko direction discovery on the CT DCGAN, as in Schön et al. 2022.

The arguments of Schön et al.'s ``Training/TrainDirections.py`` (arXiv 2207.09740 §3,
code after GANLatentDiscovery): 100 directions with the ``proj`` deformator (bias,
random init 0.1 * randn), the LeNet shift predictor (``LeNetShiftPredictor``, width 2,
BatchNorm), 3000 steps, batch 128, Adam 1e-4 for both, uniform shifts
eps = 6 * U[-1, 1] with |eps| >= 0.5, loss 1.0 * CE(k) + 0.25 * L1(eps); traversals at
+-6 and +-18 (their charts at shift_scale and 3 * shift_scale).  Their other runs:
32 ``ortho`` directions (``--config.voynov.deformator=ortho
--config.voynov.num_directions=32``) and the ResNet-18 predictor
(``--config.voynov.reconstructor=resnet``).

  python analyze.py --config=configs/discover_ct.py --workdir=runs/ct_directions \
      --config.checkpoint=runs/dcgan_ct

(``analyze.py`` is the library's analysis driver; the ``voynov`` block is
``jaxlatent.directions.VoynovConfig.from_config(config.voynov)``.)
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.checkpoint = ""  # generator checkpoint directory (train.py workdir)
  config.model = "dcgan"  # dcgan | vae | stylegan2
  config.space = "z"  # z | w | w+ (StyleGAN)
  config.methods = ("voynov", "ganspace", "sefa")  # run in this order
  config.restarts = 1  # > 1: independent restarts in one program (split over the devices)

  config.voynov = ml_collections.ConfigDict()
  config.voynov.num_directions = 100
  config.voynov.deformator = "proj"
  config.voynov.reconstructor = "lenet"
  config.voynov.reconstructor_width = 0  # 0: default of the kind (LeNet: 2)
  config.voynov.steps = 3000
  config.voynov.batch_size = 128
  config.voynov.learning_rate = 1e-4
  config.voynov.shift_scale = 6.0
  config.voynov.min_shift = 0.5
  config.voynov.label_weight = 1.0
  config.voynov.shift_weight = 0.25
  config.voynov.deformator_random_init = True
  config.voynov.deformator_bias = True
  config.voynov.deformator_init = "reference"
  config.voynov.deformator_inner_dim = 1024
  config.voynov.eval_every = 100
  config.voynov.eval_batches = 8
  config.voynov.collapse_threshold = ml_collections.FieldReference(None, field_type=float)
  config.voynov.recurrence_threshold = 0.8

  config.ganspace_components = 80  # GANSpace's default
  config.ganspace_samples = 10_000
  config.sefa_components = 32
  config.traversal_shifts = (-18.0, -6.0, 0.0, 6.0, 18.0)
  config.alignment_shifts = (-6.0, -4.0, -2.0, 0.0, 2.0, 4.0, 6.0)
  config.alignment_latents = 8
  config.alignment_threshold = 0.5
  return config
