"""jaxlatent.ops.conv4x4's layer forms equal XLA's 4x4 stride-2 (transposed) convs."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlatent.ops import conv2x2, conv4x4

_DN = ("NHWC", "HWIO", "NHWC")


def _strided(x, k):
  return jax.lax.conv_general_dilated(x, k, (2, 2), ((1, 1), (1, 1)), dimension_numbers=_DN,
                                      precision=jax.lax.Precision.HIGHEST)


def _transposed(x, k):
  # ConvTranspose2d(k4, s2, p1): the input dilated by 2, padded by 4 - 1 - 1 = 2, and
  # convolved with the spatially flipped kernel.
  return jax.lax.conv_general_dilated(x, k[::-1, ::-1], (1, 1), ((2, 2), (2, 2)),
                                      lhs_dilation=(2, 2), dimension_numbers=_DN,
                                      precision=jax.lax.Precision.HIGHEST)


def _assert_same(ours, ref, x, k):
  """Values and both gradients (under a nonlinear loss) of ``ours`` equal ``ref``'s."""
  np.testing.assert_allclose(ours(x, k), ref(x, k), rtol=1e-5, atol=1e-5)
  loss = lambda fn: lambda x, k: jnp.sum(jnp.sin(fn(x, k)))
  got = jax.jit(jax.grad(loss(ours), (0, 1)))(x, k)
  want = jax.grad(loss(ref), (0, 1))(x, k)
  for a, b in zip(got, want):
    assert a.shape == b.shape
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def _data(seed, x_shape, c, f):
  rng = np.random.default_rng(seed)
  x = jnp.asarray(rng.normal(size=x_shape + (c,)), jnp.float32)
  k = jnp.asarray(rng.normal(size=(4, 4, c, f)), jnp.float32)
  return x, k


# (batch, height, width), input channels, output channels: non-square, thin, 2x2 inputs.
_SHAPES = [((1, 2, 2), 3, 5), ((2, 4, 6), 16, 4), ((2, 8, 8), 2, 1), ((1, 6, 4), 5, 16)]


@pytest.mark.parametrize("shape,c,f", _SHAPES)
def test_transposed_gemm_grad_forms_equal_xla(shape, c, f):
  x, k = _data(0, shape, c, f)
  _assert_same(conv4x4.conv_transpose4x4s2_gemm_grad, _transposed, x, k)
  _assert_same(conv4x4.conv_transpose4x4s2_taps_gemm_grad, _transposed, x, k)


@pytest.mark.parametrize("shape,c,f", _SHAPES)
def test_strided_xla_forward_forms_equal_xla(shape, c, f):
  shape = (shape[0], 2 * shape[1], 2 * shape[2])
  x, k = _data(1, shape, c, f)
  _assert_same(conv4x4.conv4x4s2_xla, _strided, x, k)
  for conv in (conv2x2.conv2x2, conv2x2.conv2x2_gemm_grad):
    _assert_same(lambda a, b, conv=conv: conv4x4.conv4x4s2_xla_forward(a, b, conv),
                 _strided, x, k)


def test_patches4x4s2_are_the_strided_conv_windows():
  """Row (i, j) of each output pixel's patch is the padded input at (2m + i, 2n + j)."""
  x, _ = _data(2, (1, 4, 6), 2, 1)
  p = conv4x4.patches4x4s2(x)
  assert p.shape == (1, 2, 3, 16, 2)
  xp = np.pad(np.asarray(x), ((0, 0), (1, 1), (1, 1), (0, 0)))
  for m in range(2):
    for n in range(3):
      np.testing.assert_array_equal(p[0, m, n].reshape(4, 4, 2),
                                    xp[0, 2 * m:2 * m + 4, 2 * n:2 * n + 4])


@pytest.mark.parametrize("conv_grad", ["auto", "gemm", "xla"])
def test_layer_forms_for_every_size_equal_xla(conv_grad):
  """What the layers run (transpose_form / conv_form) at the sizes and widths of a DCGAN:
  4x4 inputs, thin outputs, one input channel, and wide layers."""
  for size, c, f in [(2, 16, 8), (4, 16, 16), (8, 16, 1), (8, 1, 16), (4, 32, 16)]:
    x, k = _data(size + c, (2, size, size), c, f)
    _assert_same(conv4x4.transpose_form(size, c, f, conv_grad), _transposed, x, k)
    x2, _ = _data(size + f, (2, 2 * size, 2 * size), c, f)
    _assert_same(conv4x4.conv_form(2 * size, c, f, conv_grad), _strided, x2, k)


def test_forms_picked_on_cpu():
  """On XLA:CPU conv_grad 'auto' picks the GEMM-gradient forms and 'xla' the earlier
  autodiff ones; bfloat16 keeps the 2x2 form."""
  assert jax.default_backend() == "cpu"
  t, c = conv4x4.transpose_form, conv4x4.conv_form
  assert t(8, 256, 128) is conv4x4.conv_transpose4x4s2_gemm_grad
  assert t(4, 512, 256) is conv4x4.conv_transpose4x4s2_taps_gemm_grad
  assert t(32, 64, 1) is conv4x4.conv_transpose4x4s2_taps_gemm_grad
  assert t(4, 512, 256, "xla") is conv4x4.conv_transpose4x4s2_taps
  assert c(16, 128, 256) not in (conv4x4.conv4x4s2_xla, conv4x4.conv4x4s2_patches)
  assert c(8, 256, 512) is conv4x4.conv4x4s2_xla
  assert c(64, 1, 64) is conv4x4.conv4x4s2_xla
  assert c(8, 256, 512, "xla") is conv4x4.conv4x4s2_patches
  x, k = _data(3, (2, 8, 8), 8, 4)
  bf16 = c(8, 8, 4, "auto", "bfloat16")(x, k)
  assert bf16.dtype == jnp.float32
  np.testing.assert_allclose(bf16, _strided(x, k), rtol=0.05, atol=0.1)


def test_layers_use_their_forms_under_jit():
  """ConvTranspose4x4 / Conv4x4 modules equal the references with their own kernel."""
  x, _ = _data(4, (2, 4, 4), 16, 1)
  for layer, ref, inp in ((conv4x4.ConvTranspose4x4(8), _transposed, x),
                          (conv4x4.Conv4x4(8), _strided, jnp.tile(x, (1, 2, 2, 1)))):
    params = layer.init(jax.random.key(0), inp)
    k = params["params"]["kernel"]
    assert k.shape == (4, 4, 16, 8)
    y = jax.jit(functools.partial(layer.apply, params))(inp)
    np.testing.assert_allclose(y, ref(inp, k), rtol=1e-5, atol=1e-5)
