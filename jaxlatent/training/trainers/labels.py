"""What the attribute models' trainers share: the config and batch checks for labels."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections

from jaxlatent.errors import ConfigError, DataError


def check_labelled_config(config: ml_collections.ConfigDict, name: str) -> None:
  """ConfigError unless ``config`` is model ``name``'s with an image size and labels."""
  if "model" not in config or config.model.get("name", None) != name:
    raise ConfigError(f"config.model.name must be {name!r}")
  if "image_size" not in config:
    raise ConfigError("config.image_size is missing")
  data = config.get("data", None)
  if data is not None and not data.get("label_column", ""):
    raise ConfigError(f"model {name!r} trains on labels: set data.label_column (e.g. 'group' "
                      "for the brain phantom, 'large_breast' for the thorax phantom)")


def batch_labels(batch: dict, name: str) -> jax.Array:
  """``batch['label']`` as int32 ``[B]``; DataError when the batch has none."""
  if "label" not in batch:
    raise DataError(f"model {name!r}: the batch has no 'label' (set data.label_column)")
  return jnp.asarray(batch["label"]).astype(jnp.int32)
