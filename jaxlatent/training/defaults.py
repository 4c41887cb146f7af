"""Every field of a training config at its library default, and the completion of a config file.

A config file (configs/*.py) lists only the paper's settings; :func:`complete_train_config`
writes them over :func:`default_train_config` so the loop, the trainers and the
command line (``--config.<key>=...``) see every field.

Fields:
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
  data: ``jaxlatent.data.config.default_data_config()`` fields.
  model: ``jaxlatent.models.default_model_config(model.name)`` fields.
  optim: ``jaxlatent.training.default_optim_config(model.name)`` (lr, b1, b2, eps, grad_clip).
  distributed: 'auto' (initialize jax.distributed when SLURM / a coordinator / a TPU
    pod is detected) | 'on' | 'off'.
  augment: StyleGAN2 models only: ``jaxlatent.training.augment.default_augment_config()``
    (ADA; ``augment.mode='off'`` by default).
"""

from __future__ import annotations

import ml_collections

from jaxlatent.config_cli import over_defaults
from jaxlatent.data.config import default_data_config
from jaxlatent.errors import ConfigError
from jaxlatent.models import ALL_MODEL_NAMES, default_model_config
from jaxlatent.training import default_optim_config
from jaxlatent.training.augment import default_augment_config


def default_train_config(model_name: str) -> ml_collections.ConfigDict:
  """A training config with every field at its neutral default, for ``model_name``."""
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
  if model_name in ("stylegan2", "stylegan2_simple"):
    c.augment = default_augment_config()
  return c


def complete_train_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """``config``'s fields over :func:`default_train_config` of its ``model.name`` (a new dict).

  Raises:
    ConfigError: ``config.model.name`` is missing or names no model.
  """
  model = config.get("model", None)
  name = model.get("name", None) if isinstance(model, ml_collections.ConfigDict) else None
  if name not in ALL_MODEL_NAMES:
    raise ConfigError(f"config.model.name={name!r}: expected one of {list(ALL_MODEL_NAMES)}")
  return over_defaults(default_train_config(name), config)
