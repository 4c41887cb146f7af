"""Building blocks shared by the DCGAN and the VAE: resampling and channel schedules.

On XLA:CPU a ``ConvTranspose`` is several times slower than a plain conv (see
DESIGN.md, "Performance notes"), so the default up-sampling is *sub-pixel*:
a conv to ``4 * C`` channels followed by depth-to-space (the same FLOPs as a
4x4 stride-2 transposed conv with a 2x2 kernel), and the default down-sampling is
space-to-depth followed by a conv.  The other modes are kept for comparison.

Those 2x2 convs back-propagate through GEMMs on CPU (:func:`conv2x2_gemm_grad`):
XLA:CPU's own input- and kernel-gradient convolutions are slower than its forward
conv at these shapes (see benchmarks/RESULTS.md); a conv to <= 4 channels (a
generator's ``to_image``) also runs forward as one GEMM over its taps.  With
``matmul_dtype='bfloat16'``
they run entirely as GEMMs on bfloat16 operands with float32 accumulation
(:func:`conv2x2_bf16`), the mixed precision that XLA:CPU runs on bfloat16 hardware.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Literal

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxlatent.errors import ConfigError
from jaxlatent.models import norm

UpsampleMode = Literal["subpixel", "resize", "transpose"]
DownsampleMode = Literal["space_to_depth", "strided", "avgpool"]
UPSAMPLE_MODES = ("subpixel", "resize", "transpose")
DOWNSAMPLE_MODES = ("space_to_depth", "strided", "avgpool")


def depth_to_space(x: jax.Array, r: int = 2) -> jax.Array:
  """Rearranges channels into ``r x r`` spatial blocks (TF ``depth_to_space``, NHWC).

  ``[B, H, W, r*r*C] -> [B, H*r, W*r, C]``; output pixel ``(h*r + i, w*r + j, c)``
  is input channel ``(i*r + j)*C + c`` at ``(h, w)``.
  """
  b, h, w, c = x.shape
  if c % (r * r):
    raise ValueError(f"depth_to_space: channels {c} not divisible by r*r={r * r}")
  oc = c // (r * r)
  x = x.reshape(b, h, w, r, r, oc)  # [B, H, W, i, j, C]
  x = x.transpose(0, 1, 3, 2, 4, 5)  # [B, H, i, W, j, C]
  return x.reshape(b, h * r, w * r, oc)


def space_to_depth(x: jax.Array, r: int = 2) -> jax.Array:
  """Inverse of :func:`depth_to_space`: ``[B, H, W, C] -> [B, H/r, W/r, r*r*C]``."""
  b, h, w, c = x.shape
  if h % r or w % r:
    raise ValueError(f"space_to_depth: spatial size {(h, w)} not divisible by {r}")
  x = x.reshape(b, h // r, r, w // r, r, c)  # [B, H/r, i, W/r, j, C]
  x = x.transpose(0, 1, 3, 2, 4, 5)  # [B, H/r, W/r, i, j, C]
  return x.reshape(b, h // r, w // r, r * r * c)


def _pool_windows(x: jax.Array):
  """The four members of every 2x2 window (row-major), each ``[B, H/2, W/2, C]``."""
  b, h, w, c = x.shape
  r = x[:, :2 * (h // 2), :2 * (w // 2)].reshape(b, h // 2, 2, w // 2, 2, c)
  return r[:, :, 0, :, 0], r[:, :, 0, :, 1], r[:, :, 1, :, 0], r[:, :, 1, :, 1]


def _max_pool_2x2_argmax(x: jax.Array):
  """Window maxima and the row-major index (0-3) of each window's first maximum."""
  return _first_max_of_four(*_pool_windows(x))


def _first_max_of_four(a, b, c, d):
  """Elementwise maximum of four arrays and the index (0-3) of the first maximum."""
  top, top_i = jnp.maximum(a, b), jnp.where(b > a, 1, 0).astype(jnp.int8)
  bot, bot_i = jnp.maximum(c, d), jnp.where(d > c, 3, 2).astype(jnp.int8)
  return jnp.maximum(top, bot), jnp.where(bot > top, bot_i, top_i)


@jax.custom_vjp
def max_pool_2x2(x: jax.Array) -> jax.Array:
  """``nn.max_pool(x, (2, 2), strides=(2, 2))`` (VALID): same values and gradients.

  The gradient goes to each window's first maximum, as XLA's select-and-scatter does,
  but as one elementwise pass over a stored argmax: on XLA:CPU select-and-scatter
  (or a reduce's tie counting) takes 5-10x longer (a 128 x 64 x 64 x 6 pool: 79 vs
  ~13 ms fwd+bwd, 1 core; ~6 ms since the one-pass backward).
  """
  return _max_pool_2x2_argmax(x)[0]


def _max_pool_fwd(x):
  m, idx = _max_pool_2x2_argmax(x)
  return m, (idx, x.shape)


def _max_pool_bwd(res, g):
  idx, shape = res
  b, h, w, c = shape
  # One elementwise pass over [B, h, 2, w, 2, C] (a free reshape of the input's
  # shape): window position 2i + j takes g where it held the maximum.  Stacking four
  # masked copies instead took 3.2x longer (128 x 64 x 64 x 6: 3.1 vs 1.0 ms, 1 core).
  pos = (2 * np.arange(2)[:, None] + np.arange(2)[None, :]).astype(np.int8)
  hit = idx[:, :, None, :, None, :] == pos[None, None, :, None, :, None]
  dx = jnp.where(hit, g[:, :, None, :, None, :], 0).astype(g.dtype)
  dx = dx.reshape(b, 2 * (h // 2), 2 * (w // 2), c)
  return (jnp.pad(dx, ((0, 0), (0, h % 2), (0, w % 2), (0, 0))),)


max_pool_2x2.defvjp(_max_pool_fwd, _max_pool_bwd)


@jax.custom_vjp
def affine_max_pool_blocks(blocks: jax.Array, a: jax.Array, s: jax.Array) -> jax.Array:
  """The 2x2 max-pool of ``blocks * a + s`` over 2x2 blocks ``[B, h, w, 4, C]`` (the
  maximum over axis 3, i.e. :func:`max_pool_2x2` of :func:`blocks_to_image`) for a
  per-sample, per-channel affine map (``a``, ``s``: ``[B, C]``), as ``a * x_sel + s``
  with ``x_sel`` the member the map makes largest: the first maximum of ``x`` where
  ``a >= 0``, the first minimum where ``a < 0``.  The gradient goes to that member.

  The member's index comes from a reduction (``argmax``), which XLA:CPU stores;
  comparisons written elementwise it fused into every consumer and redid there
  per block member.
  """
  return _affine_max_pool_blocks_fwd(blocks, a, s)[0]


def _affine_max_pool_blocks_fwd(blocks, a, s):
  sign = jnp.where(a >= 0, 1, -1).astype(blocks.dtype)[:, None, None, :]  # [B, 1, 1, C]
  flipped = blocks * sign[:, :, :, None]
  idx = jnp.argmax(flipped, axis=3).astype(jnp.int8)  # [B, h, w, C]
  selected = jnp.max(flipped, axis=3) * sign
  return selected * a[:, None, None] + s[:, None, None], (idx, selected, a)


def _affine_max_pool_blocks_bwd(res, g):
  idx, selected, a = res
  d_a = norm.sum_spatial(g * selected)
  d_s = norm.sum_spatial(g)
  hit = idx[:, :, :, None, :] == np.arange(4, dtype=np.int8)[:, None]
  d_blocks = jnp.where(hit, (g * a[:, None, None])[:, :, :, None, :], 0)
  return d_blocks.astype(selected.dtype), d_a.astype(a.dtype), d_s.astype(a.dtype)


affine_max_pool_blocks.defvjp(_affine_max_pool_blocks_fwd, _affine_max_pool_blocks_bwd)


def group_norm_relu_max_pool_blocks(blocks: jax.Array, scale: jax.Array, bias: jax.Array,
                                    num_groups: int, epsilon: float = 1e-6) -> jax.Array:
  """GroupNorm -> ReLU -> 2x2 max-pool of 2x2 blocks ``[B, h, w, 4, C]``
  (:func:`conv_same_blocks`) -> ``[B, h, w, C]``, the norm and ReLU on the pooled
  array.

  GroupNorm is a per-sample, per-channel affine map, and an affine map of either sign
  and the ReLU commute with the max (:func:`affine_max_pool_blocks`), so only the
  statistics and the pool read all the blocks.  The statistics are differentiated by
  autodiff (float32 gradients within 1e-4 of float64 at mean 100, std 0.5).  The
  backward pass is then one pass over the blocks instead of the norm recomputed in
  four (the LeNet reconstructor's first layer: 128 x 64^2 x 6, ~2x faster; benchmarks/
  RESULTS.md, case 3).  Same values and gradients up to float rounding.
  """
  c = blocks.shape[-1]
  mean, rstd = norm.group_statistics(blocks, num_groups, epsilon)
  a = norm.per_channel(rstd, c) * scale
  s = bias - norm.per_channel(mean, c) * a
  return jax.nn.relu(affine_max_pool_blocks(blocks, a, s))


class GroupNormReluMaxPool(norm.GroupNorm):
  """:class:`norm.GroupNorm` (the same parameters), ReLU and a 2x2 max-pool of 2x2
  blocks ``[B, h, w, 4, C]`` -> ``[B, h, w, C]``, through
  :func:`group_norm_relu_max_pool_blocks`."""

  @nn.compact
  def __call__(self, blocks: jax.Array) -> jax.Array:
    if blocks.ndim != 5 or blocks.shape[3] != 4:
      raise ValueError(f"GroupNormReluMaxPool: expected 2x2 blocks [B, h, w, 4, C], "
                       f"got shape {blocks.shape}")
    scale, bias = self._scale_and_bias(blocks.shape[-1])
    return group_norm_relu_max_pool_blocks(blocks, scale, bias, self.num_groups,
                                           self.epsilon)


def channels_at(res: int, channels_at_4: int, max_channels: int) -> int:
  """Channels at resolution ``res``: ``channels_at_4`` at 4x4, halving per doubling.

  Capped at ``max_channels`` and floored at 1 (DCGAN: 4x4x2048 -> 8x8x1024 -> ...).
  """
  return int(max(1, min(max_channels, (channels_at_4 * 4) // res)))


def check_image_size(image_size: int, minimum: int = 16, key: str = "image_size") -> int:
  """Raises ConfigError unless ``image_size`` is a power of two >= ``minimum``."""
  s = int(image_size)
  if s < minimum or s & (s - 1):
    raise ConfigError(f"{key}={image_size}: must be a power of two >= {minimum}")
  return s


CONV_GRADS = ("auto", "xla", "gemm")
# Below this many input channels the kernel-gradient GEMM is too thin to beat XLA's
# conv (the first discriminator layer sees 4 channels after space-to-depth).
GEMM_GRAD_MIN_CHANNELS = 16


def _conv2x2(x: jax.Array, kernel: jax.Array, preferred_element_type=None) -> jax.Array:
  """2x2 'SAME' conv, NHWC / HWIO, as ``nn.Conv`` pads it: 0 before, 1 after."""
  return jax.lax.conv_general_dilated(x, kernel, (1, 1), ((0, 1), (0, 1)),
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                      preferred_element_type=preferred_element_type)


def _patches2x2(x: jax.Array) -> jax.Array:
  """``[B, H, W, C]`` -> ``[B, H, W, 4C]``: the 2x2 'SAME' window of each pixel, (i, j, C)."""
  b, h, w, c = x.shape
  xp = jnp.pad(x, ((0, 0), (0, 1), (0, 1), (0, 0)))
  # A stack on a new axis: XLA:CPU copies it ~1.7x faster than a concatenate on C.
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
  """:func:`_conv2x2` as one GEMM and a sum of shifted slices: every pixel's products
  with all four taps, ``T = x @ K`` (``[N, C] @ [C, 4F]``), then ``y[h, w] = sum_ij
  T[h + i, w + j, (i, j)]``.  For few outputs XLA:CPU's conv is slow (a 128 x 32^2
  x 16 -> 4 conv: 8.8 ms against 5.1 ms this way, 1 core); from 8 outputs the
  shifted sum is the slower part (12 against 29 ms), so only for <= 4."""
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
  return _conv2x2(x, kernel)


@jax.custom_vjp
def conv2x2_gemm_grad(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """:func:`_conv2x2` (XLA's forward conv) whose gradients are two GEMMs.

  With ``dP[b, h, w, (i, j), f] = dy[b, h - i, w - j, f]`` (zero outside), the kernel
  gradient is ``x^T dP`` (``[C, N] @ [N, 4F]``, N = B H W) and the input gradient
  ``dP W^T`` (``[N, 4F] @ [4F, C]``).  On XLA:CPU these run 10-25% faster than the
  autodiff convolutions (benchmarks/RESULTS.md); same values up to float rounding.
  With <= ``TAP_GEMM_MAX_FEATURES`` outputs the forward is :func:`_conv2x2_tap_gemm`.
  """
  return _conv2x2_forward(x, kernel)


def _conv2x2_fwd(x, kernel):
  return _conv2x2_forward(x, kernel), (x, kernel)


def _conv2x2_gemm_grads(x: jax.Array, kernel: jax.Array, dy: jax.Array,
                        bf16: bool = False) -> tuple[jax.Array, jax.Array]:
  """(dx, dk) of :func:`_conv2x2` as the GEMMs ``dP W^T`` and ``x^T dP``, in float32.

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
# split into a batch of chunks (benchmarks/RESULTS.md, "Mixed precision").
BF16_KERNEL_GRAD_ROWS = 1024


def _bf16_dot(a: jax.Array, b: jax.Array) -> jax.Array:
  return jnp.matmul(a.astype(jnp.bfloat16), b.astype(jnp.bfloat16),
                    preferred_element_type=jnp.float32)


def conv2x2_bf16(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """:func:`_conv2x2` with bfloat16 operands and float32 accumulation, as GEMMs.

  Mixed precision for XLA:CPU: a GEMM with bfloat16 operands and a float32 result uses
  the CPU's bfloat16 dot-product instructions (avx512_bf16, AMX) and runs up to ~1.8x
  faster than a float32 GEMM, while XLA:CPU's convolutions do not take that path.  The
  forward is the 2x2 patches times the kernel, the gradients are the GEMMs of
  :func:`conv2x2_gemm_grad`.  Operands are rounded to bfloat16 (8-bit mantissa), so
  outputs and gradients differ from float32 by ~0.3% relative; accumulation, outputs
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
    check_matmul_dtype(self.matmul_dtype)
    gemm = use_gemm_grad(self.conv_grad, c)
    if self.matmul_dtype == "bfloat16":
      conv = conv2x2_bf16 if gemm else lambda a, k: _conv2x2(
          a.astype(jnp.bfloat16), k.astype(jnp.bfloat16), jnp.float32)
    else:
      conv = conv2x2_gemm_grad if gemm else _conv2x2
    y = conv(x, kernel.astype(x.dtype))
    if self.use_bias:
      y = y + self.param("bias", nn.initializers.zeros, (self.features,))
    return y


def _resample_conv(features: int, kernel_size: int, use_bias: bool, conv_grad: str,
                   matmul_dtype: str = "float32"):
  """The conv of 'subpixel' / 'space_to_depth' (named 'conv' in either form)."""
  if kernel_size == 2:
    return Conv2x2(features, use_bias=use_bias, conv_grad=conv_grad,
                   matmul_dtype=matmul_dtype, name="conv")
  return nn.Conv(features, (kernel_size, kernel_size), padding="SAME", use_bias=use_bias,
                 name="conv")


class Upsample(nn.Module):
  """Doubles the spatial size and maps to ``features`` channels.

  Attributes:
    features: output channels.
    mode: 'subpixel' (conv to 4*features, then depth-to-space), 'resize' (nearest
      resize, then 3x3 conv) or 'transpose' (4x4 stride-2 ``nn.ConvTranspose``).
    kernel_size: the conv kernel of 'subpixel' (2: same FLOPs as the transposed conv).
    use_bias: whether the conv has a bias (False before a BatchNorm).
    conv_grad: gradient of the 2x2 conv: 'auto' (GEMMs on CPU), 'xla' or 'gemm'.
    matmul_dtype: operands of the 2x2 conv, 'float32' or 'bfloat16' (see Conv2x2).
  """

  features: int
  mode: str = "subpixel"
  kernel_size: int = 2
  use_bias: bool = True
  conv_grad: str = "auto"
  matmul_dtype: str = "float32"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    b, h, w, _ = x.shape
    if self.mode == "subpixel":
      x = _resample_conv(4 * self.features, self.kernel_size, self.use_bias,
                         self.conv_grad, self.matmul_dtype)(x)  # [B, H, W, 4F]
      return depth_to_space(x, 2)  # [B, 2H, 2W, F]
    if self.mode == "resize":
      x = jax.image.resize(x, (b, 2 * h, 2 * w, x.shape[-1]), "nearest")
      return nn.Conv(self.features, (3, 3), padding="SAME", use_bias=self.use_bias,
                     name="conv")(x)
    if self.mode == "transpose":
      return nn.ConvTranspose(self.features, (4, 4), strides=(2, 2), padding="SAME",
                              use_bias=self.use_bias, name="conv")(x)
    raise ConfigError(f"model.upsample={self.mode!r}: expected one of {UPSAMPLE_MODES}")


class Downsample(nn.Module):
  """Halves the spatial size and maps to ``features`` channels.

  Attributes:
    features: output channels.
    mode: 'space_to_depth' (space-to-depth, then a ``kernel_size`` conv), 'strided'
      (4x4 stride-2 conv, padding 1: the DCGAN layer) or 'avgpool' (2x2 mean, 3x3 conv).
    kernel_size: the conv kernel of 'space_to_depth' (2: same FLOPs as 'strided').
    use_bias: whether the conv has a bias.
    conv_grad: gradient of the 2x2 conv: 'auto' (GEMMs on CPU), 'xla' or 'gemm'.
    matmul_dtype: operands of the 2x2 conv, 'float32' or 'bfloat16' (see Conv2x2).
  """

  features: int
  mode: str = "space_to_depth"
  kernel_size: int = 2
  use_bias: bool = True
  conv_grad: str = "auto"
  matmul_dtype: str = "float32"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    if self.mode == "space_to_depth":
      x = space_to_depth(x, 2)  # [B, H/2, W/2, 4C]
      return _resample_conv(self.features, self.kernel_size, self.use_bias, self.conv_grad,
                            self.matmul_dtype)(x)
    if self.mode == "strided":
      return nn.Conv(self.features, (4, 4), strides=(2, 2), padding=((1, 1), (1, 1)),
                     use_bias=self.use_bias, name="conv")(x)
    if self.mode == "avgpool":
      x = nn.avg_pool(x, (2, 2), strides=(2, 2))
      return nn.Conv(self.features, (3, 3), padding="SAME", use_bias=self.use_bias,
                     name="conv")(x)
    raise ConfigError(f"model.downsample={self.mode!r}: expected one of {DOWNSAMPLE_MODES}")


def check_resample_modes(upsample: str | None = None, downsample: str | None = None) -> None:
  """Raises ConfigError naming the key when a resampling mode is unknown."""
  if upsample is not None and upsample not in UPSAMPLE_MODES:
    raise ConfigError(f"model.upsample={upsample!r}: expected one of {UPSAMPLE_MODES}")
  if downsample is not None and downsample not in DOWNSAMPLE_MODES:
    raise ConfigError(f"model.downsample={downsample!r}: expected one of {DOWNSAMPLE_MODES}")


def group_norm(features: int, name: str | None = None) -> norm.GroupNorm:
  """GroupNorm with up to 8 groups that divide ``features`` (batch-independent)."""
  groups = 1
  for g in (8, 4, 2):
    if features % g == 0:
      groups = g
      break
  return norm.GroupNorm(num_groups=groups, name=name)


@dataclasses.dataclass(frozen=True)
class ModuleApply:
  """A hashable ``(variables, x) -> module.apply(variables, x, method=..., **kwargs)``.

  Two Generators built from equal configs get equal ``apply_fn``s, so passing a
  Generator into a jitted function hits the compile cache instead of retracing.
  """

  module: nn.Module
  method: str | None = None
  kwargs: tuple[tuple[str, Any], ...] = ()

  def __call__(self, variables: Any, x: jax.Array) -> jax.Array:
    kw = dict(self.kwargs)
    if self.method is None:
      return self.module.apply(variables, x, **kw)
    return self.module.apply(variables, x, method=self.method, **kw)


# --------------------------------------------------------------------------------------
# Odd-sized 'SAME' convs (the LeNet reconstructor's 5x5s) on XLA:CPU.
#
# XLA:CPU runs a 5x5 conv with few channels far below its matmul speed (GEMMs with a
# contraction of 25 C and only O outputs): the reconstructor's 2->6 conv at 64x64 takes
# 6x PyTorch's time forward and 2x backward.  On the 2x2 space-to-depth input the same
# conv is a 3x3 conv from 4C to 4O channels (1.44x the multiply-adds, on 4x fatter
# GEMMs): 3-5x faster forward and for the input gradient.  For wider inputs XLA's
# forward and input gradient are as fast as PyTorch's, but its kernel gradient is not;
# there GEMMs over the input's k horizontal shifts, in cache-sized batch chunks, are
# ~4x faster.  The same shift GEMMs on the space-to-depth input and output take the
# 2->6 conv's kernel gradient in half XLA's time (XLA's is faster from ~16 outputs).
# Figures: benchmarks/RESULTS.md, case 3.

CONV_IMPLS = ("auto", "xla", "fast")
# Up to this many input channels the 5x5 conv runs on the space-to-depth input.
S2D_CONV_MAX_CHANNELS = 8


def conv_same(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """Stride-1 'SAME' conv, NHWC / HWIO, odd kernel (XLA's own; as ``nn.Conv``)."""
  return jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME",
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _s2d_taps(k: int):
  """Block offsets and the 0/1 map ``sel[d, a_in, a_out, u]`` from a k-tap axis to a
  2x2-block axis: output pixel ``2P + a_out`` reads input ``2(P + d) + a_in`` through
  tap ``u`` (input = output + u - k // 2)."""
  p = k // 2
  lo, hi = (0 - p) // 2, (1 + k - 1 - p) // 2
  sel = np.zeros((hi - lo + 1, 2, 2, k), np.float32)
  for ao in range(2):
    for u in range(k):
      off = ao + u - p
      sel[off // 2 - lo, off % 2, ao, u] = 1.0
  return lo, hi, sel


def s2d_kernel(kernel: jax.Array) -> jax.Array:
  """A ``[k, k, C, O]`` kernel as the ``[n, n, 4C, 4O]`` kernel of :func:`conv_same_s2d`."""
  k, _, c, o = kernel.shape
  lo, hi, sel = _s2d_taps(k)
  n = hi - lo + 1
  big = jnp.einsum("dpau,eqbv,uvco->depqcabo", sel, sel, kernel,
                   precision=jax.lax.Precision.HIGHEST)
  return big.reshape(n, n, 4 * c, 4 * o)


def _conv_on_s2d(xs: jax.Array, kernel_s2d: jax.Array) -> jax.Array:
  """The n x n 'SAME' conv (n odd) of :func:`conv_same_s2d` on the space-to-depth input."""
  p = kernel_s2d.shape[0] // 2
  return jax.lax.conv_general_dilated(xs, kernel_s2d, (1, 1), ((p, p), (p, p)),
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))


def conv_same_s2d(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """:func:`conv_same` computed on the 2x2 space-to-depth input (H, W even)."""
  return depth_to_space(_conv_on_s2d(space_to_depth(x), s2d_kernel(kernel)))


# Batch chunks of the shift-GEMM kernel gradient hold about this many bytes of the
# shifted copy, so that it is still in cache when its GEMMs read it (1 core, 128 x 16^2
# x 16 -> 120: 75 ms unchunked, 38 ms in chunks of 4 images).
SHIFT_GEMM_CHUNK_BYTES = 512 * 1024
# ... but each chunk's GEMMs get at least this many FLOPs: with several threads, XLA:CPU
# splits every GEMM between them, and thin ones (the reconstructor's first conv: 24 x 24
# outputs, 4.7 MFLOP in chunks of 4 images) then took longer on 2 threads than on one
# (10.8 -> 19.4 ms in the discovery step; chunks of 16 images: 12.4 ms on 1 core as
# before, 8.6 ms on 2 threads).
SHIFT_GEMM_MIN_CHUNK_FLOPS = 20_000_000


def _shift_gemm(x: jax.Array, dy: jax.Array, k: int) -> jax.Array:
  """Kernel gradient of :func:`conv_same` as k GEMMs: for each row tap i,
  ``cols_i^T dy`` with ``cols`` the input's k horizontal shifts side by side."""
  _, h, w, c = x.shape
  p = k // 2
  xp = jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
  cols = jnp.concatenate([xp[:, :, j:j + w] for j in range(k)], axis=-1)  # [B, H+2p, W, kC]
  dyf = dy.reshape(-1, dy.shape[-1])
  rows = [jnp.matmul(cols[:, i:i + h].reshape(-1, k * c).T, dyf,
                     precision=jax.lax.Precision.HIGHEST) for i in range(k)]
  return jnp.stack(rows).reshape(k, k, c, dy.shape[-1])


def shift_gemm_chunk_images(x_shape: tuple[int, ...], k: int, features: int,
                            chunk_bytes: int = SHIFT_GEMM_CHUNK_BYTES,
                            min_chunk_flops: int = SHIFT_GEMM_MIN_CHUNK_FLOPS,
                            itemsize: int = 4) -> int:
  """Images per batch chunk of :func:`_kernel_grad_shift_gemm` for an input
  ``[B, H, W, C]``: about ``chunk_bytes`` of shifted input, or ``min_chunk_flops`` per
  GEMM where that is more; the largest divisor of B that fits."""
  b, h, w, c = x_shape
  per_image = (h + 2 * (k // 2)) * w * k * c * itemsize
  flops_per_image = 2 * h * w * k * c * features  # of one row tap's GEMM
  n = max(chunk_bytes // max(per_image, 1), -(-min_chunk_flops // max(flops_per_image, 1)))
  n = max(1, min(b, n))
  while b % n:
    n -= 1
  return n


def _kernel_grad_shift_gemm(x: jax.Array, dy: jax.Array, k: int,
                            chunk_bytes: int = SHIFT_GEMM_CHUNK_BYTES,
                            min_chunk_flops: int = SHIFT_GEMM_MIN_CHUNK_FLOPS) -> jax.Array:
  """:func:`_shift_gemm` summed over batch chunks (``lax.scan``) of
  :func:`shift_gemm_chunk_images` images each."""
  b, h, w, c = x.shape
  n = shift_gemm_chunk_images(x.shape, k, dy.shape[-1], chunk_bytes, min_chunk_flops,
                              x.dtype.itemsize)
  if n == b:
    return _shift_gemm(x, dy, k)
  xs = x.reshape(b // n, n, h, w, c)
  dys = dy.reshape(b // n, n, h, w, dy.shape[-1])
  init = jnp.zeros((k, k, c, dy.shape[-1]), jnp.float32)
  total, _ = jax.lax.scan(lambda acc, xd: (acc + _shift_gemm(xd[0], xd[1], k), None),
                          init, (xs, dys))
  return total


def _kernel_grad_s2d_shift_gemm(xs: jax.Array, dys: jax.Array, kernel: jax.Array) -> jax.Array:
  """Kernel gradient of :func:`conv_same` through :func:`conv_same_s2d`, from the
  space-to-depth input ``xs`` and output gradient ``dys``: shift GEMMs for the n x n
  conv (n = 3 for k = 5), then back through :func:`s2d_kernel` (linear in the kernel)."""
  _, hi, _ = _s2d_taps(kernel.shape[0])
  dk_s2d = _kernel_grad_shift_gemm(xs, dys, 2 * hi + 1)
  return jax.vjp(s2d_kernel, kernel)[1](dk_s2d)[0]


def conv_same_fast(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """:func:`conv_same` with the fastest XLA:CPU formulation per direction.

  Few input channels (<= ``S2D_CONV_MAX_CHANNELS``) and even H, W: through
  :func:`conv_same_blocks` (the space-to-depth input).  Otherwise: XLA's forward and
  input gradient, the kernel gradient as shift GEMMs.  Same values as
  :func:`conv_same` up to float rounding.
  """
  if _use_s2d(x, kernel):
    return blocks_to_image(conv_same_blocks(x, kernel))
  return _conv_same_wide(x, kernel)


def _use_s2d(x: jax.Array, kernel: jax.Array) -> bool:
  return (x.shape[-1] <= S2D_CONV_MAX_CHANNELS and x.shape[1] % 2 == 0
          and x.shape[2] % 2 == 0 and kernel.shape[0] == kernel.shape[1] == 5)


def blocks_to_image(blocks: jax.Array) -> jax.Array:
  """``[B, h, w, 4, C]`` 2x2 blocks (index 2i + j) -> the ``[B, 2h, 2w, C]`` image."""
  b, h, w, _, c = blocks.shape
  return depth_to_space(blocks.reshape(b, h, w, 4 * c))


@jax.custom_vjp
def conv_same_blocks(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """:func:`conv_same` of ``x [B, H, W, C]`` (H, W even, odd k) as 2x2 output blocks
  ``[B, H/2, W/2, 4, O]``: block member ``2i + j`` at ``(h, w)`` is output pixel
  ``(2h + i, 2w + j)``, the layout the space-to-depth conv produces.

  A following 2x2 max-pool (a maximum over axis 3, as in
  :func:`group_norm_relu_max_pool_blocks`) and any per-channel op
  (GroupNorm, ReLU) then need no depth-to-space copy; XLA:CPU fuses such a copy of a
  6-channel image into the elementwise passes around it, where it runs ~10x slower
  than alone (the LeNet reconstructor spent ~60 of ~290 ms per step there, 1 core).
  Gradients: the input gradient on the space-to-depth grid; the kernel gradient as
  shift GEMMs there too when the output has few channels, XLA's otherwise.
  """
  return _blocks_fwd(x, kernel)[0]


def _s2d_grad_kernel_on_s2d(kernel: jax.Array) -> bool:
  """Whether the kernel gradient is taken as s2d shift GEMMs (few output channels:
  there XLA's kernel-gradient conv is ~2x slower; from ~16 outputs it is faster)."""
  return kernel.shape[-1] <= S2D_CONV_MAX_CHANNELS


def _blocks_fwd(x, kernel):
  b, h, w, _ = x.shape
  xs = space_to_depth(x)
  ys = _conv_on_s2d(xs, s2d_kernel(kernel))
  return ys.reshape(b, h // 2, w // 2, 4, kernel.shape[-1]), (xs, kernel)


def _blocks_bwd(res, dy_blocks):
  xs, kernel = res
  b, h, w, _, o = dy_blocks.shape
  dys = dy_blocks.reshape(b, h, w, 4 * o)
  kernel_s2d = s2d_kernel(kernel)
  xs_shape = jax.ShapeDtypeStruct((b, h, w, 4 * kernel.shape[2]), dys.dtype)
  dxs = jax.linear_transpose(lambda v: _conv_on_s2d(v, kernel_s2d), xs_shape)(dys)[0]
  if _s2d_grad_kernel_on_s2d(kernel):
    dk = _kernel_grad_s2d_shift_gemm(xs, dys, kernel)
  else:  # x from the saved conv input, not recomputed from whatever produced it
    x = depth_to_space(xs)
    dk = jax.vjp(lambda v: conv_same(x, v), kernel)[1](depth_to_space(dys))[0]
  return depth_to_space(dxs).astype(xs.dtype), dk.astype(kernel.dtype)


conv_same_blocks.defvjp(_blocks_fwd, _blocks_bwd)


@jax.custom_vjp
def _conv_same_wide(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """:func:`conv_same` whose kernel gradient is :func:`_kernel_grad_shift_gemm`."""
  return conv_same(x, kernel)


def _wide_fwd(x, kernel):
  return conv_same(x, kernel), (x, kernel)


def _wide_bwd(res, dy):
  x, kernel = res
  dx = jax.vjp(lambda v: conv_same(v, kernel), x)[1](dy)[0]
  dk = _kernel_grad_shift_gemm(x, dy, kernel.shape[0])
  return dx.astype(x.dtype), dk.astype(kernel.dtype)


_conv_same_wide.defvjp(_wide_fwd, _wide_bwd)


def use_fast_conv(conv_impl: str) -> bool:
  """Whether :class:`ConvSame` uses :func:`conv_same_fast` ('auto': on CPU)."""
  if conv_impl not in CONV_IMPLS:
    raise ConfigError(f"conv_impl={conv_impl!r}: expected one of {CONV_IMPLS}")
  if conv_impl == "auto":
    return jax.default_backend() == "cpu"
  return conv_impl == "fast"


class ConvSame(nn.Module):
  """``nn.Conv(features, (k, k), padding='SAME')`` with the same parameters (names,
  shapes, initialisers), through :func:`conv_same_fast` where :func:`use_fast_conv`.

  ``blocks=True`` (for a following 2x2 pool): where the space-to-depth path applies,
  the output is :func:`conv_same_blocks`' ``[B, H/2, W/2, 4, O]``; else ``[B, H, W, O]``.
  """

  features: int
  kernel_size: int = 5
  use_bias: bool = True
  conv_impl: str = "auto"
  blocks: bool = False

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    k = self.kernel_size
    if k % 2 == 0:
      raise ConfigError(f"ConvSame: kernel_size={k} must be odd")
    kernel = self.param("kernel", nn.initializers.lecun_normal(),
                        (k, k, x.shape[-1], self.features)).astype(x.dtype)
    if not use_fast_conv(self.conv_impl):
      y = conv_same(x, kernel)
    elif self.blocks and _use_s2d(x, kernel):
      y = conv_same_blocks(x, kernel)
    else:
      y = conv_same_fast(x, kernel)
    if self.use_bias:
      y = y + self.param("bias", nn.initializers.zeros, (self.features,))
    return y
