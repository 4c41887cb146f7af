"""Per-model training steps behind one interface, :class:`ModelTrainer`.

The generic loop (checkpoints, sharding, metrics) only sees ``init(key) -> state``,
``train_step(state, batch, key) -> (state, metrics)`` (pure, not jitted: the loop
jits it once with shardings and donation), ``generator(state) -> Generator``,
``loss_terms``, and optionally ``phase(step)`` (see :class:`ModelTrainer`) and
``needs_index``.  Nothing depends on the number of devices.

One module per model family, each with its loss phases as named functions:
:mod:`.dcgan`, :mod:`.vae`, :mod:`.stylegan2`, :mod:`.ifcvae_gan`, :mod:`.ssdaae`;
:mod:`.state` holds :class:`TrainState` and :class:`ModelTrainer`, :mod:`.labels`
what the attribute models share.  The state layout of each model is in its module's
docstring.
"""

from __future__ import annotations

import ml_collections

from jaxlatent.errors import ConfigError
from jaxlatent.models import ALL_MODEL_NAMES
from jaxlatent.training.trainers.state import ModelTrainer, TrainState


def make_trainer(config: ml_collections.ConfigDict) -> ModelTrainer:
  """The trainer of ``config.model.name`` (one of ``jaxlatent.models.ALL_MODEL_NAMES``)."""
  if "model" not in config or "name" not in config.model:
    raise ConfigError(f"config.model.name is missing: expected one of {ALL_MODEL_NAMES}")
  name = config.model.name
  if name not in ALL_MODEL_NAMES:
    raise ConfigError(f"model.name={name!r}: expected one of {ALL_MODEL_NAMES}")
  if "image_size" not in config:
    raise ConfigError("config.image_size is missing")
  # Imported here: each family's module imports its model (and flax, optax) only when used.
  # pylint: disable=g-import-not-at-top
  if name == "dcgan":
    from jaxlatent.training.trainers.dcgan import make_dcgan_trainer as make
  elif name == "vae":
    from jaxlatent.training.trainers.vae import make_vae_trainer as make
  elif name in ("stylegan2", "stylegan2_simple"):
    from jaxlatent.training.trainers.stylegan2 import make_stylegan2_trainer as make
  elif name == "ifcvae_gan":
    from jaxlatent.training.trainers.ifcvae_gan import make_ifcvae_gan_trainer as make
  else:
    from jaxlatent.training.trainers.ssdaae import make_ssdaae_trainer as make
  return make(config)


__all__ = ["ModelTrainer", "TrainState", "make_trainer"]
