"""Tiny CPU variant of ``analyze_ms.py`` for tests and ``make demo`` (32 px StyleGAN).

Same pipeline (W projection of labelled held-out brain phantoms, InterFaceGAN
HC -> MS, alpha 0..50 in 15 steps, eigen-analysis, ground-truth check), smaller:
48 held-out slices (6 subjects), 100 projector steps, 4 ground-truth subjects.

  python train.py --config=configs/stylegan_tiny.py --workdir=runs/stylegan_tiny
  python analyze.py --config=configs/analyze_ms_tiny.py --workdir=runs/stylegan_tiny
"""

from __future__ import annotations

import importlib.util
import os


def get_config():
  c = _load("analyze_ms").get_config()
  c.images.num_images = 48
  c.inversion.steps = 100
  c.inversion.w_avg_samples = 2000
  c.inversion.batch_size = 48
  c.traversal.max_subjects = 2
  c.ground_truth.num_subjects = 4
  c.report.num_samples = 16
  return c


def _load(name):
  """A sibling config module, loaded from this file's folder (any working directory)."""
  path = os.path.join(os.path.dirname(os.path.abspath(__file__)), f"{name}.py")
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module
