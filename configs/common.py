"""Helpers shared by the config files; config files import only ml_collections.

A config lists the paper's settings and leaves every other field to the library:
``train.py`` completes a training config over ``jaxlatent.training.default_train_config``
(loop fields, ``data``, ``model`` and ``optim`` of ``model.name``; documented in
jaxlatent/training/defaults.py), ``analyze.py`` an analysis or study config over
``jaxlatent.studies.config`` (documented there), before applying ``--config.<key>=...``.
"""

from __future__ import annotations

import ml_collections


ANALYSIS_BLOCKS = ("voynov", "alignment", "images", "inversion", "traversal", "supervised",
                   "ground_truth", "report")


def blocks(*names: str) -> ml_collections.ConfigDict:
  """A config holding one empty sub-config per name (filled in by the config file)."""
  c = ml_collections.ConfigDict()
  for name in names:
    c[name] = ml_collections.ConfigDict()
  return c


def train_config(model_name: str) -> ml_collections.ConfigDict:
  """An empty training config for ``model_name`` with ``data``, ``model``, ``optim`` blocks."""
  c = blocks("data", "model", "optim")
  c.model.name = model_name
  return c


def analysis_config() -> ml_collections.ConfigDict:
  """An empty analysis config; ``analyze.py`` completes it over the analysis defaults
  (``jaxlatent.studies.config.default_analysis_config``, every field documented there)."""
  return blocks(*ANALYSIS_BLOCKS)


def tiny_schedule(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The schedule every ``*_tiny.py`` training config shares: 32x32 phantoms, 300 steps.

  Minutes on 2 CPU cores; each tiny config then shrinks its own model's channels.
  """
  c.image_size = 32
  c.batch_size = 32
  c.steps = 300
  c.data.num_images = 512
  c.log_every = 10
  c.ckpt_every = 100
  c.sample_every = 100
  c.num_samples = 36
  c.fid_every = 150
  c.fid_num_samples = 128
  return c


def validation_schedule(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """What every ``validate_*.py`` training config shares (docs/VALIDATION.md): 64x64
  phantoms, 4096 training slices + 512 held out for the FD metric, checkpoints every
  500 steps (a CPU run resumes close to where it stopped), two kept."""
  c.image_size = 64
  c.data.num_images = 4608
  c.log_every = 50
  c.ckpt_every = 500
  c.keep_checkpoints = 2
  c.sample_every = 1000
  c.fid_every = 2000
  c.fid_num_samples = 512
  return c
