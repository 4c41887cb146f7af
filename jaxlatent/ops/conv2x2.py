"""The 2x2 'SAME' conv of sub-pixel up-sampling and space-to-depth down-sampling.

On XLA:CPU the 2x2 conv's input- and kernel-gradient convolutions are slower than
its forward conv, so :func:`conv2x2_gemm_grad` back-propagates through two GEMMs; a
conv to <= 4 channels (a generator's ``to_image``) also runs forward as one GEMM over
its taps.  With ``matmul_dtype='bfloat16'`` the conv runs entirely as GEMMs on
bfloat16 operands with float32 accumulation (:func:`conv2x2_bf16`), the mixed
precision that XLA:CPU runs on bfloat16 hardware.  :class:`Conv2x2` picks the form.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxlatent.errors import ConfigError


CONV_GRADS = ("auto", "xla", "gemm")
# Below this many input channels the kernel-gradient GEMM is too thin to beat XLA's
# conv (the first discriminator layer sees 4 channels after space-to-depth).
GEMM_GRAD_MIN_CHANNELS = 16


def conv2x2(x: jax.Array, kernel: jax.Array, preferred_element_type=None) -> jax.Array:
  """2x2 'SAME' conv, NHWC / HWIO, as ``nn.Conv`` pads it: 0 before, 1 after."""
  return jax.lax.conv_general_dilated(x, kernel, (1, 1), ((0, 1), (0, 1)),
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                      preferred_element_type=preferred_element_type)


def _patches2x2(x: jax.Array) -> jax.Array:
  """``[B, H, W, C]`` -> ``[B, H, W, 4C]``: the 2x2 'SAME' window of each pixel, (i, j, C)."""
  b, h, w, c = x.shape
  xp = jnp.pad(x, ((0, 0), (0, 1), (0, 1), (0, 0)))
  # A stack on a new axis: XLA:CPU copies it faster than a concatenate on C.
  taps = jnp.stack([xp[:, i:i + h, j:j + w] for i in range(2) for j in range(2)], axis=3)
  return taps.reshape(b, h, w, 4 * c)


def _dy_taps(dy: jax.Array) -> jax.Array:
  """``dP[b, h, w, (i, j), f] = dy[b, h - i, w - j, f]`` (zero outside), ``[N, 4F]``."""
  b, h, w, f = dy.shape
  dyp = jnp.pad(dy, ((0, 0), (1, 0), (1, 0), (0, 0)))
  taps = [dyp[:, 1 - i:1 - i + h, 1 - j:1 - j + w] for i in range(2) for j in range(2)]
  return jnp.stack(taps, axis=3).reshape(b * h * w, 4 * f)


# Up to this many output channels the forward 2x2 conv runs as :func:`_conv2x2_tap_gemm`
# (a generator's to_image layer: 4 = 2x2 sub-pixels of one image channel).
TAP_GEMM_MAX_FEATURES = 4


def _conv2x2_tap_gemm(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """:func:`conv2x2` as one GEMM and a sum of shifted slices: every pixel's products
  with all four taps, ``T = x @ K`` (``[N, C] @ [C, 4F]``), then ``y[h, w] = sum_ij
  T[h + i, w + j, (i, j)]``.  For few outputs XLA:CPU's conv is slow; from 8 outputs
  the shifted sum costs more than the conv saves, so only for <= 4."""
  b, h, w, c = x.shape
  f = kernel.shape[-1]
  taps = jnp.matmul(x.reshape(-1, c), kernel.transpose(2, 0, 1, 3).reshape(c, 4 * f),
                    precision=jax.lax.Precision.HIGHEST).reshape(b, h, w, 2, 2, f)
  taps = jnp.pad(taps, ((0, 0), (0, 1), (0, 1), (0, 0), (0, 0), (0, 0)))
  return (taps[:, :h, :w, 0, 0] + taps[:, :h, 1:w + 1, 0, 1]
          + taps[:, 1:h + 1, :w, 1, 0] + taps[:, 1:h + 1, 1:w + 1, 1, 1])


def _conv2x2_forward(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """The forward of :func:`conv2x2_gemm_grad` (a CPU path): the tap GEMM for thin
  outputs, XLA's conv otherwise."""
  if kernel.shape[-1] <= TAP_GEMM_MAX_FEATURES:
    return _conv2x2_tap_gemm(x, kernel)
  return conv2x2(x, kernel)


@jax.custom_vjp
def conv2x2_gemm_grad(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """:func:`conv2x2` (XLA's forward conv) whose gradients are two GEMMs.

  With ``dP[b, h, w, (i, j), f] = dy[b, h - i, w - j, f]`` (zero outside), the kernel
  gradient is ``x^T dP`` (``[C, N] @ [N, 4F]``, N = B H W) and the input gradient
  ``dP W^T`` (``[N, 4F] @ [4F, C]``).  On XLA:CPU these run faster than the autodiff
  convolutions; same values up to float rounding.
  With <= ``TAP_GEMM_MAX_FEATURES`` outputs the forward is :func:`_conv2x2_tap_gemm`.
  """
  return _conv2x2_forward(x, kernel)


def _conv2x2_fwd(x, kernel):
  return _conv2x2_forward(x, kernel), (x, kernel)


def _conv2x2_gemm_grads(x: jax.Array, kernel: jax.Array, dy: jax.Array,
                        bf16: bool = False) -> tuple[jax.Array, jax.Array]:
  """(dx, dk) of :func:`conv2x2` as the GEMMs ``dP W^T`` and ``x^T dP``, in float32.

  ``bf16``: bfloat16 operands (``x``, ``kernel``, ``dy`` already bfloat16), float32
  accumulation, the kernel gradient's long contraction split into row chunks.
  """
  b, h, w, c = x.shape
  f = kernel.shape[-1]
  n = b * h * w
  dp = _dy_taps(dy)  # [N, (i, j, F)]
  if bf16:
    chunks = n // BF16_KERNEL_GRAD_ROWS if n % BF16_KERNEL_GRAD_ROWS == 0 else 1
    xc = jnp.swapaxes(x.reshape(chunks, n // chunks, c), 1, 2)  # [k, C, N/k]
    dk = jnp.einsum("kcn,knf->cf", xc, dp.reshape(chunks, n // chunks, 4 * f),
                    preferred_element_type=jnp.float32)  # [C, 4F]
    matmul = functools.partial(jnp.matmul, preferred_element_type=jnp.float32)
  else:
    matmul = functools.partial(jnp.matmul, precision=jax.lax.Precision.HIGHEST)
    dk = matmul(x.reshape(n, c).T, dp)  # [C, 4F]
  dk = dk.reshape(c, 2, 2, f).transpose(1, 2, 0, 3)  # [2, 2, C, F]
  w_t = kernel.transpose(0, 1, 3, 2).reshape(4 * f, c)  # [(i, j, F), C]
  return matmul(dp, w_t).reshape(b, h, w, c), dk


def _conv2x2_bwd(res, dy):
  x, kernel = res
  dx, dk = _conv2x2_gemm_grads(x, kernel, dy)
  return dx.astype(x.dtype), dk.astype(kernel.dtype)


conv2x2_gemm_grad.defvjp(_conv2x2_fwd, _conv2x2_bwd)


MATMUL_DTYPES = ("float32", "bfloat16")
# Rows of the kernel-gradient contraction per chunk: XLA:CPU's bfloat16 GEMM reaches its
# avx512_bf16 speed on a [C, rows] x [rows, 4F] product only when the long contraction is
# split into a batch of chunks.
BF16_KERNEL_GRAD_ROWS = 1024


def _bf16_dot(a: jax.Array, b: jax.Array) -> jax.Array:
  return jnp.matmul(a.astype(jnp.bfloat16), b.astype(jnp.bfloat16),
                    preferred_element_type=jnp.float32)


def conv2x2_bf16(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """:func:`conv2x2` with bfloat16 operands and float32 accumulation, as GEMMs.

  Mixed precision for XLA:CPU: a GEMM with bfloat16 operands and a float32 result uses
  the CPU's bfloat16 dot-product instructions (avx512_bf16, AMX) and runs faster than
  a float32 GEMM, while XLA:CPU's convolutions do not take that path.  The
  forward is the 2x2 patches times the kernel, the gradients are the GEMMs of
  :func:`conv2x2_gemm_grad`.  Operands are rounded to bfloat16 (8-bit mantissa), so
  outputs and gradients differ from float32 by a few parts per thousand; accumulation, outputs
  and gradients are float32 (inputs of any float dtype get gradients of their dtype).
  """
  return _conv2x2_bf16_f32(x.astype(jnp.float32), kernel.astype(jnp.float32))


@jax.custom_vjp
def _conv2x2_bf16_f32(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """:func:`conv2x2_bf16` on float32 inputs (so its gradients are float32 too)."""
  b, h, w, c = x.shape
  y = _bf16_dot(_patches2x2(x.astype(jnp.bfloat16)).reshape(-1, 4 * c),
                kernel.reshape(4 * c, -1))
  return y.reshape(b, h, w, -1)


def _conv2x2_bf16_fwd(x, kernel):
  return _conv2x2_bf16_f32(x, kernel), (x.astype(jnp.bfloat16), kernel.astype(jnp.bfloat16))


def _conv2x2_bf16_bwd(res, dy):
  x, kernel = res  # bfloat16
  return _conv2x2_gemm_grads(x, kernel, dy.astype(jnp.bfloat16), bf16=True)


_conv2x2_bf16_f32.defvjp(_conv2x2_bf16_fwd, _conv2x2_bf16_bwd)


def check_matmul_dtype(matmul_dtype: str) -> None:
  """Raises ConfigError naming ``model.matmul_dtype`` unless it is one of MATMUL_DTYPES."""
  if matmul_dtype not in MATMUL_DTYPES:
    raise ConfigError(f"model.matmul_dtype={matmul_dtype!r}: expected one of {MATMUL_DTYPES}")


def check_conv_grad(conv_grad: str) -> None:
  """Raises ConfigError naming ``model.conv_grad`` when it is not one of CONV_GRADS."""
  if conv_grad not in CONV_GRADS:
    raise ConfigError(f"model.conv_grad={conv_grad!r}: expected one of {CONV_GRADS}")


def use_gemm_grad(conv_grad: str, in_channels: int) -> bool:
  """Whether a 2x2 conv back-propagates through GEMMs (``conv_grad`` 'auto': on CPU)."""
  check_conv_grad(conv_grad)
  if conv_grad == "auto":
    return jax.default_backend() == "cpu" and in_channels >= GEMM_GRAD_MIN_CHANNELS
  return conv_grad == "gemm"


def conv2x2_form(conv_grad: str, matmul_dtype: str, in_channels: int):
  """The ``(x, kernel) -> y`` form of :func:`conv2x2` that ``conv_grad`` and
  ``matmul_dtype`` select for ``in_channels`` inputs (what :class:`Conv2x2` runs)."""
  check_matmul_dtype(matmul_dtype)
  gemm = use_gemm_grad(conv_grad, in_channels)
  if matmul_dtype == "bfloat16":
    if gemm:
      return conv2x2_bf16
    return lambda a, k: conv2x2(a.astype(jnp.bfloat16), k.astype(jnp.bfloat16), jnp.float32)
  return conv2x2_gemm_grad if gemm else conv2x2


class Conv2x2(nn.Module):
  """``nn.Conv(features, (2, 2), padding='SAME')`` with the same parameters (names,
  shapes, initialisers), back-propagating through GEMMs where :func:`use_gemm_grad`.

  ``matmul_dtype='bfloat16'``: mixed precision, bfloat16 operands and float32
  accumulation (:func:`conv2x2_bf16` where GEMMs are used, else XLA's conv on
  bfloat16 operands); parameters, outputs and gradients stay float32.
  """

  features: int
  use_bias: bool = True
  conv_grad: str = "auto"
  matmul_dtype: str = "float32"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    c = x.shape[-1]
    kernel = self.param("kernel", nn.initializers.lecun_normal(), (2, 2, c, self.features))
    y = conv2x2_form(self.conv_grad, self.matmul_dtype, c)(x, kernel.astype(x.dtype))
    if self.use_bias:
      y = y + self.param("bias", nn.initializers.zeros, (self.features,))
    return y
