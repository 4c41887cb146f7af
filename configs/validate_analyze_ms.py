"""Validation analysis of the 64x64 brain StyleGAN2: HC -> MS (docs/VALIDATION.md).

configs/analyze_ms.py (Güllmar et al.: W projection of labelled held-out HC and MS
slices, InterFaceGAN linear SVM, alpha 0..50 in 15 steps, eigen-analysis, ground
truth against the phantom's true difference map) sized for the CPU: 160 held-out
slices projected with 400 projector steps (the reference's 1000 cost 2.5x the
time), 8 healthy subjects traversed, 16 ground-truth subjects.

  python analyze.py --config=configs/validate_analyze_ms.py \
      --workdir=runs/validate/stylegan_brain --out=runs/validate/stylegan_brain/ms
"""

from __future__ import annotations

from configs import analyze_ms


def get_config():
  c = analyze_ms.get_config()
  c.images.num_images = 160
  c.inversion.steps = 400
  c.inversion.batch_size = 32
  c.traversal.max_subjects = 8
  c.ground_truth.num_subjects = 16
  return c
