"""jaxlatent.ops.norm.GroupNorm against flax's GroupNorm, and its float32 accuracy."""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlatent.ops import norm
from jaxlatent.ops import pool
from jaxlatent.ops.resample import blocks_to_image


def _params(channels: int) -> dict:
  return {"params": {"scale": jnp.linspace(0.5, 1.5, channels),
                     "bias": jnp.linspace(-1.0, 1.0, channels)}}


@pytest.mark.parametrize("shape,groups", [
    ((3, 8, 8, 6), 2),     # few channels: the [B, N, 48] summing view
    ((2, 4, 4, 16), 8),
    ((2, 4, 4, 12), 4),    # 4 * 4 * 12 not a multiple of lcm(12, 16): plain per-channel view
    ((2, 3, 5, 7), 1),     # odd sizes, one group
    ((2, 4, 4, 4, 6), 3),  # 5-D (the reconstructor's 2x2 blocks)
    ((4, 10), 5)])         # no spatial axes
def test_group_norm_matches_flax_values_and_gradients(shape, groups):
  """Same parameter tree as nn.GroupNorm, same outputs and gradients (flax's exact
  two-pass variance as the reference)."""
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=shape) * 2 + 0.5, jnp.float32)
  ct = jnp.asarray(rng.normal(size=shape), jnp.float32)
  ref = nn.GroupNorm(num_groups=groups, use_fast_variance=False)
  ours = norm.GroupNorm(num_groups=groups)
  chex.assert_trees_all_equal_shapes(ref.init(jax.random.key(0), x),
                                     ours.init(jax.random.key(0), x))
  params = _params(shape[-1])
  loss = lambda m: jax.jit(jax.value_and_grad(
      lambda p, x: jnp.sum(jnp.tanh(m.apply(p, x)) * ct), argnums=(0, 1)))
  (l_ref, g_ref), (l_ours, g_ours) = loss(ref)(params, x), loss(ours)(params, x)
  np.testing.assert_allclose(np.asarray(jax.jit(ours.apply)(params, x)),
                             np.asarray(jax.jit(ref.apply)(params, x)), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(float(l_ours), float(l_ref), rtol=1e-5)
  chex.assert_trees_all_close(g_ours, g_ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("mean,std", [(30.0, 1.0), (100.0, 0.5)])
def test_group_norm_float32_accuracy_with_a_large_mean(mean, std):
  """|mean| >> std: float32 gradients within 1e-4 (relative) of float64 ones, where
  raw moments (flax's default fast variance) are off by ~1e-2 at mean 100."""
  x64 = np.random.default_rng(1).normal(size=(4, 8, 8, 6)) * std + mean
  ct = np.random.default_rng(2).normal(size=x64.shape)
  # Compiled: eagerly every primitive would compile on its own, for nothing.
  grads = lambda m, dt: jax.jit(jax.grad(
      lambda p, x: jnp.sum(m.apply(p, x) * jnp.asarray(ct, dt)), argnums=(0, 1)))(
          jax.tree.map(lambda v: v.astype(dt), _params(6)), jnp.asarray(x64, dt))
  with jax.enable_x64(True):
    exact = grads(nn.GroupNorm(num_groups=2, use_fast_variance=False), jnp.float64)
    got = grads(norm.GroupNorm(num_groups=2), jnp.float32)
    for g, e in zip(jax.tree.leaves(got), jax.tree.leaves(exact)):
      rel = np.max(np.abs(np.asarray(g, np.float64) - np.asarray(e))) / np.max(np.abs(e))
      assert rel < 1e-4, rel


def test_group_norm_rejects_groups_that_do_not_divide_channels():
  with pytest.raises(ValueError, match="4 groups do not divide 6 channels"):
    norm.GroupNorm(num_groups=4).init(jax.random.key(0), jnp.ones((2, 4, 4, 6)))


def test_sum_spatial_matches_a_plain_sum():
  x = jnp.asarray(np.random.default_rng(3).normal(size=(2, 8, 8, 6)), jnp.float32)
  np.testing.assert_allclose(np.asarray(norm.sum_spatial(x)),
                             np.asarray(x.sum(axis=(1, 2))), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("channels,groups", [(6, 2), (16, 8), (5, 1)])
def test_group_norm_relu_max_pool_blocks_matches_the_three_ops(channels, groups):
  """The fused block op equals GroupNorm -> ReLU -> ``max_pool_2x2`` of the image, in
  values and in gradients for the blocks, scale and bias, with negative and zero
  scales (the pool then takes each window's minimum, or nothing flows)."""
  rng = np.random.default_rng(3)
  blocks = jnp.asarray(rng.normal(size=(3, 4, 5, 4, channels)) * 2 + 1, jnp.float32)
  scale = jnp.asarray(np.linspace(-1.5, 2.0, channels), jnp.float32).at[1].set(0.0)
  bias = jnp.asarray(np.linspace(-0.4, 0.4, channels), jnp.float32)
  ct = jnp.asarray(rng.normal(size=(3, 4, 5, channels)), jnp.float32)

  def three_ops(b, s, c):
    image = blocks_to_image(jax.nn.relu(norm.group_norm(b, s, c, groups)))
    return pool.max_pool_2x2(image)

  def fused(b, s, c):
    return pool.group_norm_relu_max_pool_blocks(b, s, c, groups)

  np.testing.assert_allclose(np.asarray(jax.jit(fused)(blocks, scale, bias)),
                             np.asarray(jax.jit(three_ops)(blocks, scale, bias)),
                             rtol=1e-5, atol=1e-5)
  loss = lambda f: (lambda *a: jnp.sum(f(*a) * ct))
  got = jax.jit(jax.grad(loss(fused), argnums=(0, 1, 2)))(blocks, scale, bias)
  ref = jax.jit(jax.grad(loss(three_ops), argnums=(0, 1, 2)))(blocks, scale, bias)
  for g, r in zip(got, ref):
    np.testing.assert_allclose(np.asarray(g), np.asarray(r), rtol=1e-4, atol=1e-4)
  # The module: norm.GroupNorm's parameters; 2x2 blocks only.
  module = pool.GroupNormReluMaxPool(groups)
  params = module.init(jax.random.key(0), blocks)
  chex.assert_trees_all_equal_shapes(params, norm.GroupNorm(groups).init(jax.random.key(0), blocks))
  with pytest.raises(ValueError, match=r"2x2 blocks \[B, h, w, 4, C\]"):
    module.init(jax.random.key(0), blocks[:, :, :, :2])


def test_group_norm_relu_max_pool_blocks_float32_accuracy_with_a_large_mean():
  """|mean| >> std (100 against 0.5): the fused op's float32 gradients, which go
  through the statistics by autodiff, stay within 1e-4 (relative) of float64 ones."""
  rng = np.random.default_rng(4)
  x64 = rng.normal(size=(2, 4, 4, 4, 6)) * 0.5 + 100.0
  scale, bias = np.linspace(-1.5, 2.0, 6), np.linspace(-0.4, 0.4, 6)
  ct = rng.normal(size=(2, 4, 4, 6))

  def grads(dt):
    f = lambda b, s, c: jnp.sum(pool.group_norm_relu_max_pool_blocks(b, s, c, 2)
                                * jnp.asarray(ct, dt))
    return jax.jit(jax.grad(f, argnums=(0, 1, 2)))(
        *(jnp.asarray(v, dt) for v in (x64, scale, bias)))

  with jax.enable_x64(True):
    exact, got = grads(jnp.float64), grads(jnp.float32)
    for g, e in zip(got, exact):
      rel = np.max(np.abs(np.asarray(g, np.float64) - np.asarray(e))) / np.max(np.abs(e))
      assert rel < 1e-4, rel
