"""Model building blocks: resampling layers, channel schedules and config checks.

The default up-sampling is *sub-pixel* (a conv to ``4 * C`` channels, then
depth-to-space: the FLOPs of a 4x4 stride-2 transposed conv with a 2x2 kernel, which
XLA:CPU runs several times slower) and the default down-sampling is space-to-depth
followed by a conv; the other modes are kept for comparison.  The 2x2 convs are
:class:`jaxlatent.ops.conv2x2.Conv2x2`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax

from jaxlatent.errors import ConfigError
from jaxlatent.ops import norm
from jaxlatent.ops.conv2x2 import Conv2x2
from jaxlatent.ops.resample import depth_to_space, space_to_depth

UPSAMPLE_MODES = ("subpixel", "resize", "transpose")
DOWNSAMPLE_MODES = ("space_to_depth", "strided", "avgpool")


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
