"""Fields shared by every training config (the loop's contract), with their meaning.

  seed: int, the run's base PRNG seed (init, per-step keys, data order, FD hold-out).
  image_size: side S of the square slices (a power of 2, >= 16).
  batch_size: GLOBAL batch (all devices, all hosts); divisible by the device count.
  steps: total training steps (resuming continues up to it).
  log_every: steps between lines of metrics.jsonl / the console.
  ckpt_every: steps between checkpoints (one more is written at the end).
  keep_checkpoints: K, how many of the latest checkpoints are kept.
  sample_every: steps between sample grids at fixed latents (0 = none).
  num_samples: images in a sample grid.
  fid_every: steps between ``fd_random_features`` evaluations (0 = off).
  fid_num_samples: generated images per FD evaluation, and real images held out
    of training as its reference set.
  fid_feature_seed: seed of the random feature net (FD values are only comparable
    with the same seed, image size and sample count).
  data: ``jaxlatent.data.default_data_config()`` fields.
  model: ``jaxlatent.models.default_model_config(name)`` fields (``model.name``).
  optim: ``jaxlatent.training.default_optim_config(name)`` (lr, b1, b2, eps, grad_clip).
  distributed: 'auto' (initialize jax.distributed when SLURM / a coordinator / a TPU
    pod is detected) | 'on' | 'off'.
"""

from __future__ import annotations

import ml_collections

from jaxlatent.data.config import default_data_config
from jaxlatent.models import default_model_config
from jaxlatent.training import default_optim_config


def base_config(model_name: str) -> ml_collections.ConfigDict:
  """A config with every common field at a neutral default, for ``model_name``."""
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.image_size = 128
  c.batch_size = 128
  c.steps = 1000
  c.log_every = 50
  c.ckpt_every = 1000
  c.keep_checkpoints = 3
  c.sample_every = 1000
  c.num_samples = 64
  c.fid_every = 5000
  c.fid_num_samples = 1024
  c.fid_feature_seed = 0
  c.data = default_data_config()
  c.model = default_model_config(model_name)
  c.optim = default_optim_config(model_name)
  c.distributed = "auto"
  return c


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
