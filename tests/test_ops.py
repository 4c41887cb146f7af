"""jaxlatent.ops: resampling, the 2x2 and 'SAME' conv kernels and 2x2 pooling against
the plain XLA / flax ops (values, gradients, parameters)."""

from __future__ import annotations

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlatent.errors import ConfigError
from jaxlatent.ops import conv2x2, conv_same, pool, resample


def _np_depth_to_space(x, r):
  b, h, w, c = x.shape
  oc = c // (r * r)
  out = np.zeros((b, h * r, w * r, oc), x.dtype)
  for i in range(h):
    for j in range(w):
      for di in range(r):
        for dj in range(r):
          out[:, i * r + di, j * r + dj, :] = x[:, i, j, (di * r + dj) * oc:(di * r + dj + 1) * oc]
  return out


def test_depth_to_space_matches_numpy_and_inverts():
  x = np.random.default_rng(0).normal(size=(2, 3, 5, 12)).astype(np.float32)
  y = resample.depth_to_space(jnp.asarray(x), 2)
  np.testing.assert_array_equal(np.asarray(y), _np_depth_to_space(x, 2))
  np.testing.assert_array_equal(np.asarray(resample.space_to_depth(y, 2)), x)


@pytest.mark.parametrize("features", [7, 4, 1])  # 4, 1: the tap-GEMM forward
def test_conv2x2_gemm_gradients_match_xla_and_nn_conv_params(features):
  """The GEMM backward of the 2x2 resampling conv equals XLA's autodiff conv, and so
  does the forward (the tap GEMM for <= 4 outputs), at every border pixel too."""
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(3, 5, 4, 24)), jnp.float32)
  k = jnp.asarray(rng.normal(size=(2, 2, 24, features)) * 0.2, jnp.float32)
  ct = jnp.asarray(rng.normal(size=(3, 5, 4, features)), jnp.float32)
  np.testing.assert_allclose(np.asarray(jax.jit(conv2x2.conv2x2_gemm_grad)(x, k)),
                             np.asarray(jax.jit(conv2x2.conv2x2)(x, k)),
                             rtol=1e-5, atol=1e-5)
  loss = lambda conv: (lambda x, k: jnp.sum(jnp.tanh(conv(x, k)) * ct))
  # References compiled too: eagerly every primitive would compile on its own.
  ref = jax.jit(jax.grad(loss(conv2x2.conv2x2), argnums=(0, 1)))(x, k)
  got = jax.jit(jax.grad(loss(conv2x2.conv2x2_gemm_grad), argnums=(0, 1)))(x, k)
  for r, g in zip(ref, got):
    np.testing.assert_allclose(np.asarray(g), np.asarray(r), rtol=1e-4, atol=1e-4)
  # Same parameters (names, shapes, initial values) and outputs as nn.Conv 'SAME'.
  conv = nn.Conv(features, (2, 2), padding="SAME")
  mine = conv2x2.Conv2x2(features, conv_grad="gemm")
  pc, pm = conv.init(jax.random.key(3), x), mine.init(jax.random.key(3), x)
  chex.assert_trees_all_close(pc, pm)
  np.testing.assert_allclose(np.asarray(jax.jit(mine.apply)(pm, x)),
                             np.asarray(jax.jit(conv.apply)(pc, x)), rtol=1e-5, atol=1e-5)
  # 'auto' picks GEMMs on CPU for >= 16 input channels, XLA's convs below.
  assert conv2x2.use_gemm_grad("auto", 16) == (jax.default_backend() == "cpu")
  assert not conv2x2.use_gemm_grad("auto", 4) and not conv2x2.use_gemm_grad("xla", 64)
  with pytest.raises(ConfigError, match="conv_grad='fast'"):
    conv2x2.Conv2x2(4, conv_grad="fast").init(jax.random.key(0), jnp.ones((1, 4, 4, 16)))


@pytest.mark.parametrize("shape", [(3, 5, 4, 24),    # N = 60: one kernel-gradient chunk
                                   (8, 16, 16, 16)])  # N = 2048: two chunks of 1024 rows
def test_conv2x2_bf16_matches_float32_conv(shape):
  """Mixed precision 2x2 conv: exact on bfloat16-representable data (so the GEMM
  layout is right), within bfloat16 rounding on random data, float32 in and out."""
  rng = np.random.default_rng(2)
  f = 7
  # Multiples of 1/8 in [-2, 2]: exact in bfloat16, products and sums exact in float32.
  grid = lambda size: jnp.asarray(rng.integers(-16, 17, size=size) / 8, jnp.float32)
  x, k, ct = grid(shape), grid((2, 2, shape[-1], f)), grid(shape[:-1] + (f,))
  loss = lambda conv: (lambda x, k: jnp.sum(conv(x, k) * ct))
  y = jax.jit(conv2x2.conv2x2_bf16)(x, k)
  assert y.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(y), np.asarray(jax.jit(conv2x2.conv2x2)(x, k)),
                             atol=1e-6)
  grad = lambda conv: jax.jit(jax.grad(loss(conv), argnums=(0, 1)))  # compiled references
  ref = grad(conv2x2.conv2x2)(x, k)
  got = grad(conv2x2.conv2x2_bf16)(x, k)
  for r, g in zip(ref, got):
    assert g.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(g), np.asarray(r), atol=1e-5)
  # Random data: bfloat16 rounding of the operands only (~2^-9 relative per operand).
  x = jnp.asarray(rng.normal(size=shape), jnp.float32)
  k = jnp.asarray(rng.normal(size=(2, 2, shape[-1], f)), jnp.float32)
  ct = jnp.asarray(rng.normal(size=shape[:-1] + (f,)), jnp.float32)
  rel = lambda a, b: float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b))
  assert rel(jax.jit(conv2x2.conv2x2_bf16)(x, k), jax.jit(conv2x2.conv2x2)(x, k)) < 1e-2
  ref = grad(conv2x2.conv2x2)(x, k)
  got = grad(conv2x2.conv2x2_bf16)(x, k)
  assert max(rel(g, r) for g, r in zip(got, ref)) < 1e-2
  # bfloat16 inputs: float32 output, gradients in the inputs' dtype.
  gx, gk = grad(conv2x2.conv2x2_bf16)(x.astype(jnp.bfloat16), k.astype(jnp.bfloat16))
  assert gx.dtype == gk.dtype == jnp.bfloat16


@pytest.mark.parametrize("shape,k,out", [
    ((3, 8, 6, 2), 5, 6),   # few channels in and out: space-to-depth, s2d shift GEMMs
    ((2, 8, 8, 3), 5, 12),  # few in, more out: space-to-depth, XLA's kernel gradient
    ((2, 6, 8, 5), 7, 6),
    ((2, 7, 6, 2), 5, 6),   # odd H: XLA forward
    ((2, 6, 4, 17), 5, 6),  # wide: shift-GEMM kernel grad
    ((2, 4, 4, 3), 3, 6)])
def test_conv_same_fast_matches_xla_values_and_gradients(shape, k, out):
  """The CPU formulations of a stride-1 'SAME' conv equal XLA's conv and autodiff."""
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.normal(size=shape), jnp.float32)
  w = jnp.asarray(rng.normal(size=(k, k, shape[-1], out)) * 0.2, jnp.float32)
  ct = jnp.asarray(rng.normal(size=shape[:-1] + (out,)), jnp.float32)
  loss = lambda conv: (lambda x, w: jnp.sum(jnp.tanh(conv(x, w)) * ct))
  # References compiled too: eagerly every primitive would compile on its own.
  ref = jax.jit(jax.grad(loss(conv_same.conv_same), argnums=(0, 1)))(x, w)
  got = jax.jit(jax.grad(loss(conv_same.conv_same_fast), argnums=(0, 1)))(x, w)
  for r, g in zip(ref, got):
    np.testing.assert_allclose(np.asarray(g), np.asarray(r), rtol=1e-4, atol=1e-4)
  if shape[1] % 2 == 0 and shape[2] % 2 == 0:
    np.testing.assert_allclose(np.asarray(jax.jit(conv_same.conv_same_s2d)(x, w)),
                               np.asarray(jax.jit(conv_same.conv_same)(x, w)),
                               rtol=1e-4, atol=1e-4)
  # The shift-GEMM kernel gradient in batch chunks (one image per chunk, and whole).
  dk = jax.jit(lambda x, v, ct: jax.vjp(lambda v: conv_same.conv_same(x, v), v)[1](ct)[0])(
      x, w, ct)
  kernel_grad = jax.jit(conv_same.kernel_grad_shift_gemm, static_argnums=(2, 3, 4))
  for chunk_bytes in (1, 1 << 30):
    assert conv_same.shift_gemm_chunk_images(x.shape, k, out, chunk_bytes, 0) == (
        1 if chunk_bytes == 1 else shape[0])
    got_dk = kernel_grad(x, ct, k, chunk_bytes, 0)
    np.testing.assert_allclose(np.asarray(got_dk), np.asarray(dk), rtol=1e-4, atol=1e-4)
  if shape[1] % 2 == 0 and shape[2] % 2 == 0:  # the same on the space-to-depth input
    got_dk = jax.jit(lambda x, ct, w: conv_same.kernel_grad_s2d_shift_gemm(
        resample.space_to_depth(x), resample.space_to_depth(ct), w))(x, ct, w)
    np.testing.assert_allclose(np.asarray(got_dk), np.asarray(dk), rtol=1e-4, atol=1e-4)


def test_shift_gemm_chunks_hold_the_bytes_or_the_flops():
  """Chunks of ~512 KiB of shifted input, unless that leaves a GEMM under 20 MFLOP
  (the LeNet reconstructor's layers at batch 128: the 5x5 16->120 conv in chunks of 4
  images, the first conv on the space-to-depth input, 3x3 8->24, in chunks of 16)."""
  chunks = conv_same.shift_gemm_chunk_images
  assert chunks((128, 16, 16, 16), 5, 120) == 4  # 102 KiB, 4.9 MFLOP per image
  assert chunks((128, 32, 32, 8), 3, 24) == 16  # 104 KiB, 1.2 MFLOP per image
  assert chunks((128, 32, 32, 8), 3, 24, min_chunk_flops=0) == 4
  assert chunks((6, 32, 32, 8), 3, 24) == 6  # never more than the batch
  assert chunks((7, 32, 32, 8), 3, 24, min_chunk_flops=0) == 1  # a divisor of B


def test_conv_same_module_has_nn_conv_params_and_checks_impl():
  x = jnp.asarray(np.random.default_rng(2).normal(size=(2, 8, 8, 2)), jnp.float32)
  conv, mine = nn.Conv(6, (5, 5), padding="SAME"), conv_same.ConvSame(6, 5, conv_impl="fast")
  pc, pm = conv.init(jax.random.key(3), x), mine.init(jax.random.key(3), x)
  chex.assert_trees_all_close(pc, pm)
  np.testing.assert_allclose(np.asarray(mine.apply(pm, x)), np.asarray(conv.apply(pc, x)),
                             rtol=1e-5, atol=1e-5)
  assert conv_same.use_fast_conv("auto") == (jax.default_backend() == "cpu")
  assert not conv_same.use_fast_conv("xla")
  with pytest.raises(ConfigError, match="conv_impl='gemm'"):
    conv_same.use_fast_conv("gemm")


def test_max_pool_2x2_matches_nn_max_pool():
  x = jnp.asarray(np.random.default_rng(4).normal(size=(2, 7, 6, 3)), jnp.float32)
  x = x.at[0, 0, :2].set(5.0)  # a tie for the maximum: the first one takes the gradient
  ct = jnp.asarray(np.random.default_rng(5).normal(size=(2, 3, 3, 3)), jnp.float32)
  ref = lambda x: nn.max_pool(x, (2, 2), strides=(2, 2))
  np.testing.assert_array_equal(np.asarray(pool.max_pool_2x2(x)), np.asarray(ref(x)))
  g = jax.grad(lambda x: jnp.sum(pool.max_pool_2x2(x) * ct))(x)
  g_ref = jax.grad(lambda x: jnp.sum(ref(x) * ct))(x)
  np.testing.assert_array_equal(np.asarray(g), np.asarray(g_ref))



@pytest.mark.parametrize("out", [6, 12])  # s2d shift-GEMM / XLA kernel gradient
def test_conv_same_blocks_and_block_pool_match_the_image_ops(out):
  """conv -> ReLU -> 2x2 max-pool in the 2x2-block layout (the pool as
  ``affine_max_pool_blocks`` at scale 1) equals the same ops on the image: values, and
  gradients (ReLU zeros make ties: the first maximum wins)."""
  rng = np.random.default_rng(6)
  x = jnp.asarray(rng.normal(size=(2, 8, 6, 3)), jnp.float32)
  w = jnp.asarray(rng.normal(size=(5, 5, 3, out)) * 0.2, jnp.float32)
  ct = jnp.asarray(rng.normal(size=(2, 4, 3, out)), jnp.float32)
  out_blocks = jax.jit(conv_same.conv_same_blocks)(x, w)
  assert out_blocks.shape == (2, 4, 3, 4, out)
  np.testing.assert_allclose(np.asarray(resample.blocks_to_image(out_blocks)),
                             np.asarray(jax.jit(conv_same.conv_same)(x, w)), rtol=1e-4, atol=1e-4)
  unit, zero = jnp.ones((2, out)), jnp.zeros((2, out))
  via_blocks = lambda x, w: jnp.sum(pool.affine_max_pool_blocks(
      jax.nn.relu(conv_same.conv_same_blocks(x, w)), unit, zero) * ct)
  via_image = lambda x, w: jnp.sum(
      pool.max_pool_2x2(jax.nn.relu(conv_same.conv_same(x, w))) * ct)
  np.testing.assert_allclose(float(jax.jit(via_blocks)(x, w)), float(jax.jit(via_image)(x, w)),
                             rtol=1e-5)
  got = jax.jit(jax.grad(via_blocks, argnums=(0, 1)))(x, w)
  ref = jax.jit(jax.grad(via_image, argnums=(0, 1)))(x, w)  # compiled: eager is slower
  for g, r in zip(got, ref):
    np.testing.assert_allclose(np.asarray(g), np.asarray(r), rtol=1e-4, atol=1e-4)
  # Exact ties inside a block: the gradient goes to the first member only, for the
  # maximum (scale >= 0) and for the minimum (scale < 0) alike.
  tied = jnp.ones((1, 1, 1, 4, 2))
  pooled_sum = lambda b: jnp.sum(pool.affine_max_pool_blocks(
      b, jnp.array([[2.0, -3.0]]), jnp.zeros((1, 2))))
  np.testing.assert_array_equal(np.asarray(jax.grad(pooled_sum)(tied)[0, 0, 0]),
                                [[2.0, -3.0], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0]])


def test_conv_same_blocks_option_keeps_nn_conv_params():
  """ConvSame(blocks=True): nn.Conv's parameters; blocks only where s2d applies."""
  x = jnp.asarray(np.random.default_rng(7).normal(size=(2, 8, 8, 2)), jnp.float32)
  conv = nn.Conv(6, (5, 5), padding="SAME")
  mine = conv_same.ConvSame(6, 5, conv_impl="fast", blocks=True)
  pc, pm = conv.init(jax.random.key(3), x), mine.init(jax.random.key(3), x)
  chex.assert_trees_all_close(pc, pm)
  y = mine.apply(pm, x)
  assert y.shape == (2, 4, 4, 4, 6)
  np.testing.assert_allclose(np.asarray(resample.blocks_to_image(y)),
                             np.asarray(conv.apply(pc, x)), rtol=1e-5, atol=1e-5)
  odd = x[:, :7]  # odd height: no space-to-depth path, an image comes back
  assert mine.apply(pm, odd).shape == (2, 7, 8, 6)
