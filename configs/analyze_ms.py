"""The HC -> MS direction of the brain StyleGAN: Güllmar, Hsu & Reichenbach (ISMRM).

Setting of the abstract: labelled real slices (healthy controls and MS patients) are
projected into W (stylegan2-ada projector: w_avg start, lr 0.1 with warm-up and cosine
ramp-down, 1000 steps; pixel MSE + multi-scale SSIM in place of LPIPS, and no noise
optimisation so that a code alone renders its image); a linear SVM on the labelled
codes gives the HC -> MS direction (InterFaceGAN, Shen et al. 2020); every healthy
subject's code is traversed with alpha = 0 .. 50 in 15 steps and each traversal
eigen-decomposed (component 2 ~ linear in alpha isolates the disease-related change).

Alpha units: the abstract does not say how its alpha relates to the latent scale, so
here one alpha unit is (HC -> MS separation of the class-mean codes along the unit
normal) / ``supervised.alpha_per_separation`` (25): alpha 25 moves a healthy code by
the mean HC -> MS distance, alpha 50 by twice that, whatever the W scale.

On phantoms the ground truth is known: held-out healthy subjects are rendered with
the population's mean HC -> MS factor change, and the component-2 map's correlation
with that true difference map is reported next to the subtraction map's.

  python train.py --config=configs/stylegan_brain.py --workdir=runs/stylegan_brain
  python analyze.py --config=configs/analyze_ms.py --workdir=runs/stylegan_brain

Real MR: ``--config.images.source=nifti --config.images.path='/data/ms_t1/*.nii.gz'
--config.images.labels_csv=/data/ms_t1/labels.csv`` (column ``group``, HC / MS).
"""

from __future__ import annotations

from configs.common import analysis_config


def get_config():
  c = analysis_config()
  c.methods = ("interfacegan",)
  c.space = "w"
  c.images.num_images = 256
  c.images.max_subjects = 0  # all held-out subjects (labelled inversion needs many codes)
  c.inversion.steps = 1000
  c.inversion.learning_rate = 0.1
  c.inversion.ssim_weight = 0.1
  c.traversal.alpha_start, c.traversal.alpha_stop, c.traversal.alpha_num = 0.0, 50.0, 15
  c.traversal.max_subjects = 8
  c.ground_truth.num_subjects = 16
  return c
