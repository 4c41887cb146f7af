"""Training: the optimizer settings (``optim``), per-model steps (``trainers``), the
training defaults (``defaults``) and the generic loop (``loop``).

Import-light on purpose: ``import jaxlatent.training`` loads nothing heavy; the
functions below import their modules (orbax, optax, the models) on first use.
"""

from __future__ import annotations

from typing import Any


def default_optim_config(name: str) -> Any:
  """The paper's ``config.optim`` for model ``name``; see :mod:`jaxlatent.training.optim`."""
  from jaxlatent.training import optim  # pylint: disable=g-import-not-at-top
  return optim.default_optim_config(name)


# After default_optim_config: defaults.py imports it from this package.
from jaxlatent.training.defaults import complete_train_config, default_train_config  # pylint: disable=g-bad-import-order,wrong-import-position


def train_and_evaluate(config: Any, workdir: str, **kwargs) -> Any:
  """Trains ``config`` into ``workdir``; see :func:`jaxlatent.training.loop.train_and_evaluate`."""
  from jaxlatent.training.loop import train_and_evaluate as run  # pylint: disable=g-import-not-at-top
  return run(config, workdir, **kwargs)


__all__ = ["complete_train_config", "default_optim_config", "default_train_config",
           "train_and_evaluate"]
