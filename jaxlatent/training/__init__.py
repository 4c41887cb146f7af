"""Training: per-model steps (``trainers``) and the generic loop (``loop``).

Import-light on purpose: ``import jaxlatent.training`` loads nothing heavy;
``train_and_evaluate`` imports the loop (orbax, the models) on first use.
"""

from __future__ import annotations

from typing import Any


def train_and_evaluate(config: Any, workdir: str, **kwargs) -> Any:
  """Trains ``config`` into ``workdir``; see :func:`jaxlatent.training.loop.train_and_evaluate`."""
  from jaxlatent.training.loop import train_and_evaluate as run  # pylint: disable=g-import-not-at-top
  return run(config, workdir, **kwargs)


__all__ = ["train_and_evaluate"]
