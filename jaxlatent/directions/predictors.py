"""The reference shift predictors (GANLatentDiscovery ``latent_shift_predictor.py``).

``ReferenceLeNet`` is ``LeNetShiftPredictor`` (Schön et al. use it with ``channels=1``):
three unpadded 5x5 convs (3w, 8w, 60w channels) each with BatchNorm and ReLU, 2x2 max
pools after the first two, a spatial mean, and two heads Linear(60w, 42w) - BatchNorm -
ReLU - Linear(42w, K or 1).  ``ReferenceResNet`` is ``LatentShiftPredictor``: a
torchvision ResNet-18 whose first conv takes the 2C stacked channels, its 512 pooled
features feeding Linear(512, K) and Linear(512, 1).

BatchNorm is torch's: batch statistics in training (biased variance), running averages
with momentum 0.1 (unbiased variance) for evaluation, eps 1e-5.  The running averages
live in the ``batch_stats`` collection; ``train=True`` returns them updated when the
collection is mutable.  Initialisation follows torch's defaults (convs and linears
``U(+-1/sqrt(fan_in))``; ResNet convs Kaiming-normal fan-out, as torchvision).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxlatent.errors import ConfigError


def _torch_uniform(fan_in: int):
  """torch's default Linear/Conv init: ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``."""
  bound = 1.0 / np.sqrt(fan_in)

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


class TorchBatchNorm(nn.Module):
  """``torch.nn.BatchNorm{1,2}d`` over the last axis (momentum 0.1, eps 1e-5)."""

  momentum: float = 0.1
  epsilon: float = 1e-5

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    c = x.shape[-1]
    scale = self.param("scale", nn.initializers.ones, (c,))
    bias = self.param("bias", nn.initializers.zeros, (c,))
    mean_ra = self.variable("batch_stats", "mean", jnp.zeros, (c,), jnp.float32)
    var_ra = self.variable("batch_stats", "var", jnp.ones, (c,), jnp.float32)
    if train:
      axes = tuple(range(x.ndim - 1))
      n = int(np.prod([x.shape[a] for a in axes]))
      mean = x.mean(axis=axes)
      var = jnp.square(x - mean).mean(axis=axes)  # biased, used to normalise
      if not self.is_initializing() and self.is_mutable_collection("batch_stats"):
        m = self.momentum
        unbiased = var * (n / max(n - 1, 1))
        mean_ra.value = (1 - m) * mean_ra.value + m * jax.lax.stop_gradient(mean)
        var_ra.value = (1 - m) * var_ra.value + m * jax.lax.stop_gradient(unbiased)
    else:
      mean, var = mean_ra.value, var_ra.value
    return (x - mean) * jax.lax.rsqrt(var + self.epsilon) * scale + bias


class TorchLinear(nn.Module):
  """``torch.nn.Linear`` with its default initialisation."""

  features: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    init = _torch_uniform(x.shape[-1])
    return nn.Dense(self.features, kernel_init=init, bias_init=init, name="dense")(x)


class TorchConv(nn.Module):
  """``torch.nn.Conv2d`` (NHWC): explicit symmetric padding, torch's init by default."""

  features: int
  kernel: int
  strides: int = 1
  padding: int = 0
  use_bias: bool = True
  kaiming_fan_out: bool = False

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    fan_in = x.shape[-1] * self.kernel ** 2
    if self.kaiming_fan_out:  # torchvision ResNet: kaiming_normal_(mode='fan_out')
      k_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
    else:
      k_init = _torch_uniform(fan_in)
    p = self.padding
    return nn.Conv(self.features, (self.kernel, self.kernel), strides=self.strides,
                   padding=((p, p), (p, p)), use_bias=self.use_bias, kernel_init=k_init,
                   bias_init=_torch_uniform(fan_in), name="conv")(x)


def _max_pool(x, window, stride, pad=0):
  return nn.max_pool(x, (window, window), strides=(stride, stride),
                     padding=((pad, pad), (pad, pad)))


class ReferenceLeNet(nn.Module):
  """``LeNetShiftPredictor(dim=K, channels=C, width)``: ``[B, H, W, 2C]`` -> (logits, eps).

  Needs images of at least 32 px (three unpadded 5x5 convs and two pools).
  """

  num_directions: int
  width: int = 2

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = True) -> tuple[jax.Array, jax.Array]:
    if min(x.shape[1:3]) < 32:
      raise ConfigError(
          f"the reference LeNet reconstructor needs images of at least 32 px, got "
          f"{x.shape[1]}x{x.shape[2]}: use voynov.reconstructor='lenet_groupnorm' (padded "
          "convs) or 'mlp'")
    w = self.width
    for i, feat in enumerate((3 * w, 8 * w, 60 * w)):
      x = TorchConv(feat, 5, name=f"conv{i}")(x)
      x = nn.relu(TorchBatchNorm(name=f"bn{i}")(x, train))
      if i < 2:
        x = _max_pool(x, 2, 2)
    h = x.mean(axis=(1, 2))  # [B, 60w]

    def head(out, name):
      y = TorchLinear(42 * w, name=f"{name}_0")(h)
      y = nn.relu(TorchBatchNorm(name=f"{name}_bn")(y, train))
      return TorchLinear(out, name=f"{name}_1")(y)

    logits = head(self.num_directions, "fc_logits")
    eps = head(1, "fc_shift")[:, 0]
    return logits, eps


class _TorchBasicBlock(nn.Module):
  """torchvision ``BasicBlock`` (3x3 convs padded 1, 1x1 strided downsample)."""

  features: int
  strides: int = 1

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    y = TorchConv(self.features, 3, self.strides, 1, use_bias=False, kaiming_fan_out=True,
                  name="conv1")(x)
    y = nn.relu(TorchBatchNorm(name="bn1")(y, train))
    y = TorchConv(self.features, 3, 1, 1, use_bias=False, kaiming_fan_out=True,
                  name="conv2")(y)
    y = TorchBatchNorm(name="bn2")(y, train)
    if self.strides != 1 or x.shape[-1] != self.features:
      x = TorchConv(self.features, 1, self.strides, 0, use_bias=False, kaiming_fan_out=True,
                    name="downsample_conv")(x)
      x = TorchBatchNorm(name="downsample_bn")(x, train)
    return nn.relu(x + y)


class ReferenceResNet(nn.Module):
  """``LatentShiftPredictor(dim=K)``: ResNet-18 on ``[B, H, W, 2C]`` -> (logits, eps).

  ``width`` is the stem width (64 in ResNet-18); stages have width, 2x, 4x, 8x.
  """

  num_directions: int
  width: int = 64
  stage_blocks: tuple = (2, 2, 2, 2)

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = True) -> tuple[jax.Array, jax.Array]:
    x = TorchConv(self.width, 7, 2, 3, use_bias=False, kaiming_fan_out=True, name="conv1")(x)
    x = nn.relu(TorchBatchNorm(name="bn1")(x, train))
    x = _max_pool(x, 3, 2, 1)
    for i, blocks in enumerate(self.stage_blocks):
      for j in range(blocks):
        x = _TorchBasicBlock(self.width * 2 ** i, 2 if (i > 0 and j == 0) else 1,
                             name=f"layer{i + 1}_{j}")(x, train)
    h = x.mean(axis=(1, 2))  # adaptive average pool to 1x1
    logits = TorchLinear(self.num_directions, name="type_estimator")(h)
    eps = TorchLinear(1, name="shift_estimator")(h)[:, 0]
    return logits, eps
