"""2x2 max-pooling with a one-pass backward, and GroupNorm -> ReLU -> pool fused.

XLA's select-and-scatter (the gradient of ``nn.max_pool``) is slow on CPU; here the
forward stores each window's argmax and the backward is one elementwise pass.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxlatent.ops import norm


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
  (or a reduce's tie counting) takes several times longer.
  """
  return _max_pool_2x2_argmax(x)[0]


def _max_pool_fwd(x):
  m, idx = _max_pool_2x2_argmax(x)
  return m, (idx, x.shape)


def _max_pool_bwd(res, g):
  idx, shape = res
  b, h, w, c = shape
  # One elementwise pass over [B, h, 2, w, 2, C] (a free reshape of the input's
  # shape): window position 2i + j takes g where it held the maximum, without the
  # four masked copies a stack would write.
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
  autodiff.  The backward pass is then one pass over the blocks instead of the norm
  recomputed in four.  Same values and gradients up to float rounding.
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
