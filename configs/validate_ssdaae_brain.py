"""Validation-scale semi-supervised denoising AAE on 64x64 brain phantoms (docs/VALIDATION.md).

configs/ssdaae_brain.py (Creswell et al.'s SS-DAAE: Gaussian-noise corruption, z and
class-code adversaries, 10% labels, 30 epochs of 4096 slices at batch 64) on the
study's schedule: 4096 training slices plus 512 held out for the FD metric.  Its
network already trains on the 2-core CPU (about 68 images/s on one core: ~30 min).
The edit comparison (configs/validate_compare_edits.py) reads it.

  python train.py --config=configs/validate_ssdaae_brain.py --workdir=runs/validate/ssdaae_brain
"""

from __future__ import annotations

from configs import common
from configs import ssdaae_brain


def get_config():
  c = common.validation_schedule(ssdaae_brain.get_config())
  c.steps = 30 * (4096 // c.batch_size)  # 30 epochs of the 4096 training slices
  return c
