"""A toy model and dataset for testing training code in seconds.

``toy_trainer`` follows the ``ModelTrainer`` contract of ``trainers.py`` with a
linear generator ``G(z) = tanh(z W + b)`` trained by moment matching (mean and
standard deviation over the GLOBAL batch, like BatchNorm), so data-parallel runs
must reproduce single-device ones.  It can plant a NaN at a chosen step and counts
its traces (``trainer.traces[0]``) so tests can assert the loop jits once.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

from flax import struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxlatent.generator import Generator, LatentSpec


class ToyState(struct.PyTreeNode):
  step: jax.Array
  params: Any
  opt_state: Any


@dataclasses.dataclass(frozen=True)
class ToyTrainer:
  init: Callable[[jax.Array], ToyState]
  train_step: Callable[[ToyState, dict, jax.Array], tuple[ToyState, dict]]
  generator: Callable[[ToyState], Generator]
  loss_terms: tuple[str, ...]
  traces: list
  name: str = "toy"


def toy_trainer(image_size: int, latent_dim: int = 8, lr: float = 1e-2,
                nan_at_step: int | None = None) -> ToyTrainer:
  """A linear generator trained by moment matching; NaN loss at step ``nan_at_step``.

  ``nan_at_step`` counts like the loop's step numbers: the k-th update (1-based).
  """
  s = image_size
  tx = optax.adam(lr)
  traces = [0]

  def apply_fn(params, z):
    return jnp.tanh(z @ params["w"] + params["b"]).reshape(z.shape[0], s, s, 1)

  def init(key):
    params = {"w": 0.1 * jax.random.normal(key, (latent_dim, s * s), jnp.float32),
              "b": jnp.zeros((s * s,), jnp.float32)}
    return ToyState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))

  def train_step(state, batch, key):
    traces[0] += 1  # Python side effect: runs once per trace, not per step
    real = batch["image"]  # [B, S, S, 1]
    z = jax.random.normal(key, (real.shape[0], latent_dim), jnp.float32)

    def loss_fn(params):
      fake = apply_fn(params, z)
      mean_term = jnp.mean((fake.mean(0) - real.mean(0)) ** 2)
      std_term = jnp.mean((fake.std(0) - real.std(0)) ** 2)
      return mean_term + std_term, (mean_term, std_term)

    (loss, (mean_term, std_term)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params)
    if nan_at_step is not None:
      loss = jnp.where(state.step + 1 == nan_at_step, jnp.nan, loss)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    new = state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                        opt_state=opt_state)
    return new, {"loss": loss, "mean_term": mean_term, "std_term": std_term}

  def generator(state):
    return Generator(params=state.params, apply_fn=apply_fn,
                     latent_spec=LatentSpec((latent_dim,)), image_shape=(s, s, 1), name="toy")

  return ToyTrainer(init=init, train_step=train_step, generator=generator,
                    loss_terms=("loss",), traces=traces)


@dataclasses.dataclass(frozen=True)
class ToyDataset:
  """Just ``images [N, S, S, 1]`` in [-1, 1]: enough for the training loop."""
  images: np.ndarray

  def __len__(self) -> int:
    return int(self.images.shape[0])


def toy_dataset(num_images: int, image_size: int, seed: int = 0) -> ToyDataset:
  """Discs of random centre, radius and brightness on a dark background."""
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[:image_size, :image_size] / image_size
  cy, cx, r = rng.uniform(0.3, 0.7, num_images), rng.uniform(0.3, 0.7, num_images), \
      rng.uniform(0.1, 0.3, num_images)
  level = rng.uniform(0.0, 1.0, num_images)
  inside = (yy - cy[:, None, None]) ** 2 + (xx - cx[:, None, None]) ** 2 < r[:, None, None] ** 2
  images = np.where(inside, level[:, None, None], -0.9)  # [N, S, S]
  return ToyDataset(images[..., None].astype(np.float32))
