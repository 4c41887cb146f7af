"""What every trainer returns: the state it carries and the interface the loop calls."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

from flax import struct
import jax
import jax.numpy as jnp

from jaxlatent.generator import Generator


class TrainState(struct.PyTreeNode):
  """Everything a training run carries from step to step.

  Attributes:
    step: int32 scalar, the number of steps taken.
    params: trainable parameters (per-model layout: see :mod:`jaxlatent.training.trainers`).
    opt_state: optax state(s) matching ``params``.
    model_state: non-trained variables (BatchNorm statistics, w_avg, const noise,
      path-length mean); ``None`` when the model has none.
    ema_params: exponential moving average of the generator's params (StyleGAN2);
      ``None`` otherwise.
  """

  step: jax.Array
  params: Any
  opt_state: Any
  model_state: Any = None
  ema_params: Any = None


@dataclasses.dataclass(frozen=True)
class ModelTrainer:
  """What the generic training loop needs from a model.

  Attributes:
    init: ``key -> TrainState`` (pure; can be ``jax.eval_shape``d and jitted).
    train_step: ``(state, batch, key) -> (state, metrics)``; pure, not jitted.
      ``batch = {'image': f32 [B, H, W, 1]}`` (plus ``'label'`` for the attribute
      models); metrics are f32 scalars.
    generator: ``state -> Generator`` used for samples and FID (EMA for StyleGAN2).
    loss_terms: metric names that must stay finite.
    name: the model name.
    phase: optional ``step (int) -> hashable``, the phase of a step for models whose
      steps differ (StyleGAN2: whether the lazy path-length / R1 regularisers run).
      The loop calls ``train_step(state, batch, key, phase=phase(step))`` with ``phase``
      static, one compiled program per phase: XLA:CPU runs a ``lax.cond`` branch far
      slower than the same code outside a conditional.  Called without ``phase``,
      the step decides with ``lax.cond`` on ``state.step``.
    needs_index: the step reads ``batch['index']`` (int32 [B] global dataset
      indices, sharded like the images); the loop adds it only then.
  """

  init: Callable[[jax.Array], Any]
  train_step: Callable[..., tuple[Any, dict]]
  generator: Callable[[Any], Generator]
  loss_terms: tuple[str, ...]
  name: str = ""
  phase: Callable[[int], Any] | None = None
  needs_index: bool = False


def first_state(params: Any, opt_state: Any, **extra) -> TrainState:
  """The step-0 :class:`TrainState`."""
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=opt_state, **extra)


def float32_metrics(metrics: dict[str, Any]) -> dict[str, jax.Array]:
  """Every metric as an f32 scalar (the loop's NaN guard and logs read them)."""
  return jax.tree.map(lambda v: jnp.asarray(v, jnp.float32), metrics)
