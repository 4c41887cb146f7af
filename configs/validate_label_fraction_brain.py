"""Validation-scale SS-DAAE accuracy vs labelled fraction, next to a supervised baseline.

configs/label_fraction_brain.py (one SS-DAAE per fraction with the same steps, seed
and data order; the supervised baseline: the same encoder and class head on the
labelled images only; both scored on held-out subjects) with three fractions and 15
epochs each, so the six trainings fit about an hour on one CPU core.

  python analyze.py --config=configs/validate_label_fraction_brain.py \
      --out=runs/validate/label_fraction
"""

from __future__ import annotations

from configs import label_fraction_brain


def get_config():
  c = label_fraction_brain.get_config()
  c.fractions = (0.01, 0.1, 1.0)
  c.steps = 15 * (c.data.num_images // c.batch_size)  # 15 epochs of 4096 slices
  return c
