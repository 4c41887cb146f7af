"""Restoring a ``train.py`` run as a Generator in the latent space a study analyses."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import jax
import numpy as np

from jaxlatent.errors import ConfigError
from jaxlatent.models import model_module, vae
from jaxlatent.studies import fingerprint
from jaxlatent.training.checkpoint import load_trained


@dataclasses.dataclass
class TrainedGenerator:
  """A restored training run.

  Attributes:
    workdir: the train workdir; train_config: its saved config.json.
    trainer, state: the model's trainer and restored train state (step ``step``).
    generator: the Generator in the study's latent space (None when not asked for).
    encode_fn: VAE runs: ``images -> (mean, logvar)`` for the inversion; else None.
    fingerprint: what identifies the generator in re-used artifacts (checkpoint step,
      config and params hashes); set by :func:`generator_fingerprint`.
  """

  workdir: str
  train_config: Any
  trainer: Any
  state: Any
  step: int
  generator: Any = None
  encode_fn: Callable[..., Any] | None = None
  fingerprint: dict | None = None


def generator_fingerprint(trained: TrainedGenerator) -> dict:
  """``trained``'s fingerprint (:func:`jaxlatent.studies.fingerprint.generator_fingerprint`).

  Hashing the parameters reads all of them, so it is computed once per run and kept.
  """
  if trained.fingerprint is None:
    trained.fingerprint = fingerprint.generator_fingerprint(trained)
  return trained.fingerprint


def generator_in_space(train_config, trainer, state, space: str):
  """The trained run's Generator in ``space`` (StyleGAN: z, w or w+; others: z)."""
  gen = trainer.generator(state)
  name = train_config.model.name
  if name in ("stylegan2", "stylegan2_simple"):
    if space != "z":
      gen = model_module(name).make_generator(gen.params, train_config, space)
  elif space != "z":
    raise ConfigError(f"config.space={space!r}: the {name} generator has only a z space")
  return gen


def load_generator(workdir: str, space: str | None = "z") -> TrainedGenerator:
  """Restores ``workdir``'s latest checkpoint; builds its Generator in ``space`` (None: none).

  Raises:
    CheckpointError: ``workdir`` is no training workdir or has no readable checkpoint.
    ConfigError: ``space`` is not a latent space of the model.
  """
  train_config, trainer, state = load_trained(workdir)
  trained = TrainedGenerator(workdir, train_config, trainer, state,
                             int(np.asarray(getattr(state, "step", -1))))
  if space is None:
    return trained
  trained.generator = generator_in_space(train_config, trainer, state, space)
  if train_config.model.name == "vae":
    trained.encode_fn = jax.jit(functools.partial(vae.encode, trained.generator.params,
                                                  config=train_config))
  return trained
