"""Tiny CPU variant of ``analyze_ms.py`` for tests and ``make demo`` (32 px StyleGAN).

Same pipeline (W projection of labelled held-out brain phantoms, InterFaceGAN
HC -> MS, alpha 0..50 in 15 steps, eigen-analysis, ground-truth check), smaller:
48 held-out slices (6 subjects), 100 projector steps, 4 ground-truth subjects.

  python train.py --config=configs/stylegan_tiny.py --workdir=runs/stylegan_tiny
  python analyze.py --config=configs/analyze_ms_tiny.py --workdir=runs/stylegan_tiny
"""

from __future__ import annotations

from configs import analyze_ms


def get_config():
  c = analyze_ms.get_config()
  c.images.num_images = 48
  c.inversion.steps = 100
  c.inversion.w_avg_samples = 2000
  c.inversion.batch_size = 48
  c.traversal.max_subjects = 2
  c.ground_truth.num_subjects = 4
  c.report.num_samples = 16
  return c
