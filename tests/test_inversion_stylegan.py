"""W / W+ projection (stylegan2-ada projector behaviour) on a toy style generator."""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlatent.errors import ConfigError
from jaxlatent.generator import Generator, LatentSpec
from jaxlatent.inversion import (NoiseInputs, noise_regularization, pixel_mse, project,
                                 projector_schedule, w_statistics)

NUM_WS, W_DIM, Z_DIM, S = 3, 8, 8, 16


class Mapping(nn.Module):
  @nn.compact
  def __call__(self, z):
    z = z * jax.lax.rsqrt(jnp.mean(z ** 2, -1, keepdims=True) + 1e-8)
    return nn.Dense(W_DIM)(nn.leaky_relu(nn.Dense(16)(z), 0.2))


class Synthesis(nn.Module):
  """const 4x4 -> (style-modulated conv, 2x up, + noise) x 2 -> modulated 1x1 -> tanh."""

  @nn.compact
  def __call__(self, ws, noise=None):  # ws [B, NUM_WS, W_DIM]; noise {name: [B, r, r, 1]}
    b = ws.shape[0]
    x = jnp.broadcast_to(self.param("const", nn.initializers.normal(1.0), (4, 4, 8)),
                         (b, 4, 4, 8))
    for i in range(NUM_WS - 1):
      s = nn.Dense(8, name=f"affine{i}")(ws[:, i])
      x = nn.Conv(8, (3, 3), name=f"conv{i}")(x * (1 + s[:, None, None, :]))
      x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)  # nearest 2x up-sampling
      strength = self.param(f"noise_strength{i}", nn.initializers.constant(0.1), ())
      if noise is not None:
        x = x + strength * noise[f"b{x.shape[1]}"]
      x = nn.leaky_relu(x, 0.2)
    s = nn.Dense(8, name="affine_rgb")(ws[:, -1])
    return jnp.tanh(nn.Conv(1, (1, 1), name="torgb")(x * (1 + s[:, None, None, :])))


def _apply(params, ws):
  return Synthesis().apply(params["synthesis"], ws)


def _apply_w(params, w):
  return _apply(params, jnp.broadcast_to(w[:, None], (w.shape[0], NUM_WS, W_DIM)))


def _apply_noise(params, ws, noise):
  return Synthesis().apply(params["synthesis"], ws, noise)


def _sample(params, key, n):
  w = Mapping().apply(params["mapping"], jax.random.normal(key, (n, Z_DIM)))
  return jnp.broadcast_to(w[:, None], (n, NUM_WS, W_DIM))


def _sample_w(params, key, n):
  return _sample(params, key, n)[:, 0]


def _init_noise(key, b):
  return {f"b{r}": jax.random.normal(jax.random.fold_in(key, r), (b, r, r, 1)) for r in (8, 16)}


NOISE = NoiseInputs(apply_fn=_apply_noise, init_fn=_init_noise)


def random_variables(module, *args, seed=0):
  """Variables of ``module`` filled from NumPy (kernels ~ N(0, 1/fan_in), biases 0,
  noise strengths 0.1, other params N(0, 1)): no compiled flax init, which is slow
  to compile on CPU."""
  shapes = jax.eval_shape(module.init, jax.random.PRNGKey(0), *args)
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    name = str(getattr(path[-1], "key", path[-1]))
    if name == "kernel":
      return jnp.asarray(rng.normal(size=leaf.shape) / np.sqrt(np.prod(leaf.shape[:-1])),
                         jnp.float32)
    if name == "bias":
      return jnp.zeros(leaf.shape, jnp.float32)
    if name.startswith("noise_strength"):
      return jnp.full(leaf.shape, 0.1, jnp.float32)
    return jnp.asarray(rng.normal(size=leaf.shape), jnp.float32)

  return jax.tree_util.tree_map_with_path(fill, shapes)


@pytest.fixture(scope="module")
def toy():
  params = {"mapping": random_variables(Mapping(), jnp.zeros((1, Z_DIM)), seed=0),
            "synthesis": random_variables(Synthesis(), jnp.zeros((1, NUM_WS, W_DIM)), seed=1)}
  gen = Generator(params, _apply, LatentSpec((NUM_WS, W_DIM), "w+", "none"), (S, S, 1),
                  _sample, "toystyle-w+")
  w_true = _sample(params, jax.random.PRNGKey(5), 4)
  return gen, params, w_true


def test_projector_schedule_shape():
  sched = projector_schedule(0.1, 1000)
  lr = np.asarray(jax.vmap(sched)(jnp.arange(1000)))
  assert lr[0] == 0.0
  assert np.all(np.diff(lr[:50]) > 0)  # linear warm-up over the first 5%
  np.testing.assert_allclose(lr[50:750], 0.1, rtol=1e-5)
  assert np.all(np.diff(lr[750:]) < 0) and lr[-1] < 1e-4  # cosine ramp-down, last 25%


def test_noise_regularization_matches_numpy_and_prefers_white_noise():
  rng = np.random.default_rng(0)
  white = rng.normal(size=(2, 32, 32, 1)).astype(np.float32)
  smooth = np.cumsum(np.cumsum(white, 1), 2)
  smooth = (smooth - smooth.mean()) / smooth.std()

  def reference(x):  # stylegan2-ada projector, per image
    out = []
    for img in x[..., 0].astype(np.float64):
      reg, n = 0.0, img
      while True:
        reg += np.mean(n * np.roll(n, 1, axis=1)) ** 2 + np.mean(n * np.roll(n, 1, axis=0)) ** 2
        if n.shape[0] <= 8:
          break
        n = n.reshape(n.shape[0] // 2, 2, n.shape[1] // 2, 2).mean((1, 3))
      out.append(reg)
    return np.asarray(out)

  for x in (white, smooth):
    np.testing.assert_allclose(np.asarray(noise_regularization({"a": jnp.asarray(x)})),
                               reference(x), rtol=1e-4, atol=1e-9)
  assert np.all(reference(smooth) > 100 * reference(white))


def test_project_w_and_wplus_reduce_loss(toy):
  gen, params, w_true = toy
  targets = gen(w_true)
  w_avg, w_std = w_statistics(gen, jax.random.PRNGKey(1), 2000)
  assert w_avg.shape == (W_DIM,) and float(w_std) > 0
  start = float(pixel_mse(gen(jnp.broadcast_to(w_avg, w_true.shape)), targets).mean())
  kw = dict(steps=150, w_avg=w_avg, w_std=w_std)
  res_w = project(gen, targets, jax.random.PRNGKey(2), space="w", **kw)
  res_p = project(gen, targets, jax.random.PRNGKey(2), space="w+", **kw)
  assert res_w.w.shape == (4, W_DIM) and res_p.w.shape == (4, NUM_WS, W_DIM)
  assert res_w.latents.shape == res_p.latents.shape == (4, NUM_WS, W_DIM)
  # W ties every layer to the same w; the latents reproduce the reconstruction.
  np.testing.assert_allclose(np.asarray(res_w.latents),
                             np.broadcast_to(np.asarray(res_w.w)[:, None], (4, NUM_WS, W_DIM)))
  np.testing.assert_allclose(np.asarray(gen(res_p.latents)), np.asarray(res_p.reconstructions),
                             atol=1e-6)
  for res in (res_w, res_p):
    assert float(res.error_mean) < 0.1 * start
    trace = np.asarray(res.loss_trace)
    assert trace[-10:].mean() < 0.2 * trace[:10].mean()
  # A generator in W (latent [w_dim]) works too; W+ is refused for it.
  gen_w = Generator(params, _apply_w, LatentSpec((W_DIM,), "w", "none"), (S, S, 1),
                    _sample_w, "toystyle-w")
  with pytest.raises(ConfigError, match="W\\+"):
    project(gen_w, targets, jax.random.PRNGKey(2), space="w+", **kw)


def test_project_with_noise_inputs_and_mask(toy):
  gen, params, w_true = toy
  true_noise = _init_noise(jax.random.PRNGKey(6), 4)
  targets = _apply_noise(params, w_true, true_noise)
  w_avg, w_std = w_statistics(gen, jax.random.PRNGKey(1), 2000)
  start = float(pixel_mse(gen(jnp.broadcast_to(w_avg, w_true.shape)), targets).mean())
  yy, xx = np.mgrid[:S, :S]
  mask = jnp.asarray((yy - 7.5) ** 2 + (xx - 7.5) ** 2 <= 42)
  dirty = jnp.where(mask[None, :, :, None], targets, 1.0)  # background replaced
  kw = dict(space="w", steps=150, w_avg=w_avg, w_std=w_std, noise_inputs=NOISE, mask=mask)
  res = project(gen, targets, jax.random.PRNGKey(3), **kw)
  res_dirty = project(gen, dirty, jax.random.PRNGKey(3), **kw)
  assert set(res.noise) == {"b8", "b16"} and res.noise["b16"].shape == (4, 16, 16, 1)
  assert float(res.error_mean) < 0.2 * start
  # Noise buffers stay standardized per image (re-normalized after every step).
  for buf in res.noise.values():
    np.testing.assert_allclose(np.asarray(buf.mean((1, 2, 3))), 0.0, atol=1e-4)
    np.testing.assert_allclose(np.asarray(buf.std((1, 2, 3))), 1.0, atol=1e-3)
  # The masked loss ignores the background: same codes for either background.
  np.testing.assert_allclose(np.asarray(res_dirty.w), np.asarray(res.w), atol=1e-5)
  np.testing.assert_allclose(np.asarray(res_dirty.errors), np.asarray(res.errors), rtol=1e-4)


def test_stylegan2_noise_hook_and_projection():
  """The hook for jaxlatent's StyleGAN2: the stored const noise reproduces the
  Generator, other buffers change the image, and a short W projection with noise
  optimisation lowers the error on the real model (tiny 8-px config)."""
  import ml_collections

  from jaxlatent.inversion import stylegan2_noise_inputs
  from jaxlatent.models import default_model_config, stylegan2

  cfg = ml_collections.ConfigDict()
  cfg.model = default_model_config("stylegan2")
  # mapping lr multiplier 1: with random weights and 0.01, w would barely vary.
  cfg.model.update(latent_dim=8, w_dim=8, num_mapping_layers=2, channel_base=64, channel_max=8,
                   mapping_lr_multiplier=1.0)
  cfg.image_size = 8
  init = jax.jit(functools.partial(stylegan2.init_generator, cfg))(jax.random.key(0))
  rng = np.random.default_rng(0)

  def fill(p, x):  # random weights and w_avg, visible noise; the FIR filters as built
    k = jax.tree_util.keystr(p)
    if "resample_filter" in k:
      return x
    if "noise_strength" in k:
      return jnp.full(x.shape, 0.3, jnp.float32)
    return jnp.asarray(rng.normal(size=x.shape), x.dtype)

  variables = jax.tree_util.tree_map_with_path(fill, init)
  gen = stylegan2.make_generator(variables, cfg, space="w")
  hook = stylegan2_noise_inputs(cfg)
  render = jax.jit(lambda g, lat: g(lat))  # eager flax apply of StyleGAN2 is slow
  w_avg, w_std = w_statistics(gen, jax.random.key(3), 1000)
  w = jax.jit(lambda g, k: g.sample_latents(k, 3))(gen, jax.random.key(1))
  const = {k: jnp.broadcast_to(v, (3,) + v.shape[1:])
           for k, v in stylegan2.const_noise_buffers(variables).items()}
  apply = jax.jit(hook.apply_fn)
  np.testing.assert_allclose(np.asarray(apply(variables, w, const)),
                             np.asarray(render(gen, w)), atol=1e-5)
  fresh = hook.init_fn(jax.random.key(2), 3)
  assert set(fresh) == set(const) and all(fresh[k].shape == const[k].shape for k in const)
  targets = apply(variables, w, fresh)
  assert float(jnp.abs(targets - render(gen, w)).max()) > 1e-2
  start = float(pixel_mse(render(gen, jnp.broadcast_to(w_avg, w.shape)), targets).mean())
  res = project(gen, targets, jax.random.key(4), steps=100, w_avg=w_avg, w_std=w_std,
                noise_inputs=hook)
  assert float(res.error_mean) < 0.3 * start
