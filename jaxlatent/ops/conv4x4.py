"""DCGAN's 4x4 stride-2 convolutions (padding 1), computed exactly as 2x2 convs.

A transposed conv with kernel 4, stride 2, padding 1 (PyTorch ``ConvTranspose2d(C, F,
4, 2, 1)``) gives output pixel ``2m + p`` from two input pixels per axis through a
disjoint pair of kernel taps: phase 0 from ``x[m-1], x[m]`` with taps 3, 1, phase 1
from ``x[m], x[m+1]`` with taps 2, 0.  So on the input padded by one pixel at the
top/left, one 2x2 conv to ``4F`` channels followed by depth-to-space yields all
four phases; cropping one pixel at each border gives the transposed conv.  Likewise
a conv with kernel 4, stride 2, padding 1 (``Conv2d(C, F, 4, 2, 1)``) is
space-to-depth of the input padded by one pixel, then a 2x2 conv over ``4C``
channels.  Both run on :mod:`jaxlatent.ops.conv2x2`'s fast forms.  Where the padded
border costs most (4x4 maps) or the output is thin (one image channel), the layers
instead run one GEMM over all 16 taps (:func:`conv_transpose4x4s2_taps`,
:func:`conv4x4s2_patches`), also exact.

The padded 2x2 forms compute a border that is thrown away ((H+1)^2 / H^2 of the
FLOPs: 1.27x at 8x8).  Where the 2x2 convs take GEMM gradients (XLA:CPU), the layers
therefore avoid it where that measured faster: the transposed conv back-propagates
through two GEMMs on the 4x4 stride-2 patches of its output gradient
(:func:`conv_transpose4x4s2_gemm_grad`, :func:`conv_transpose4x4s2_taps_gemm_grad`),
and the strided conv runs forward as XLA's own stride-2 conv with the 2x2 form's
gradients (:func:`conv4x4s2_xla_forward`), or entirely as XLA's conv where the 2x2
form has no GEMM gradients or the output is 4x4 (:func:`conv4x4s2_xla`).
:func:`transpose_form` and :func:`conv_form` pick per layer; every form gives the same
values and gradients up to float rounding.

Parameters are kept as the full 4x4 kernel ``[4, 4, C_in, C_out]`` (the PyTorch
weight transposed: :func:`kernel_from_torch_transpose`, :func:`kernel_from_torch_conv`
and their inverses), so PyTorch weights convert exactly; the 2x2 rearrangement
happens inside the forward pass and costs one gather of the kernel.
"""

from __future__ import annotations

import functools
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxlatent.ops.conv2x2 import (GEMM_GRAD_MIN_CHANNELS, conv2x2, conv2x2_form,
                                   use_gemm_grad)
from jaxlatent.ops.resample import depth_to_space, space_to_depth

Conv = Callable[[jax.Array, jax.Array], jax.Array]

# _TRANSPOSE_TAPS[i, q]: the 4x4 tap read by 2x2 tap i for output phase slot q (see
# conv_transpose4x4s2: slot 0 holds phase 1, slot 1 holds phase 0).
_TRANSPOSE_TAPS = np.array([[2, 3], [0, 1]])


def transpose_kernel_2x2(kernel: jax.Array) -> jax.Array:
  """``[4, 4, C, F]`` transposed-conv kernel -> the ``[2, 2, C, 4F]`` 2x2 conv kernel."""
  c, f = kernel.shape[2:]
  k = kernel[_TRANSPOSE_TAPS][:, :, _TRANSPOSE_TAPS]  # [i, qy, j, qx, C, F]
  return k.transpose(0, 2, 4, 1, 3, 5).reshape(2, 2, c, 4 * f)


def conv_transpose4x4s2(x: jax.Array, kernel: jax.Array, conv: Conv = conv2x2) -> jax.Array:
  """PyTorch ``ConvTranspose2d(k=4, s=2, p=1)``: ``[B, H, W, C] -> [B, 2H, 2W, F]``.

  ``kernel``: ``[4, 4, C, F]``, i.e. the PyTorch weight ``[C, F, 4, 4]`` transposed
  to ``(2, 3, 0, 1)``.  ``conv``: a 2x2 'SAME' conv form (``conv2x2_form``).
  """
  xp = jnp.pad(x, ((0, 0), (1, 0), (1, 0), (0, 0)))  # [B, H+1, W+1, C]
  # z[n] = x[n-1] K0 + x[n] K1: slot 1 is phase 0 at m = n, slot 0 phase 1 at m = n-1,
  # so depth-to-space puts output pixel k at k + 1.
  z = conv(xp, transpose_kernel_2x2(kernel).astype(x.dtype))  # [B, H+1, W+1, 4F]
  return depth_to_space(z, 2)[:, 1:-1, 1:-1]  # [B, 2H, 2W, F]


# Per axis, output phase p of the transposed conv sums the tap products at input offset
# d with kernel tap k: phase 0 = x[m] W[1] + x[m-1] W[3], phase 1 = x[m] W[2] + x[m+1] W[0].
_PHASE_TAPS = (((0, 1), (-1, 3)), ((0, 2), (1, 0)))
# conv_transpose4x4s2_taps is used up to this many output channels (a generator's
# to_image layer: the pad of a wide input costs more than the thin conv) and on inputs
# up to this size (where the padded border of conv_transpose4x4s2 adds the most rows:
# 25 for 16 at 4x4); likewise conv4x4s2_patches for outputs up to that size.
TAP_MAX_FEATURES = 4
TAP_MAX_SIZE = 4


def conv_transpose4x4s2_taps(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """:func:`conv_transpose4x4s2` for few output channels: one GEMM to all 16 taps'
  products ``[B, H, W, 4, 4, F]``, then each output phase sums four shifted slices of
  them (no padded copy of the wide input, no wasted border)."""
  b, h, w, c = x.shape
  f = kernel.shape[-1]
  taps = jnp.matmul(x.reshape(-1, c), kernel.transpose(2, 0, 1, 3).reshape(c, 16 * f),
                    precision=jax.lax.Precision.HIGHEST).reshape(b, h, w, 4, 4, f)
  taps = jnp.pad(taps, ((0, 0), (1, 1), (1, 1), (0, 0), (0, 0), (0, 0)))
  phases = []
  for py in (0, 1):
    for px in (0, 1):
      phases.append(sum(taps[:, 1 + dy:1 + dy + h, 1 + dx:1 + dx + w, ky, kx]
                        for dy, ky in _PHASE_TAPS[py] for dx, kx in _PHASE_TAPS[px]))
  return depth_to_space(jnp.concatenate(phases, axis=-1), 2)  # [B, 2H, 2W, F]


def conv_kernel_2x2(kernel: jax.Array) -> jax.Array:
  """``[4, 4, C, F]`` strided-conv kernel -> the ``[2, 2, 4C, F]`` kernel after space-to-depth."""
  c, f = kernel.shape[2:]
  k = kernel.reshape(2, 2, 2, 2, c, f)  # [i, ry, j, rx, C, F]
  return k.transpose(0, 2, 1, 3, 4, 5).reshape(2, 2, 4 * c, f)


def conv4x4s2(x: jax.Array, kernel: jax.Array, conv: Conv = conv2x2) -> jax.Array:
  """PyTorch ``Conv2d(k=4, s=2, p=1)``: ``[B, H, W, C] -> [B, H/2, W/2, F]``.

  ``kernel``: ``[4, 4, C, F]``, the PyTorch weight ``[F, C, 4, 4]`` transposed to
  ``(2, 3, 1, 0)``.
  """
  h, w = x.shape[1] // 2, x.shape[2] // 2
  s = space_to_depth(jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0))), 2)  # [B, h+1, w+1, 4C]
  # y[m] reads padded pixels 2m .. 2m+3 = blocks m, m+1: the 'SAME' conv's last row
  # and column (block h, zero padding) are not outputs.  (A 'VALID' conv computes no
  # such border, but XLA:CPU ran it and its GEMM gradients slower.)
  return conv(s, conv_kernel_2x2(kernel).astype(x.dtype))[:, :h, :w]


def patches4x4s2(x: jax.Array) -> jax.Array:
  """``[B, 2h, 2w, C] -> [B, h, w, 16, C]``: the 4x4 window (taps ``(i, j)``) that the
  stride-2 conv with padding 1 reads for each output pixel (16 strided slices)."""
  _, hh, ww, _ = x.shape
  h, w = hh // 2, ww // 2
  xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  return jnp.stack([xp[:, i:i + 2 * h:2, j:j + 2 * w:2] for i in range(4) for j in range(4)],
                   axis=3)


def conv4x4s2_patches(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """:func:`conv4x4s2` as one GEMM on the 4x4 patches of each output pixel (16 strided
  slices of the padded input): exact FLOPs, for small outputs."""
  b, hh, ww, c = x.shape
  h, w = hh // 2, ww // 2
  y = jnp.matmul(patches4x4s2(x).reshape(b * h * w, 16 * c), kernel.reshape(16 * c, -1),
                 precision=jax.lax.Precision.HIGHEST)
  return y.reshape(b, h, w, -1)


@jax.custom_vjp
def conv_transpose4x4s2_gemm_grad(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """:func:`conv_transpose4x4s2` (XLA's 2x2 conv) whose gradients are two exact GEMMs.

  The transposed conv is the adjoint of the stride-2 conv, so with ``P`` the 4x4
  stride-2 patches of ``dy`` (:func:`patches4x4s2`, ``[N, 16F]``, N = B H W) the input
  gradient is the strided conv ``P K^T`` (``[N, 16F] @ [16F, C]``) and the kernel
  gradient ``x^T P`` (``[C, N] @ [N, 16F]``): no padded border, unlike the 2x2 form's
  GEMM gradients on the ``(H+1) x (W+1)`` grid.
  """
  return conv_transpose4x4s2(x, kernel)


def _transpose_gemm_fwd(x, kernel):
  return conv_transpose4x4s2(x, kernel), (x, kernel)


def _transpose_gemm_bwd(res, dy):
  x, kernel = res
  b, h, w, c = x.shape
  f = kernel.shape[-1]
  n = b * h * w
  p = patches4x4s2(dy).reshape(n, 16 * f)  # [N, (i, j, F)]
  matmul = functools.partial(jnp.matmul, precision=jax.lax.Precision.HIGHEST)
  dk = matmul(x.reshape(n, c).T, p).reshape(c, 4, 4, f).transpose(1, 2, 0, 3)
  dx = matmul(p, kernel.transpose(0, 1, 3, 2).reshape(16 * f, c)).reshape(b, h, w, c)
  return dx.astype(x.dtype), dk.astype(kernel.dtype)


conv_transpose4x4s2_gemm_grad.defvjp(_transpose_gemm_fwd, _transpose_gemm_bwd)


@jax.custom_vjp
def conv_transpose4x4s2_taps_gemm_grad(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """:func:`conv_transpose4x4s2_taps` with the exact GEMM gradients of
  :func:`conv_transpose4x4s2_gemm_grad` (instead of autodiff through its shifted sums)."""
  return conv_transpose4x4s2_taps(x, kernel)


def _taps_gemm_fwd(x, kernel):
  return conv_transpose4x4s2_taps(x, kernel), (x, kernel)


conv_transpose4x4s2_taps_gemm_grad.defvjp(_taps_gemm_fwd, _transpose_gemm_bwd)


def conv4x4s2_xla(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """:func:`conv4x4s2` as XLA's own stride-2 conv (exact FLOPs, autodiff gradients)."""
  return jax.lax.conv_general_dilated(x, kernel.astype(x.dtype), (2, 2), ((1, 1), (1, 1)),
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def conv4x4s2_xla_forward(x: jax.Array, kernel: jax.Array, conv: Conv) -> jax.Array:
  """:func:`conv4x4s2`: values by XLA's stride-2 conv, gradients those of the 2x2 form.

  On XLA:CPU the strided conv's forward (exact FLOPs) beats the 2x2 conv on the
  padded ``(h+1) x (w+1)`` space-to-depth grid, while its autodiff gradients are slower
  than the 2x2 form's (``conv``, e.g. :func:`jaxlatent.ops.conv2x2.conv2x2_gemm_grad`).
  """
  return conv4x4s2_xla(x, kernel)


def _xla_forward_fwd(x, kernel, conv):
  return conv4x4s2_xla(x, kernel), (x, kernel)


def _xla_forward_bwd(conv, res, dy):
  x, kernel = res
  # Only the 2x2 form's residuals and backward survive: its forward conv is unused.
  return jax.vjp(lambda a, k: conv4x4s2(a, k, conv), x, kernel)[1](dy)


conv4x4s2_xla_forward.defvjp(_xla_forward_fwd, _xla_forward_bwd)


def kernel_from_torch_transpose(weight) -> np.ndarray:
  """PyTorch ``ConvTranspose2d.weight`` ``[C, F, kh, kw]`` -> ``[kh, kw, C, F]``."""
  return np.ascontiguousarray(np.asarray(weight).transpose(2, 3, 0, 1))


def kernel_to_torch_transpose(kernel) -> np.ndarray:
  """Inverse of :func:`kernel_from_torch_transpose`."""
  return np.ascontiguousarray(np.asarray(kernel).transpose(2, 3, 0, 1))


def kernel_from_torch_conv(weight) -> np.ndarray:
  """PyTorch ``Conv2d.weight`` ``[F, C, kh, kw]`` -> ``[kh, kw, C, F]`` (flax's HWIO)."""
  return np.ascontiguousarray(np.asarray(weight).transpose(2, 3, 1, 0))


def kernel_to_torch_conv(kernel) -> np.ndarray:
  """Inverse of :func:`kernel_from_torch_conv`."""
  return np.ascontiguousarray(np.asarray(kernel).transpose(3, 2, 0, 1))


# Where 2x2-conv GEMM gradients apply (XLA:CPU, conv_grad 'auto' or 'gemm'), stride-2
# convs with outputs up to this size run as XLA's strided conv with its autodiff
# gradients (conv4x4s2_xla), as do those with too few input channels for GEMM gradients.
XLA_CONV_MAX_SIZE = 4


def transpose_form(in_size: int, in_channels: int, features: int, conv_grad: str = "auto",
                   matmul_dtype: str = "float32") -> Conv:
  """The ``(x, kernel) -> y`` form of :func:`conv_transpose4x4s2` that
  :class:`ConvTranspose4x4` runs on ``[B, in_size, in_size, in_channels]`` inputs."""
  conv = conv2x2_form(conv_grad, matmul_dtype, in_channels)
  if matmul_dtype != "float32":
    return lambda x, k: conv_transpose4x4s2(x, k, conv)
  taps = features <= TAP_MAX_FEATURES or in_size <= TAP_MAX_SIZE
  if use_gemm_grad(conv_grad, in_channels):
    return conv_transpose4x4s2_taps_gemm_grad if taps else conv_transpose4x4s2_gemm_grad
  if taps:
    return conv_transpose4x4s2_taps
  return lambda x, k: conv_transpose4x4s2(x, k, conv)


def conv_form(in_size: int, in_channels: int, features: int, conv_grad: str = "auto",
              matmul_dtype: str = "float32") -> Conv:
  """The ``(x, kernel) -> y`` form of :func:`conv4x4s2` that :class:`Conv4x4` runs on
  ``[B, in_size, in_size, in_channels]`` inputs (``features``: output channels)."""
  del features  # every form suits any width
  conv = conv2x2_form(conv_grad, matmul_dtype, 4 * in_channels)
  if matmul_dtype != "float32":
    return lambda x, k: conv4x4s2(x, k, conv)
  out_size = in_size // 2
  # Whether the backend and conv_grad take GEMM gradients (for a conv wide enough).
  gemm = use_gemm_grad(conv_grad, GEMM_GRAD_MIN_CHANNELS)
  if gemm and (out_size <= XLA_CONV_MAX_SIZE or 4 * in_channels < GEMM_GRAD_MIN_CHANNELS):
    return conv4x4s2_xla
  if gemm:
    return lambda x, k: conv4x4s2_xla_forward(x, k, conv)
  if out_size <= TAP_MAX_SIZE:
    return conv4x4s2_patches
  return lambda x, k: conv4x4s2(x, k, conv)


class _Layer4x4(nn.Module):
  """The attributes (see :class:`ConvTranspose4x4`) and ``[4, 4, C, F]`` kernel of the
  stride-2 4x4 layers."""

  features: int
  kernel_init: Callable = nn.initializers.normal(0.02)
  conv_grad: str = "auto"
  matmul_dtype: str = "float32"

  def _kernel(self, c: int) -> jax.Array:
    return self.param("kernel", self.kernel_init, (4, 4, c, self.features))


class ConvTranspose4x4(_Layer4x4):
  """``ConvTranspose2d(C, features, 4, 2, 1, bias=False)`` as :func:`conv_transpose4x4s2`
  in the form :func:`transpose_form` picks.

  Attributes:
    features: output channels F.
    kernel_init: initialiser of the ``[4, 4, C, F]`` kernel.
    conv_grad, matmul_dtype: the 2x2 conv's form (:func:`conv2x2_form`).
  """

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    c = x.shape[-1]
    kernel = self._kernel(c)
    form = transpose_form(x.shape[1], c, self.features, self.conv_grad, self.matmul_dtype)
    return form(x, kernel.astype(x.dtype) if self.matmul_dtype == "float32" else kernel)


class Conv4x4(_Layer4x4):
  """``Conv2d(C, features, 4, 2, 1, bias=False)`` as :func:`conv4x4s2` in the form
  :func:`conv_form` picks (attributes as :class:`ConvTranspose4x4`)."""

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    c = x.shape[-1]
    kernel = self._kernel(c)
    form = conv_form(x.shape[1], c, self.features, self.conv_grad, self.matmul_dtype)
    return form(x, kernel.astype(x.dtype) if self.matmul_dtype == "float32" else kernel)
