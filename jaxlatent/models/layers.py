"""Building blocks shared by the DCGAN and the VAE: resampling and channel schedules.

On XLA:CPU a ``ConvTranspose`` is several times slower than a plain conv (see
DESIGN.md, "Performance notes"), so the default up-sampling is *sub-pixel*:
a conv to ``4 * C`` channels followed by depth-to-space (the same FLOPs as a
4x4 stride-2 transposed conv with a 2x2 kernel), and the default down-sampling is
space-to-depth followed by a conv.  The other modes are kept for comparison.

Those 2x2 convs back-propagate through GEMMs on CPU (:func:`conv2x2_gemm_grad`):
XLA:CPU's own input- and kernel-gradient convolutions are slower than its forward
conv at these shapes (see benchmarks/RESULTS.md).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxlatent.errors import ConfigError

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


def _conv2x2(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """2x2 'SAME' conv, NHWC / HWIO, as ``nn.Conv`` pads it: 0 before, 1 after."""
  return jax.lax.conv_general_dilated(x, kernel, (1, 1), ((0, 1), (0, 1)),
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))


@jax.custom_vjp
def conv2x2_gemm_grad(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """:func:`_conv2x2` (XLA's forward conv) whose gradients are two GEMMs.

  With ``dP[b, h, w, (i, j), f] = dy[b, h - i, w - j, f]`` (zero outside), the kernel
  gradient is ``x^T dP`` (``[C, N] @ [N, 4F]``, N = B H W) and the input gradient
  ``dP W^T`` (``[N, 4F] @ [4F, C]``).  On XLA:CPU these run 10-25% faster than the
  autodiff convolutions (benchmarks/RESULTS.md); same values up to float rounding.
  """
  return _conv2x2(x, kernel)


def _conv2x2_fwd(x, kernel):
  return _conv2x2(x, kernel), (x, kernel)


def _conv2x2_bwd(res, dy):
  x, kernel = res
  b, h, w, c = x.shape
  f = kernel.shape[-1]
  dyp = jnp.pad(dy, ((0, 0), (1, 0), (1, 0), (0, 0)))
  taps = [dyp[:, 1 - i:1 - i + h, 1 - j:1 - j + w] for i in range(2) for j in range(2)]
  dp = jnp.stack(taps, axis=3).reshape(b * h * w, 4 * f)  # [N, (i, j, F)]
  dk = jnp.matmul(x.reshape(-1, c).T, dp, precision=jax.lax.Precision.HIGHEST)  # [C, 4F]
  dk = dk.reshape(c, 2, 2, f).transpose(1, 2, 0, 3)  # [2, 2, C, F]
  w_t = kernel.transpose(0, 1, 3, 2).reshape(4 * f, c)  # [(i, j, F), C]
  dx = jnp.matmul(dp, w_t, precision=jax.lax.Precision.HIGHEST).reshape(b, h, w, c)
  return dx.astype(x.dtype), dk.astype(kernel.dtype)


conv2x2_gemm_grad.defvjp(_conv2x2_fwd, _conv2x2_bwd)


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
  shapes, initialisers), back-propagating through GEMMs where :func:`use_gemm_grad`."""

  features: int
  use_bias: bool = True
  conv_grad: str = "auto"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    c = x.shape[-1]
    kernel = self.param("kernel", nn.initializers.lecun_normal(), (2, 2, c, self.features))
    conv = conv2x2_gemm_grad if use_gemm_grad(self.conv_grad, c) else _conv2x2
    y = conv(x, kernel.astype(x.dtype))
    if self.use_bias:
      y = y + self.param("bias", nn.initializers.zeros, (self.features,))
    return y


def _resample_conv(features: int, kernel_size: int, use_bias: bool, conv_grad: str):
  """The conv of 'subpixel' / 'space_to_depth' (named 'conv' in either form)."""
  if kernel_size == 2:
    return Conv2x2(features, use_bias=use_bias, conv_grad=conv_grad, name="conv")
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
  """

  features: int
  mode: str = "subpixel"
  kernel_size: int = 2
  use_bias: bool = True
  conv_grad: str = "auto"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    b, h, w, _ = x.shape
    if self.mode == "subpixel":
      x = _resample_conv(4 * self.features, self.kernel_size, self.use_bias,
                         self.conv_grad)(x)  # [B, H, W, 4F]
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
  """

  features: int
  mode: str = "space_to_depth"
  kernel_size: int = 2
  use_bias: bool = True
  conv_grad: str = "auto"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    if self.mode == "space_to_depth":
      x = space_to_depth(x, 2)  # [B, H/2, W/2, 4C]
      return _resample_conv(self.features, self.kernel_size, self.use_bias, self.conv_grad)(x)
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


def group_norm(features: int, name: str | None = None) -> nn.GroupNorm:
  """GroupNorm with up to 8 groups that divide ``features`` (batch-independent)."""
  groups = 1
  for g in (8, 4, 2):
    if features % g == 0:
      groups = g
      break
  return nn.GroupNorm(num_groups=groups, name=name)


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
