"""Generative models: DCGAN, VAE and a StyleGAN2-style GAN, each offering a Generator.

``default_model_config(name)`` returns the ``config.model`` ConfigDict of a model, so
config files can write ``config.model = default_model_config('dcgan')`` and change a
few fields.
"""

from __future__ import annotations

import importlib

import ml_collections

from jaxlatent.errors import ConfigError

MODEL_NAMES = ("dcgan", "vae", "stylegan2")
# Attribute models (Creswell et al.): their trainers live in training/trainers_attr.py.
ATTR_MODEL_NAMES = ("ifcvae_gan", "ssdaae")
ALL_MODEL_NAMES = MODEL_NAMES + ATTR_MODEL_NAMES


def model_module(name: str):
  """The module (``jaxlatent.models.<name>``) implementing model ``name``."""
  if name not in ALL_MODEL_NAMES:
    raise ConfigError(f"model.name={name!r}: expected one of {ALL_MODEL_NAMES}")
  return importlib.import_module(f"jaxlatent.models.{name}")


def default_model_config(name: str) -> ml_collections.ConfigDict:
  """The default ``config.model`` of model ``name`` ('dcgan' | 'vae' | 'stylegan2' | ...)."""
  return model_module(name).default_config()


def default_optim_config(name: str) -> ml_collections.ConfigDict:
  """The paper's optimizer settings (``config.optim``) for model ``name``."""
  if name in ATTR_MODEL_NAMES:
    from jaxlatent.training.trainers_attr import default_optim_config_attr  # pylint: disable=g-import-not-at-top
    return default_optim_config_attr(name)
  o = ml_collections.ConfigDict()
  if name == "dcgan":
    o.lr, o.b1, o.b2, o.eps = 2e-4, 0.5, 0.999, 1e-8  # Radford et al.; Schön et al.
  elif name == "vae":
    o.lr, o.b1, o.b2, o.eps = 1e-3, 0.9, 0.999, 1e-8
  elif name == "stylegan2":
    o.lr, o.b1, o.b2, o.eps = 2.5e-3, 0.0, 0.99, 1e-8  # stylegan2-ada, small resolutions
  else:
    raise ConfigError(f"model.name={name!r}: expected one of {ALL_MODEL_NAMES}")
  o.grad_clip = 0.0  # global-norm clipping; 0 = off
  return o


__all__ = ["ALL_MODEL_NAMES", "ATTR_MODEL_NAMES", "MODEL_NAMES", "default_model_config", "default_optim_config", "model_module"]
