"""Checks a training config before any compute, so mistakes fail in milliseconds.

Every problem raises :class:`~jaxlatent.errors.ConfigError` (or ``DataError`` for a
missing data path) with the offending key and value in the message.
"""

from __future__ import annotations

import glob
import numbers
import os

import ml_collections

from jaxlatent.errors import ConfigError, DataError

# Top-level fields every training config must have.
REQUIRED_KEYS = (
    "seed", "image_size", "batch_size", "steps", "log_every", "ckpt_every",
    "keep_checkpoints", "sample_every", "num_samples", "fid_every", "fid_num_samples",
    "fid_feature_seed", "data", "model", "optim", "distributed",
)
# (key, minimum) of the integer fields.
_INT_MINIMUMS = (
    ("seed", 0), ("image_size", 16), ("batch_size", 1), ("steps", 1), ("log_every", 1),
    ("ckpt_every", 1), ("keep_checkpoints", 1), ("sample_every", 0), ("num_samples", 1),
    ("fid_every", 0), ("fid_num_samples", 0), ("fid_feature_seed", 0),
)


def _is_int(v) -> bool:
  return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def validate_config(config: ml_collections.ConfigDict, *, device_count: int | None = None,
                    process_count: int = 1) -> None:
  """Raises ConfigError/DataError naming the key if ``config`` cannot train.

  Args:
    config: the run config (see ``configs/dcgan_ct.py`` for the fields).
    device_count: global number of devices; ``None`` skips the divisibility check.
    process_count: number of processes (hosts) feeding the batch.
  """
  missing = [k for k in REQUIRED_KEYS if k not in config]
  if missing:
    raise ConfigError(f"config lacks the key(s) {', '.join(missing)} "
                      "(start from a file in configs/)")
  for key, minimum in _INT_MINIMUMS:
    value = config[key]
    if not _is_int(value):
      raise ConfigError(f"{key}={value!r} must be an integer")
    if value < minimum:
      raise ConfigError(f"{key}={value} must be >= {minimum}")
  size = config.image_size
  if size & (size - 1):
    raise ConfigError(f"image_size={size} must be a power of 2 (16, 32, 64, 128, 256, ...)")
  if device_count is not None and config.batch_size % device_count:
    raise ConfigError(f"batch_size={config.batch_size} is not divisible by the {device_count} "
                      "devices of this run (data parallelism splits the batch evenly)")
  if config.batch_size % process_count:
    raise ConfigError(f"batch_size={config.batch_size} is not divisible by the "
                      f"{process_count} processes of this run")
  if config.fid_every > 0 and config.fid_num_samples < 2:
    raise ConfigError(f"fid_num_samples={config.fid_num_samples} must be >= 2 when "
                      f"fid_every={config.fid_every} > 0 (set fid_every=0 to switch FD off)")
  if config.distributed not in ("auto", "off", "on"):
    raise ConfigError(f"distributed={config.distributed!r}: expected 'auto', 'off' or 'on'")
  if "name" not in config.model:
    raise ConfigError("model.name is missing (e.g. 'dcgan', 'vae', 'stylegan2')")
  from jaxlatent.models import model_module  # pylint: disable=g-import-not-at-top
  model_module(config.model.name)  # ConfigError for an unknown name
  if "lr" in config.optim and config.optim.lr is not None and not config.optim.lr > 0:
    raise ConfigError(f"optim.lr={config.optim.lr!r} must be > 0")
  for key in ("b1", "b2"):
    value = config.optim.get(key, None)
    # Adam's moment decays: 1.0 freezes the moment (b2=1: the step never changes).
    if value is not None and not (isinstance(value, numbers.Real) and 0 <= value < 1):
      raise ConfigError(f"optim.{key}={value!r} must be in [0, 1) (Adam's decay rate; "
                        "1.0 stops the moment from updating)")
  _validate_holdout(config)
  _validate_data(config)


def _validate_holdout(config: ml_collections.ConfigDict) -> None:
  """Phantom data sets have a known size: the FD hold-out must leave a batch to train on."""
  num = config.data.get("num_images", None)
  if (config.fid_every > 0 and str(config.data.get("source", "")).startswith("phantom")
      and _is_int(num) and num - config.fid_num_samples < config.batch_size):
    raise ConfigError(
        f"fid_num_samples={config.fid_num_samples} images held out for FD leave "
        f"{max(num - config.fid_num_samples, 0)} of data.num_images={num} for training, "
        f"fewer than batch_size={config.batch_size}: lower fid_num_samples or set fid_every=0")


def _validate_data(config: ml_collections.ConfigDict) -> None:
  from jaxlatent.data.config import validate_data_config  # pylint: disable=g-import-not-at-top
  validate_data_config(config.data, config.image_size)
  if config.data.source == "dicom" and not os.path.exists(
      os.path.expanduser(str(config.data.path))):
    raise DataError(f"data.path={config.data.path!r} does not exist "
                    "(set --config.data.path=<folder of DICOM series>)")
  if config.data.source == "nifti":
    path = os.path.expanduser(str(config.data.path))
    if glob.has_magic(path) and not glob.glob(path):
      raise DataError(f"data.path={config.data.path!r} matches no file")
    if not glob.has_magic(path) and not os.path.exists(path):
      raise DataError(f"data.path={config.data.path!r} does not exist "
                      "(set --config.data.path=<folder or glob of NIfTI files>)")
