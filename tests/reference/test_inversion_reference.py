"""Creswell & Bharath inversion against a PyTorch port of InvertingGAN's update.

The port (written for this test) follows ``find_batch_z`` in the reference
``scripts/invert.py``: ``torch.optim.RMSprop`` with its defaults on the codes, loss
``F.mse_loss(G(z), x) - alpha * Normal(0, 1).log_prob(z).mean(1).mean()``.  Same
generator weights, targets and start codes: the code trajectory must agree.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxlatent.generator import Generator, LatentSpec
from jaxlatent.inversion import invert_z, make_optimizer

torch = pytest.importorskip("torch")

D, H, B = 6, 4, 3  # latent size, image side, images


def _weights(seed=0):
  rng = np.random.default_rng(seed)
  w = (rng.normal(size=(D, H * H)) / np.sqrt(D)).astype(np.float32)
  b = (0.1 * rng.normal(size=(H * H,))).astype(np.float32)
  return w, b


def _jax_generator(w, b) -> Generator:
  def apply_fn(params, z):
    return jnp.tanh(z @ params["w"] + params["b"]).reshape(z.shape[0], H, H, 1)

  return Generator(params={"w": jnp.asarray(w), "b": jnp.asarray(b)}, apply_fn=apply_fn,
                   latent_spec=LatentSpec((D,)), image_shape=(H, H, 1), name="toy")


def _torch_trajectory(w, b, x, z0, lr, alpha, steps):
  """The reference's update loop, returning z after every step: [steps, B, D]."""
  wt, bt = torch.tensor(w), torch.tensor(b)
  target = torch.tensor(x.reshape(x.shape[0], -1))
  z = torch.tensor(z0, requires_grad=True)
  opt = torch.optim.RMSprop([z], lr=lr)
  pdf = torch.distributions.Normal(0.0, 1.0)
  out = []
  for _ in range(steps):
    x_hat = torch.tanh(z @ wt + bt)
    rec = torch.nn.functional.mse_loss(x_hat, target)
    log_prob = pdf.log_prob(z).mean(dim=1)
    loss = rec - alpha * log_prob.mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    out.append(z.detach().numpy().copy())
  return np.stack(out)


@pytest.mark.parametrize("alpha", [1e-6, 0.5])
def test_z_trajectory_matches_reference(alpha):
  w, b = _weights()
  rng = np.random.default_rng(1)
  gen = _jax_generator(w, b)
  x = np.asarray(gen(jnp.asarray(rng.normal(size=(B, D)), jnp.float32)))  # reachable targets
  z0 = rng.normal(size=(B, D)).astype(np.float32)
  lr, steps = 0.01, (1, 2, 6)
  ref = _torch_trajectory(w, b, x, z0, lr, alpha, max(steps))
  for t in steps:
    out = invert_z(gen, jnp.asarray(x), jax.random.key(0), steps=t, restarts=1,
                   optimizer="rmsprop", learning_rate=lr, prior_weight=alpha,
                   init_latents=jnp.asarray(z0))
    np.testing.assert_allclose(np.asarray(out.latents), ref[t - 1], rtol=1e-5, atol=2e-6)
  # The codes moved: the comparison is not between two unchanged starts.
  assert np.abs(ref[-1] - z0).max() > 5 * lr


def test_rmsprop_matches_torch_and_differs_from_optax_defaults():
  """The 'rmsprop' transform alone, on gradients spanning 6 decades."""
  rng = np.random.default_rng(2)
  grads = (rng.normal(size=(8, 5)) * np.logspace(-4, 2, 5)).astype(np.float32)
  p0 = rng.normal(size=5).astype(np.float32)
  pt = torch.tensor(p0, requires_grad=True)
  opt_t = torch.optim.RMSprop([pt], lr=0.05)
  ours, optax_default = make_optimizer("rmsprop", 0.05), make_optimizer("rmsprop_optax", 0.05)
  p, q = jnp.asarray(p0), jnp.asarray(p0)
  s, sq = ours.init(p), optax_default.init(q)
  for g in grads:
    pt.grad = torch.tensor(g)
    opt_t.step()
    u, s = ours.update(jnp.asarray(g), s, p)
    p = optax.apply_updates(p, u)
    uq, sq = optax_default.update(jnp.asarray(g), sq, q)
    q = optax.apply_updates(q, uq)
  np.testing.assert_allclose(np.asarray(p), pt.detach().numpy(), rtol=1e-6, atol=1e-7)
  assert np.abs(np.asarray(q) - pt.detach().numpy()).max() > 1e-3
