"""DCGAN and model blocks: shapes, ranges, the Generator contract, resampling."""

from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxlatent.errors import CheckpointError, ConfigError
from jaxlatent.generator import Generator
from jaxlatent.models import blocks, dcgan, default_model_config
from jaxlatent.ops import conv2x2, conv4x4


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


def _param_count(variables):
  return sum(x.size for x in jax.tree.leaves(variables["params"]))


@pytest.mark.parametrize("arch", dcgan.ARCHS)
def test_dcgan_init_shapes_and_range(arch):
  c = _config(16, arch=arch)
  g, d = dcgan.build_generator(c), dcgan.build_discriminator(c)
  gv = jax.jit(g.init)(jax.random.key(0), jnp.zeros((1, 32)))
  dv = jax.jit(d.init)(jax.random.key(1), jnp.zeros((1, 16, 16, 1)))
  if arch == "schon":
    # G: 4x4 transposed conv 32 -> 32 from 1x1 (a Dense 32 -> 4*4*32), BN(32), 4x4 s2 transposed conv
    # 32 -> 16, BN(16), 4x4 s2 transposed conv 16 -> 1; no biases.
    g_count = 32 * 16 * 32 + 2 * 32 + 16 * 32 * 16 + 2 * 16 + 16 * 16
    # D: 4x4 s2 conv 1 -> 16, 4x4 s2 conv 16 -> 32, BN(32), 4x4 conv 32 -> 1; no biases.
    d_count = 16 * 16 + 16 * 16 * 32 + 2 * 32 + 16 * 32
    # weights_init: N(0, 0.02) kernels, N(1, 0.02) BatchNorm scales, zero biases.
    assert abs(float(jnp.std(gv["params"]["up8"]["kernel"])) - 0.02) < 0.002
    assert abs(float(jnp.mean(gv["params"]["norm4"]["scale"])) - 1.0) < 0.02
    assert not jnp.any(gv["params"]["norm4"]["bias"])
  else:
    # G: dense 32 -> 4x4x32 (no bias before BN), BN(32), sub-pixel 2x2 conv 32 -> 4*16
    # (no bias), BN(16), sub-pixel 2x2 conv 16 -> 4*1 (+ bias).
    g_count = 32 * 16 * 32 + 2 * 32 + 2 * 2 * 32 * 64 + 2 * 16 + 2 * 2 * 16 * 4 + 4
    # D: s2d + 2x2 conv 4*1 -> 16 (+ bias), s2d + 2x2 conv 4*16 -> 32 (no bias), BN(32),
    # dense 4*4*32 -> 1 (+ bias).
    d_count = 2 * 2 * 4 * 16 + 16 + 2 * 2 * 64 * 32 + 2 * 32 + 16 * 32 + 1
  assert _param_count(gv) == g_count
  assert _param_count(dv) == d_count
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
  with pytest.raises(ConfigError, match="model.arch='torch'"):
    dcgan.build_generator(_config(arch="torch"))
  with pytest.raises(ConfigError, match="conv_grad='fast'"):
    dcgan.build_generator(_config(conv_grad="fast"))


def test_conv4x4_matches_strided_and_transposed_convs_with_their_gradients():
  """The 2x2 forms equal XLA's 4x4 stride-2 conv / transposed conv, values and grads."""
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(2, 8, 6, 3)), jnp.float32)
  k = jnp.asarray(rng.normal(size=(4, 4, 3, 5)), jnp.float32)
  dn = ("NHWC", "HWIO", "NHWC")
  strided = lambda x, k: jax.lax.conv_general_dilated(x, k, (2, 2), ((1, 1), (1, 1)),
                                                      dimension_numbers=dn)
  # ConvTranspose2d(k4, s2, p1): the input dilated by 2, padded by 4 - 1 - 1 = 2, and
  # convolved with the spatially flipped kernel.
  transposed = lambda x, k: jax.lax.conv_general_dilated(
      x, k[::-1, ::-1], (1, 1), ((2, 2), (2, 2)), lhs_dilation=(2, 2), dimension_numbers=dn)
  for ours, ref in ((conv4x4.conv4x4s2, strided),
                    (conv4x4.conv_transpose4x4s2, transposed)):
    for conv in (conv2x2.conv2x2, conv2x2.conv2x2_gemm_grad):
      f = lambda x, k: ours(x, k, conv)
      np.testing.assert_allclose(f(x, k), ref(x, k), rtol=1e-5, atol=1e-5)
      loss = lambda fn: lambda x, k: jnp.sum(jnp.sin(fn(x, k)))
      for a, b in zip(jax.grad(loss(f), (0, 1))(x, k), jax.grad(loss(ref), (0, 1))(x, k)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
  # The thin-output form (a generator's to_image layer).
  k1 = k[..., :1]
  np.testing.assert_allclose(conv4x4.conv_transpose4x4s2_taps(x, k1), transposed(x, k1),
                             rtol=1e-5, atol=1e-5)


def test_dcgan_torch_state_dict_round_trip_and_bad_keys():
  c = _config(16)
  gv = dcgan.init_generator(c, jax.random.key(0))
  sd = dcgan.dcgan_variables_to_torch(gv, "generator")
  # Schön's Sequential: ConvT 0, BN 1, ReLU 2, ConvT 3, BN 4, ReLU 5, ConvT 6, Tanh 7.
  assert sd["main.0.weight"].shape == (32, 32, 4, 4)
  assert sd["main.6.weight"].shape == (16, 1, 4, 4) and "main.4.running_var" in sd
  chex.assert_trees_all_equal(dcgan.dcgan_variables_from_torch(sd, "generator"),
                              jax.tree.map(np.asarray, dict(gv)))
  size, model = dcgan.schon_model_config(gv)
  assert size == 16 and model.gen_channels == 32 and model.latent_dim == 32
  with pytest.raises(CheckpointError, match="unexpected key 'main.0.kernel'"):
    dcgan.dcgan_variables_from_torch({**sd, "main.0.kernel": sd["main.0.weight"]})
  del sd["main.4.running_mean"]
  with pytest.raises(CheckpointError, match="main.4.running_mean is missing"):
    dcgan.dcgan_variables_from_torch(sd)


def test_instance_noise_schedule_follows_the_reference_epochs():
  std = np.asarray(dcgan.instance_noise_std(jnp.arange(30)))
  reduce = [10] * 5 + [20] * 5 + [30] * 5 + [40] * 5 + [100, 400, 1600, 6400, 25600, 102400]
  np.testing.assert_allclose(std[:26], 1.0 / np.asarray(reduce, np.float32), rtol=1e-6)
  assert not np.any(std[26:])
