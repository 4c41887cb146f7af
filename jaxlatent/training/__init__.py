"""Training: the optimizer settings (``optim``), per-model steps (``trainers``) and the
generic loop (``loop``).

Import-light on purpose: ``import jaxlatent.training`` loads nothing heavy; the
functions below import their modules (orbax, optax, the models) on first use.
"""

from __future__ import annotations

from typing import Any


def train_and_evaluate(config: Any, workdir: str, **kwargs) -> Any:
  """Trains ``config`` into ``workdir``; see :func:`jaxlatent.training.loop.train_and_evaluate`."""
  from jaxlatent.training.loop import train_and_evaluate as run  # pylint: disable=g-import-not-at-top
  return run(config, workdir, **kwargs)


def default_optim_config(name: str) -> Any:
  """The paper's ``config.optim`` for model ``name``; see :mod:`jaxlatent.training.optim`."""
  from jaxlatent.training import optim  # pylint: disable=g-import-not-at-top
  return optim.default_optim_config(name)


__all__ = ["default_optim_config", "train_and_evaluate"]
