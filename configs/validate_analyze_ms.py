"""Validation analysis of the 64x64 brain StyleGAN2: HC -> MS (docs/VALIDATION.md).

configs/analyze_ms.py (Güllmar et al.: W projection of labelled held-out HC and MS
slices, a linear HC -> MS direction, alpha 0..50 in 15 steps, eigen-analysis, ground
truth against the phantom's true difference map) sized for the CPU: 512 held-out
slices (64 subjects) projected with 400 projector steps (the reference's 1000 cost
2.5x the time and lowered the projection MSE by 6% on the first 128 slices), 8
healthy subjects traversed, 16 ground-truth subjects.

The direction is the class-mean difference of the labelled codes
(``supervised.classifier='mean_difference'``), not the reference's C = 1 SVM: with 64
labelled subjects in the 256-d W space the SVM separates the training codes by what
tells the subjects apart (train accuracy 1.0) and its normal barely moves the images
towards MS (component-2 map 0.05 against the true difference map; the class-mean
difference of the same codes 0.57; docs/VALIDATION.md, claim 2).
``--config.supervised.classifier=svm`` gives the reference.

  python analyze.py --config=configs/validate_analyze_ms.py \
      --workdir=runs/validate/stylegan_brain --out=runs/validate/stylegan_brain/ms
"""

from __future__ import annotations

from configs import analyze_ms


def get_config():
  c = analyze_ms.get_config()
  c.images.num_images = 512
  c.inversion.steps = 400
  c.inversion.batch_size = 32
  c.traversal.max_subjects = 8
  c.ground_truth.num_subjects = 16
  c.supervised.classifier = "mean_difference"
  return c
