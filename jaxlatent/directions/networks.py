"""Deformators and reconstructors of Voynov & Babenko (ICML 2020), in Flax Linen.

A deformator A maps a scaled one-hot code ``eps * e_k`` (``[B, K]``) to a latent shift
(``[B, D]``, D = flattened latent size). A reconstructor R sees the image pair
``(G(z), G(z + A(eps e_k)))`` stacked as channels and predicts ``k`` (logits) and ``eps``.

Defaults follow the reference PyTorch code (GANLatentDiscovery ``latent_deformator.py``):
``linear`` / ``proj`` are ``nn.Linear(K, D)`` with a bias, started at ``0.1 * randn``
(random_init) or the identity block; ``proj`` rescales ``A(x)`` to the norm of ``x``;
``ortho`` is ``expm(S - S^T)``.  Kept as options: ``bias=False`` with
``init="scaled"`` (``randn / sqrt(D)``), where a direction is exactly a column of A.
The reference shift predictors are in :mod:`jaxlatent.directions.predictors`
("lenet", "resnet"); the GroupNorm variants here ("lenet_groupnorm",
"resnet_groupnorm": padded convs, one Dense head each, no batch statistics) and
"mlp" are options.  Remaining difference: the "fc" deformator uses LayerNorm where
the reference has BatchNorm.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.scipy.linalg import expm

from jaxlatent.directions import predictors
from jaxlatent.errors import ConfigError
from jaxlatent.ops import conv_same, norm
from jaxlatent.ops.pool import GroupNormReluMaxPool, max_pool_2x2

DEFORMATOR_KINDS = ("id", "linear", "proj", "ortho", "fc", "random")
DEFORMATOR_INITS = ("reference", "scaled")
RECONSTRUCTOR_KINDS = ("lenet", "resnet", "mlp", "lenet_groupnorm", "resnet_groupnorm")


def check_deformator(kind: str, num_directions: int, latent_size: int) -> None:
  """Raises ConfigError for an unknown kind or K > D with a kind that cannot have it."""
  if kind not in DEFORMATOR_KINDS:
    raise ConfigError(
        f"deformator {kind!r} is not one of {', '.join(DEFORMATOR_KINDS)}")
  if kind in ("id", "ortho") and num_directions > latent_size:
    raise ConfigError(
        f"deformator {kind!r} gives at most latent size D={latent_size} directions, "
        f"got num_directions K={num_directions}: use 'proj' or 'linear' (or 'fc') "
        "for more directions than latent dimensions")


class Deformator(nn.Module):
  """Direction model A: ``[B, K]`` codes (``eps * e_k``) -> ``[B, D]`` latent shifts.

  Attributes:
    kind: "id" (A = I, first K axes), "linear" (free matrix), "proj" (unit-norm
      columns), "ortho" (first K columns of expm(S), S skew-symmetric), "fc"
      (residual MLP), "random" (fixed random orthonormal/unit columns, not trained).
    num_directions: K.
    latent_size: D, the flattened latent size.
    inner_dim: hidden width of the "fc" kind.
    random_init: random (True) or identity-like (False) start, as in the reference.
    bias: "linear" / "proj" add a bias ``b [D]`` (the reference's ``nn.Linear``).
    init_scheme: "reference" (random start ``0.1 * randn``; identity start: the identity
      block, zeros beyond) or "scaled" (``randn / sqrt(D)``; identity start with
      random unit columns beyond D).
  """

  kind: str
  num_directions: int
  latent_size: int
  inner_dim: int = 1024
  random_init: bool = True
  bias: bool = True
  init_scheme: str = "reference"

  def _matrix_init(self, key, shape):
    d, k = shape
    if self.init_scheme not in DEFORMATOR_INITS:
      raise ConfigError(
          f"deformator init_scheme {self.init_scheme!r} is not one of "
          f"{', '.join(DEFORMATOR_INITS)}")
    if self.init_scheme == "reference":
      if self.random_init:
        return 0.1 * jax.random.normal(key, shape, jnp.float32)
      return jnp.eye(d, k, dtype=jnp.float32)
    if self.random_init:
      return jax.random.normal(key, shape, jnp.float32) / jnp.sqrt(d)
    eye = jnp.eye(d, k, dtype=jnp.float32)
    if k > d:  # identity block, random unit columns beyond D (zeros would be undefined for proj)
      extra = jax.random.normal(key, (d, k - d), jnp.float32) / jnp.sqrt(d)
      eye = eye.at[:, d:].set(extra)
    return eye

  def _bias_init(self, key, shape):
    bound = 1.0 / jnp.sqrt(self.num_directions)  # torch nn.Linear: U(+-1/sqrt(fan_in))
    return jax.random.uniform(key, shape, jnp.float32, -bound, bound)

  def matrix(self) -> jax.Array | None:
    """``[D, K]`` matrix of the bias-free linear kinds (None for "fc", "linear", "proj")."""
    d, k = self.latent_size, self.num_directions
    check_deformator(self.kind, k, d)
    if self.kind == "id":
      return jnp.eye(d, k, dtype=jnp.float32)
    if self.kind in ("linear", "proj"):
      return None
    if self.kind == "ortho":
      scale = 1.0 if self.random_init else 1e-3
      m = self.param("log_mat_half", lambda key, s: scale * jax.random.normal(key, s), (d, d))
      return expm(m - m.T)[:, :k]  # [D, K], orthonormal columns
    if self.kind == "random":
      def init(key, shape):
        if k <= d:
          return jax.nn.initializers.orthogonal()(key, shape, jnp.float32)
        a = jax.random.normal(key, shape, jnp.float32)
        return a / jnp.linalg.norm(a, axis=0, keepdims=True)
      return jax.lax.stop_gradient(self.param("A", init, (d, k)))
    return None

  @nn.compact
  def __call__(self, codes: jax.Array) -> jax.Array:
    # codes: [B, K] -> shifts: [B, D]
    a = self.matrix()
    if a is not None:
      return codes @ a.T
    if self.kind in ("linear", "proj"):
      d, k = self.latent_size, self.num_directions
      out = codes @ self.param("A", self._matrix_init, (d, k)).T  # A: [D, K]
      if self.bias:
        out = out + self.param("b", self._bias_init, (d,))
      if self.kind == "proj":  # the reference: A(x) rescaled to |x|
        in_norm = jnp.linalg.norm(codes, axis=1, keepdims=True)
        out_norm = jnp.linalg.norm(out, axis=1, keepdims=True)
        out = out * (in_norm / jnp.where(out_norm > 0, out_norm, 1.0))
      return out
    # "fc": residual MLP as in the reference (LayerNorm in place of BatchNorm).
    x1 = nn.Dense(self.inner_dim)(codes)
    x = nn.elu(nn.LayerNorm()(x1))
    x2 = nn.Dense(self.inner_dim)(x)
    x = nn.elu(nn.LayerNorm()(x2 + x1))
    x3 = nn.Dense(self.inner_dim)(x)
    x = nn.elu(nn.LayerNorm()(x3 + x2 + x1))
    out = nn.Dense(self.latent_size)(x)
    k, d = self.num_directions, self.latent_size
    skip = codes[:, :d] if k >= d else jnp.pad(codes, ((0, 0), (0, d - k)))
    return out + skip


def _groups(features: int) -> int:
  for g in (32, 16, 8, 4, 2):
    if features % g == 0 and features // g >= 2:
      return g
  return 1


def _norm(features: int, name: str | None = None) -> nn.Module:
  return norm.GroupNorm(num_groups=_groups(features), name=name)


class LeNetReconstructor(nn.Module):
  """LeNet-like reconstructor, GroupNorm variant ("lenet_groupnorm"; the reference's is
  :class:`~jaxlatent.directions.predictors.ReferenceLeNet`).

  Three 5x5 convs of widths 3w, 8w, 60w with pooling, global mean, two heads.
  Input ``[B, H, W, 2C]`` -> (logits ``[B, K]``, eps ``[B]``).  Unlike the reference
  (unpadded convs, BatchNorm), the convs are 'same'-padded, so images down to 16 px
  work, and normalised by GroupNorm, so the step needs no batch statistics; at 64 px
  that is ~2.4x the reference's conv FLOPs.
  """

  num_directions: int
  width: int = 2
  conv_impl: str = "auto"  # conv_same.CONV_IMPLS; 'auto': the faster formulation on CPU

  @nn.compact
  def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    for i, feat in enumerate((3 * self.width, 8 * self.width, 60 * self.width)):
      pool = i < 2 and x.shape[1] >= 2 and x.shape[2] >= 2
      # With pooling next, the conv may return 2x2 blocks [B, H/2, W/2, 4, F]: the
      # pool is a max over the blocks, and the norm and ReLU, per channel and
      # monotone, run after it on the pooled array.
      x = conv_same.ConvSame(feat, 5, conv_impl=self.conv_impl, blocks=pool,
                          name=f"Conv_{i}")(x)
      if x.ndim == 5:  # norm, ReLU and pool in one, on the blocks
        x = GroupNormReluMaxPool(_groups(feat), name=f"GroupNorm_{i}")(x)
        continue
      x = nn.relu(_norm(feat, name=f"GroupNorm_{i}")(x))
      if pool:
        x = max_pool_2x2(x)
    h = x.mean(axis=(1, 2))  # [B, 60w]
    logits = nn.Dense(self.num_directions, name="logits")(h)
    eps = nn.Dense(1, name="shift")(h)[:, 0]
    return logits, eps


class _BasicBlock(nn.Module):
  features: int
  strides: int = 1

  @nn.compact
  def __call__(self, x):
    y = nn.Conv(self.features, (3, 3), strides=self.strides, padding="SAME", use_bias=False)(x)
    y = nn.relu(_norm(self.features)(y))
    y = nn.Conv(self.features, (3, 3), padding="SAME", use_bias=False)(y)
    y = _norm(self.features)(y)
    if x.shape[-1] != self.features or self.strides != 1:
      x = nn.Conv(self.features, (1, 1), strides=self.strides, use_bias=False)(x)
      x = _norm(self.features)(x)
    return nn.relu(x + y)


class ResNetReconstructor(nn.Module):
  """ResNet reconstructor, GroupNorm variant ("resnet_groupnorm"; the reference's
  ResNet-18 is :class:`~jaxlatent.directions.predictors.ReferenceResNet`).

  ``width`` is the stem width (64 in ResNet-18); ``stage_blocks`` the blocks per stage.
  """

  num_directions: int
  width: int = 64
  stage_blocks: Sequence[int] = (2, 2, 2, 2)

  @nn.compact
  def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    x = nn.Conv(self.width, (7, 7), strides=2 if x.shape[1] >= 64 else 1, padding="SAME",
                use_bias=False)(x)
    x = nn.relu(_norm(self.width)(x))
    if x.shape[1] >= 32:
      x = nn.max_pool(x, (3, 3), strides=(2, 2), padding="SAME")
    for i, blocks in enumerate(self.stage_blocks):
      for j in range(blocks):
        strides = 2 if (i > 0 and j == 0 and x.shape[1] >= 2) else 1
        x = _BasicBlock(self.width * 2**i, strides)(x)
    h = x.mean(axis=(1, 2))
    logits = nn.Dense(self.num_directions, name="logits")(h)
    eps = nn.Dense(1, name="shift")(h)[:, 0]
    return logits, eps


class MLPReconstructor(nn.Module):
  """Two hidden layers on the flattened pair: a cheap reconstructor for tiny images."""

  num_directions: int
  width: int = 256

  @nn.compact
  def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    h = x.reshape(x.shape[0], -1)  # [B, H*W*2C]
    for _ in range(2):
      h = nn.relu(nn.LayerNorm()(nn.Dense(self.width)(h)))
    logits = nn.Dense(self.num_directions, name="logits")(h)
    eps = nn.Dense(1, name="shift")(h)[:, 0]
    return logits, eps


def make_reconstructor(kind: str, num_directions: int, width: int | None = None) -> nn.Module:
  """Builds a reconstructor by name.

  "lenet" / "resnet": the reference's ``LeNetShiftPredictor`` / ``LatentShiftPredictor``
  (BatchNorm; :mod:`~jaxlatent.directions.predictors`); "lenet_groupnorm" /
  "resnet_groupnorm": padded GroupNorm variants with one Dense head (no batch
  statistics, images down to 16 px); "mlp": for tiny images.
  """
  if kind == "lenet":
    return predictors.ReferenceLeNet(num_directions, width or 2)
  if kind == "resnet":
    return predictors.ReferenceResNet(num_directions, width or 64)
  if kind == "lenet_groupnorm":
    return LeNetReconstructor(num_directions, width or 2)
  if kind == "resnet_groupnorm":
    return ResNetReconstructor(num_directions, width or 64)
  if kind == "mlp":
    return MLPReconstructor(num_directions, width or 256)
  raise ConfigError(
      f"reconstructor {kind!r} is not one of {', '.join(RECONSTRUCTOR_KINDS)}")
