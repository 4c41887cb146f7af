"""Training: per-model steps (``trainers``) and the generic loop (``loop``).

Import-light on purpose: ``import jaxlatent.training`` loads nothing heavy;
``train_and_evaluate`` imports the loop (orbax, the models) on first use.
"""

from __future__ import annotations

from typing import Any

# default_optim_config: re-exported until it lives here.
from jaxlatent.models import default_optim_config
# After default_optim_config: defaults.py imports it from this package.
from jaxlatent.training.defaults import complete_train_config, default_train_config  # pylint: disable=g-bad-import-order


def train_and_evaluate(config: Any, workdir: str, **kwargs) -> Any:
  """Trains ``config`` into ``workdir``; see :func:`jaxlatent.training.loop.train_and_evaluate`."""
  from jaxlatent.training.loop import train_and_evaluate as run  # pylint: disable=g-import-not-at-top
  return run(config, workdir, **kwargs)


__all__ = ["complete_train_config", "default_optim_config", "default_train_config",
           "train_and_evaluate"]
