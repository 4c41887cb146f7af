"""Odd-sized stride-1 'SAME' convs (the LeNet reconstructor's 5x5s) on XLA:CPU.

XLA:CPU runs a 5x5 conv with few channels far below its matmul speed (GEMMs with a
contraction of 25 C and only O outputs).  On the 2x2 space-to-depth input the same
conv is a 3x3 conv from 4C to 4O channels: more multiply-adds, but on 4x fatter
GEMMs, so it is faster forward and for the input gradient.  For wider inputs XLA's
forward and input gradient are fine but its kernel gradient is not; there GEMMs over
the input's k horizontal shifts, in cache-sized batch chunks, are faster, and the same
shift GEMMs on the space-to-depth grid serve convs with few outputs.
:class:`ConvSame` is the ``nn.Conv`` drop-in that picks the form.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxlatent.errors import ConfigError
from jaxlatent.ops.resample import blocks_to_image, depth_to_space, space_to_depth

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
# shifted copy, so that it is still in cache when its GEMMs read it.
SHIFT_GEMM_CHUNK_BYTES = 512 * 1024
# ... but each chunk's GEMMs get at least this many FLOPs: XLA:CPU splits every GEMM
# between its threads, and a GEMM too thin for that runs slower on two threads than on
# one (the reconstructor's first conv, with 24 x 24 outputs per row tap).
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
  """Images per batch chunk of :func:`kernel_grad_shift_gemm` for an input
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


def kernel_grad_shift_gemm(x: jax.Array, dy: jax.Array, k: int,
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


def kernel_grad_s2d_shift_gemm(xs: jax.Array, dys: jax.Array, kernel: jax.Array) -> jax.Array:
  """Kernel gradient of :func:`conv_same` through :func:`conv_same_s2d`, from the
  space-to-depth input ``xs`` and output gradient ``dys``: shift GEMMs for the n x n
  conv (n = 3 for k = 5), then back through :func:`s2d_kernel` (linear in the kernel)."""
  _, hi, _ = _s2d_taps(kernel.shape[0])
  dk_s2d = kernel_grad_shift_gemm(xs, dys, 2 * hi + 1)
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




@jax.custom_vjp
def conv_same_blocks(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """:func:`conv_same` of ``x [B, H, W, C]`` (H, W even, odd k) as 2x2 output blocks
  ``[B, H/2, W/2, 4, O]``: block member ``2i + j`` at ``(h, w)`` is output pixel
  ``(2h + i, 2w + j)``, the layout the space-to-depth conv produces.

  A following 2x2 max-pool (a maximum over axis 3, as in
  :func:`group_norm_relu_max_pool_blocks`) and any per-channel op
  (GroupNorm, ReLU) then need no depth-to-space copy; XLA:CPU fuses such a copy of a
  6-channel image into the elementwise passes around it, where it runs far slower
  than alone.
  Gradients: the input gradient on the space-to-depth grid; the kernel gradient as
  shift GEMMs there too when the output has few channels, XLA's otherwise.
  """
  return _blocks_fwd(x, kernel)[0]


def _s2d_grad_kernel_on_s2d(kernel: jax.Array) -> bool:
  """Whether the kernel gradient is taken as s2d shift GEMMs (few output channels:
  there XLA's kernel-gradient conv is slower; with more outputs it is faster)."""
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
    dk = kernel_grad_s2d_shift_gemm(xs, dys, kernel)
  else:  # x from the saved conv input, not recomputed from whatever produced it
    x = depth_to_space(xs)
    dk = jax.vjp(lambda v: conv_same(x, v), kernel)[1](depth_to_space(dys))[0]
  return depth_to_space(dxs).astype(xs.dtype), dk.astype(kernel.dtype)


conv_same_blocks.defvjp(_blocks_fwd, _blocks_bwd)


@jax.custom_vjp
def _conv_same_wide(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """:func:`conv_same` whose kernel gradient is :func:`kernel_grad_shift_gemm`."""
  return conv_same(x, kernel)


def _wide_fwd(x, kernel):
  return conv_same(x, kernel), (x, kernel)


def _wide_bwd(res, dy):
  x, kernel = res
  dx = jax.vjp(lambda v: conv_same(v, kernel), x)[1](dy)[0]
  dk = kernel_grad_shift_gemm(x, dy, kernel.shape[0])
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
