"""The polyphase FIR resampling and phase-decomposed resampling convs of
``jaxlatent.ops.upfirdn2d`` compute the straightforward definition: zero insertion and
depthwise convs (``upfirdn2d_reference``), a transposed conv as an ``lhs_dilation``
conv, a down-sampling conv as a strided conv. Values and gradients, on random inputs."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlatent.ops import upfirdn2d as fir


def _reference_conv_transpose(x, w, up, pad_y, pad_x):
  return fir._conv(x, w, padding=((pad_y, pad_y), (pad_x, pad_x)), lhs_dilation=up)


def _reference_conv_patches(x, w, stride=1):
  return fir._conv(x, w, stride=stride)


@pytest.fixture
def definition(monkeypatch):
  """Runs a function with every fast path of the module replaced by the definition."""

  def run(fn, *args):
    with monkeypatch.context() as m:
      m.setattr(fir, "upfirdn2d", fir.upfirdn2d_reference)
      m.setattr(fir, "_conv_transpose", _reference_conv_transpose)
      m.setattr(fir, "_conv_patches", _reference_conv_patches)
      return jax.jit(fn)(*args)

  return run


def _value_and_grads(fn, argnums):
  """``(fn(*args), d <fn(*args), ct> / d args[argnums])`` with a fixed random cotangent."""

  def run(*args):
    y = fn(*args)
    ct = jax.random.normal(jax.random.key(7), y.shape, y.dtype)
    return y, jax.grad(lambda *a: jnp.sum(fn(*a) * ct), argnums)(*args)

  return run


def _assert_close(a, b, tol):
  for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    assert u.shape == v.shape
    np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=tol, atol=tol)


@pytest.mark.parametrize("f, up, down, pad, flip, gain", [
    ([1, 3, 3, 1], 2, 1, (2, 1, 2, 1), False, 4.0),  # upsample2d
    ([1, 3, 3, 1], 1, 2, (1, 1, 1, 1), False, 1.0),  # downsample2d
    ([1, 3, 3, 1], 1, 1, (2, 1, 2, 1), True, 1.0),  # filter2d
    ([1, 3, 3, 1], 3, 1, (2, 1, -1, 3), False, 9.0),  # up 3, cropping
    ([1, 3, 3, 1], (1, 2), (2, 1), (1, 2, 2, 1), False, 1.0),  # down x, up y
    ([[1, 2], [3, 4], [5, 7]], 2, 1, (1, -1, 0, 2), False, 1.0),  # non-square 2-D
    ([1, 2, 3, 4, 4, 3, 2, 1], 2, 1, (5, -2, 3, 4), True, 1.0),  # 8 taps: separable
    (None, 1, 3, (1, -2, 0, 3), False, 1.0),  # no filter: pad, crop, decimate
])
def test_upfirdn2d_polyphase_matches_the_definition(f, up, down, pad, flip, gain, definition):
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(2, 7, 6, 3)), jnp.float32)
  fs = None if f is None else (fir.setup_filter(f) if np.ndim(f) == 1
                               else np.asarray(f, np.float32) / np.sum(f))
  if fs is None:
    fn = lambda x: fir.upfirdn2d(x, None, up, down, pad, flip, gain)
    args = (x,)
  else:  # the filter traced, as a network's buffer is
    fn = lambda x, fs: fir.upfirdn2d(x, fs, up, down, pad, flip, gain)
    args = (x, jnp.asarray(fs))
  ours = jax.jit(_value_and_grads(fn, 0))(*args)
  want = definition(_value_and_grads(fn, 0), *args)
  _assert_close(ours, want, 2e-5)


@pytest.mark.parametrize("k, up, down, pad, size", [
    (3, 2, 1, 1, (6, 6)),  # the synthesis layers' conv0
    (3, 1, 2, 1, (8, 8)),  # the discriminator's conv1
    (3, 2, 2, 1, (5, 5)),
    (2, 3, 1, 0, (4, 5)),  # an even kernel, up 3, unpadded
    (5, 1, 3, 2, (10, 11)),  # stride 3, kernel not a multiple of it
    (1, 2, 1, 0, (4, 4)),  # the resnet skips
    (1, 1, 2, 0, (8, 8)),
])
def test_conv2d_resample_fast_paths_match_the_definition(k, up, down, pad, size, definition):
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.normal(size=(2, *size, 4)), jnp.float32)
  w = jnp.asarray(rng.normal(size=(k, k, 4, 5)), jnp.float32)
  f = jnp.asarray(fir.setup_filter([1, 3, 3, 1]))

  def both_flips(x, w, f):
    return jnp.stack([fir.conv2d_resample(x, w, f, up=up, down=down, padding=pad,
                                          flip_weight=flip) for flip in (True, False)])

  ours = jax.jit(_value_and_grads(both_flips, (0, 1)))(x, w, f)
  want = definition(_value_and_grads(both_flips, (0, 1)), x, w, f)
  _assert_close(ours, want, 1e-4)


def test_second_derivatives_match_the_definition(definition):
  # R1 differentiates D's input gradient, path-length regularisation G's: the fast
  # forms' gradients must have the right gradients too.
  rng = np.random.default_rng(2)
  x = jnp.asarray(rng.normal(size=(2, 8, 8, 3)), jnp.float32)
  w0 = jnp.asarray(rng.normal(size=(3, 3, 3, 4)) * 0.3, jnp.float32)
  w1 = jnp.asarray(rng.normal(size=(3, 3, 4, 4)) * 0.3, jnp.float32)
  w2 = jnp.asarray(rng.normal(size=(1, 1, 4, 2)), jnp.float32)
  f = jnp.asarray(fir.setup_filter([1, 3, 3, 1]))

  def net(x, ws):
    y = jnp.tanh(fir.conv2d_resample(x, ws[0], f, up=2, padding=1, flip_weight=False))
    y = jnp.tanh(fir.conv2d_resample(y, ws[1], f, down=2, padding=1))
    y = fir.conv2d_resample(y, ws[1], f, padding=1) + fir.upsample2d(
        fir.downsample2d(y, f), f)
    return jnp.sum(fir.conv2d_resample(y, ws[2], f, down=2) ** 2)

  def penalty(x, ws):  # |d net / d x|^2, differentiated w.r.t. x and the weights
    return jnp.sum(jax.grad(net)(x, ws) ** 2)

  fn = jax.grad(penalty, (0, 1))
  _assert_close(jax.jit(fn)(x, (w0, w1, w2)), definition(fn, x, (w0, w1, w2)), 1e-3)


def test_resampling_compiles_without_dilated_or_depthwise_convs():
  # The forms XLA:CPU runs slowly: lhs-dilated convs (transposed convs, the input
  # gradient of a strided conv) and depthwise (feature-grouped) convs.
  x = jnp.zeros((2, 8, 8, 4))
  w = jnp.zeros((3, 3, 4, 4))
  f = jnp.asarray(fir.setup_filter([1, 3, 3, 1]))

  def step(x, w, f):
    y = fir.conv2d_resample(x, w, f, up=2, padding=1, flip_weight=False)
    y = fir.conv2d_resample(y, w, f, down=2, padding=1)
    y = fir.conv2d_resample(y, w, f, padding=1)
    return jnp.sum(fir.downsample2d(fir.upsample2d(y, f), f) ** 2)

  def conv_attributes(fn):
    hlo = jax.jit(jax.grad(fn, (0, 1))).lower(x, w, f).as_text()
    convs = [line for line in hlo.splitlines() if "stablehlo.convolution" in line]
    return (len(convs), set(re.findall(r"lhs_dilate = \[[^]]*\]", " ".join(convs))),
            set(re.findall(r"feature_group_count = \d+", " ".join(convs))))

  n, dilations, groups = conv_attributes(step)
  assert n >= 2  # the plain conv and its input gradient (the resampling convs are GEMMs)
  assert dilations == {"lhs_dilate = [1, 1]"}
  assert groups == {"feature_group_count = 1"}
