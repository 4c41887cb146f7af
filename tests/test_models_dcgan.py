"""DCGAN and model blocks: shapes, ranges, the Generator contract, resampling."""

from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxlatent.errors import ConfigError
from jaxlatent.generator import Generator
from jaxlatent.models import blocks, dcgan, default_model_config


def _config(size=16, **model):
  c = ml_collections.ConfigDict()
  c.model = default_model_config("dcgan")
  c.model.update(gen_channels=32, disc_channels=32, max_channels=32, **model)
  c.image_size = size
  return c


def test_channels_schedule_halves_and_caps():
  assert [blocks.channels_at(r, 2048, 2048) for r in (4, 8, 64)] == [2048, 1024, 128]
  assert blocks.channels_at(4, 4096, 1024) == 1024
  assert blocks.channels_at(256, 16, 64) == 1


def test_resampling_modes_shapes():
  x = jnp.ones((2, 8, 8, 3))
  for mode in blocks.UPSAMPLE_MODES:
    m = blocks.Upsample(5, mode)
    assert m.apply(m.init(jax.random.key(0), x), x).shape == (2, 16, 16, 5), mode
  for mode in blocks.DOWNSAMPLE_MODES:
    m = blocks.Downsample(5, mode)
    assert m.apply(m.init(jax.random.key(0), x), x).shape == (2, 4, 4, 5), mode


def test_dcgan_bfloat16_matmuls_keep_parameters_and_stay_close():
  """model.matmul_dtype='bfloat16': same parameter tree, float32 outputs near float32's."""
  outs = {}
  for dtype in ("float32", "bfloat16"):
    cfg = _config(32, matmul_dtype=dtype)
    g, d = dcgan.build_generator(cfg), dcgan.build_discriminator(cfg)
    z = jax.random.normal(jax.random.key(1), (4, g.latent_dim))
    # Compiled: eagerly every primitive would compile on its own.  The inits on their own,
    # so that XLA fuses the parameters' arithmetic the same way for both dtypes.
    gv = jax.jit(g.init)(jax.random.key(0), z)
    img = jax.jit(g.apply)(gv, z)
    dv = jax.jit(d.init)(jax.random.key(2), img)
    outs[dtype] = (gv, dv, img, jax.jit(d.apply)(dv, img))
  (gv32, dv32, img32, lg32), (gv16, dv16, img16, lg16) = outs["float32"], outs["bfloat16"]
  chex.assert_trees_all_equal(gv32, gv16)
  chex.assert_trees_all_equal(dv32, dv16)
  assert img16.dtype == lg16.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(img16), np.asarray(img32), atol=3e-2)
  np.testing.assert_allclose(np.asarray(lg16), np.asarray(lg32), rtol=5e-2, atol=5e-2)
  with pytest.raises(ConfigError, match="model.matmul_dtype='float16'"):
    dcgan.build_generator(_config(matmul_dtype="float16"))


def test_dcgan_init_shapes_and_range():
  c = _config(16)
  g, d = dcgan.build_generator(c), dcgan.build_discriminator(c)
  gv = jax.jit(g.init)(jax.random.key(0), jnp.zeros((1, 32)))
  dv = jax.jit(d.init)(jax.random.key(1), jnp.zeros((1, 16, 16, 1)))
  # G: dense 32 -> 4x4x32 (no bias before BN), BN(32), sub-pixel 2x2 conv 32 -> 4*16
  # (no bias), BN(16), sub-pixel 2x2 conv 16 -> 4*1 (+ bias).
  g_count = 32 * 16 * 32 + 2 * 32 + 2 * 2 * 32 * 64 + 2 * 16 + 2 * 2 * 16 * 4 + 4
  # D: s2d + 2x2 conv 4*1 -> 16 (+ bias), s2d + 2x2 conv 4*16 -> 32 (no bias), BN(32),
  # dense 4*4*32 -> 1 (+ bias).
  d_count = 2 * 2 * 4 * 16 + 16 + 2 * 2 * 64 * 32 + 2 * 32 + 16 * 32 + 1
  assert sum(x.size for x in jax.tree.leaves(gv["params"])) == g_count
  assert sum(x.size for x in jax.tree.leaves(dv["params"])) == d_count
  z = 3.0 * jax.random.normal(jax.random.key(2), (4, 32))
  x = jax.jit(g.apply)(gv, z)
  assert x.shape == (4, 16, 16, 1)
  assert float(jnp.max(jnp.abs(x))) <= 1.0
  assert jax.jit(d.apply)(dv, x).shape == (4,)


def test_dcgan_generator_contract_is_deterministic_in_inference_mode():
  c = _config(32)
  gen = dcgan.make_generator(
      jax.jit(functools.partial(dcgan.init_generator, c))(jax.random.key(0)), c)
  assert isinstance(gen, Generator)
  assert gen.latent_spec.shape == (32,) and gen.image_shape == (32, 32, 1)
  z = gen.sample_latents(jax.random.key(1), 3)
  assert z.shape == (3, 32)
  render = jax.jit(lambda g, z: g(z))
  x = render(gen, z)
  assert x.shape == (3, 32, 32, 1)
  # Inference mode: one image does not depend on the rest of the batch.
  np.testing.assert_allclose(np.asarray(render(gen, z.at[1:].set(-z[1:]))[0]), np.asarray(x[0]),
                             atol=1e-5)
  # Equal configs give equal (hashable) apply functions: no retrace across Generators.
  assert gen.apply_fn == dcgan.make_generator(gen.params, c).apply_fn


def test_dcgan_bad_config_raises_config_error():
  with pytest.raises(ConfigError, match="upsample"):
    dcgan.build_generator(_config(16, upsample="bicubic"))
  with pytest.raises(ConfigError, match="image_size"):
    dcgan.build_generator(_config(24))
  with pytest.raises(ConfigError, match="conv_grad='fast'"):
    dcgan.build_generator(_config(conv_grad="fast"))
