"""Generative models: DCGAN, VAE, StyleGAN2 (official architecture; a simplified
variant as ``stylegan2_simple``) and two attribute models.

``default_model_config(name)`` returns the ``config.model`` ConfigDict of a model,
derived from its modules' field defaults (:mod:`jaxlatent.models.settings`), so
config files can write ``config.model = default_model_config('dcgan')`` and change a
few fields.  The optimizer settings are the training package's
(:func:`jaxlatent.training.default_optim_config`).
"""

from __future__ import annotations

import importlib

import ml_collections

from jaxlatent.errors import ConfigError

MODEL_NAMES = ("dcgan", "vae", "stylegan2", "stylegan2_simple")
# Attribute models (Creswell et al.): trained on labels.
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


__all__ = ["ALL_MODEL_NAMES", "ATTR_MODEL_NAMES", "MODEL_NAMES", "default_model_config",
           "model_module"]
